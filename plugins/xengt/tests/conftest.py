"""Fixtures of the xengt tests: an emulated machine, a hand-driven device model,
and the backend on recording core ops.

The emulated Xen is reached only through its transport, with the backend's
own ABI wrappers (:class:`~gvt_xengt.privcmd.Privcmd`,
:class:`~gvt_xengt.dmop.DeviceModelOps`,
:class:`~gvt_xengt.evtchn.EventChannels`): what a test sees is what the
backend would see on the same calls.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import pytest

from gvt_core.errors import HypervisorCallError
from gvt_core.hw.sysmem import SystemMemory
from gvt_core.mpt.ops import HostContext
from gvt_core.testing.plugin import VgpuToken
from gvt_core.testing.recording import RecordingOps
from gvt_xengt import XengtBackend, XengtHandle, abi
from gvt_xengt.dmop import DeviceModelOps
from gvt_xengt.domain import XenDomain
from gvt_xengt.emulated import EmulatedTransport, EmulatedXen
from gvt_xengt.emulated.domain import HvmDomain
from gvt_xengt.evtchn import EventChannels
from gvt_xengt.privcmd import Privcmd

MEM = 16 << 20


def _errno_of(call: object, *args: object) -> int:
    """The errno a call into Xen failed with (0 if it succeeded)."""
    try:
        call(*args)  # type: ignore[operator]
    except HypervisorCallError as exc:
        return exc.errno
    except OSError as exc:
        return exc.errno or 0
    return 0


class HandDeviceModel:
    """A device model driven step by step by a test: one ioreq server on one domain."""

    def __init__(self, transport: EmulatedTransport, domain: HvmDomain) -> None:
        self.domain = domain
        self.privcmd = Privcmd(transport)
        self.privcmd.restrict(domain.domid)
        self.dm = DeviceModelOps(self.privcmd, domain.domid)
        self.server = self.dm.create_ioreq_server()
        self.region = self.privcmd.map_resource(
            domain.domid, abi.XENMEM_resource_ioreq_server, self.server,
            abi.XENMEM_resource_ioreq_server_frame_ioreq(0), 1,
        )
        self.page = memoryview(self.region)
        self.dm.set_ioreq_server_state(self.server, True)
        self.evtchn = EventChannels(transport)
        self.ports = [
            self.evtchn.bind_interdomain(domain.domid, self.vp_eport(v))
            for v in range(domain.max_vcpus)
        ]

    def vp_eport(self, vcpu: int) -> int:
        return int.from_bytes(self.slot(vcpu)[24:28], "little")

    def slot(self, vcpu: int) -> memoryview:
        return self.page[vcpu * abi.IOREQ_SIZE : (vcpu + 1) * abi.IOREQ_SIZE]

    def request(self, vcpu: int) -> abi.ioreq:
        return abi.ioreq.from_buffer_copy(self.slot(vcpu))

    def set_state(self, vcpu: int, state: int, notify: bool = True) -> None:
        s = self.slot(vcpu)
        s[abi.IOREQ_FLAGS_BYTE] = (s[abi.IOREQ_FLAGS_BYTE] & ~abi.IOREQ_STATE_MASK) | state
        if notify:
            self.evtchn.notify(self.ports[vcpu])

    def answer(self, vcpu: int, data: int) -> None:
        self.slot(vcpu)[8:16] = data.to_bytes(8, "little")
        self.set_state(vcpu, abi.STATE_IORESP_READY)

    def wait_pending(self, timeout: float = 5.0) -> list[int]:
        import select
        import time

        poller = select.poll()
        poller.register(self.evtchn.pollable(), select.POLLIN)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            poller.poll(50)
            ports = self.evtchn.pending()
            if ports:
                self.evtchn.unmask(ports)
                return ports
        return []

    def close(self) -> None:
        self.page.release()
        self.region.close()
        self.evtchn.close()
        self.privcmd.close()


def _raw_dm_op(transport: EmulatedTransport, fd: int, domid: int, payload: bytes | None,
              bufs: int = 1, size: int | None = None, uptr: int | None = None) -> int:
    """An IOCTL_PRIVCMD_DM_OP with hand-made buffers; returns the errno (0 = success)."""
    keep = ctypes.create_string_buffer(payload or b"\0", max(len(payload or b""), 1))
    arr = (abi.privcmd_dm_op_buf * max(bufs, 1))()
    for i in range(bufs):
        arr[i].uptr = ctypes.addressof(keep) if uptr is None else uptr
        arr[i].size = len(payload or b"") if size is None else size
    arg = abi.privcmd_dm_op(dom=domid, num=bufs, ubufs=ctypes.addressof(arr))
    try:
        transport.ioctl(fd, abi.IOCTL_PRIVCMD_DM_OP, arg)
    except OSError as exc:
        return exc.errno or 0
    return 0


@pytest.fixture
def xen() -> Iterator[EmulatedXen]:
    machine = EmulatedXen()
    yield machine
    machine.close()


@pytest.fixture
def transport(xen: EmulatedXen) -> EmulatedTransport:
    return EmulatedTransport(xen)


@pytest.fixture
def domain(xen: EmulatedXen) -> HvmDomain:
    return xen.create_domain(MEM, vcpus=2, name="strict")


@pytest.fixture
def model(transport: EmulatedTransport, domain: HvmDomain) -> Iterator[HandDeviceModel]:
    dm = HandDeviceModel(transport, domain)
    yield dm
    dm.close()


@pytest.fixture
def backend() -> Iterator[XengtBackend]:
    b = XengtBackend(hypervisor="emulated", vcpus=2)
    yield b
    if b.host is not None:
        b.host_exit(b.host)


@pytest.fixture
def ops() -> RecordingOps:
    return RecordingOps()


@pytest.fixture
def host(backend: XengtBackend, ops: RecordingOps) -> HostContext:
    ctx = HostContext(ops=ops, sysmem=SystemMemory(), name="xengt-test")
    backend.host_init(ctx)
    return ctx


@pytest.fixture
def vm(backend: XengtBackend, host: HostContext) -> Iterator[XenDomain]:
    guest = backend.create_vm(host, MEM, "xengt-test")
    yield guest
    guest.close()


@pytest.fixture
def handle(backend: XengtBackend, vm: XenDomain) -> XengtHandle:
    return backend.attach_vgpu(VgpuToken(id=1), vm)


@pytest.fixture
def errno_of() -> object:
    """``errno_of(call, *args)``: the errno a call into Xen failed with, 0 on success."""
    return _errno_of


@pytest.fixture
def raw_dm_op() -> object:
    """``raw_dm_op(transport, fd, domid, payload, bufs=1, size=None, uptr=None)``: an
    IOCTL_PRIVCMD_DM_OP with hand-made buffers; returns the errno (0 = success)."""
    return _raw_dm_op
