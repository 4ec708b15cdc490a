"""Fixtures of the kvmgt tests: a host with recording core ops and KVM guests.

Tests that need /dev/kvm use the ``kvm`` fixture (directly or through the
others) and are skipped, with the reason, where KVM is not usable.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from gvt_core.hw.sysmem import SystemMemory
from gvt_core.mpt.ops import HostContext
from gvt_core.testing.plugin import VgpuToken
from gvt_core.testing.recording import RecordingOps
from gvt_kvmgt import KvmgtBackend, KvmgtHandle, probe
from gvt_kvmgt.vm import KvmGuestVm

MEM = 16 << 20


@pytest.fixture(scope="session")
def kvm() -> None:
    reason = probe()
    if reason:
        pytest.skip(f"KVM is not usable here: {reason}")


@pytest.fixture(scope="session")
def gcc() -> str:
    path = shutil.which("gcc")
    if path is None:
        pytest.skip("gcc is not installed")
    return path


@pytest.fixture
def backend(kvm: None) -> Iterator[KvmgtBackend]:
    b = KvmgtBackend()
    yield b
    if b.host is not None:
        b.host_exit(b.host)


@pytest.fixture
def ops() -> RecordingOps:
    return RecordingOps()


@pytest.fixture
def host(backend: KvmgtBackend, ops: RecordingOps) -> HostContext:
    ctx = HostContext(ops=ops, sysmem=SystemMemory(), name="kvmgt-test")
    backend.host_init(ctx)
    return ctx


@pytest.fixture
def vm(backend: KvmgtBackend, host: HostContext) -> Iterator[KvmGuestVm]:
    guest = backend.create_vm_with(host, MEM, "kvmgt-test", vcpus=1)
    yield guest
    guest.close()


@pytest.fixture
def handle(backend: KvmgtBackend, vm: KvmGuestVm) -> KvmgtHandle:
    return backend.attach_vgpu(VgpuToken(id=1), vm)
