"""Standing up guests on a :class:`~gvt_core.device.gvt.Gvt` host, for the suites.

The scenario, hostile-guest, execution, display and scanner-fuzz suites (and
the core's own device and display tests) all open a host that must launch
guests, bring a guest's vGPU up to decode its BAR, drive it through BAR0, and
tear their guests down in the same order; each of those steps is written once
here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest

from gvt_core.device.gvt import Gvt
from gvt_core.device.vgpu import Vgpu
from gvt_core.guest.port import GuestPort, GuestVm
from gvt_core.hw import regs
from gvt_core.testing.threads import wait_until


@contextmanager
def guest_host(backend: str, backend_options: dict[str, Any], **open_args: Any) -> Iterator[Gvt]:
    """A host on ``backend``, closed on exit; the test is skipped when the
    backend cannot launch guests (``can_create_vm=False``)."""
    gvt = Gvt.open(backend, **open_args, **backend_options)
    if not gvt.mpt.caps.can_create_vm:
        gvt.close()
        pytest.skip(f"backend {backend!r} does not launch guests (can_create_vm=False)")
    try:
        yield gvt
    finally:
        gvt.close()


def release_guests(host: Gvt, vms: Iterable[GuestVm]) -> None:
    """A guest factory's teardown: every vGPU of ``host`` destroyed first (so no
    vGPU outlives its guest), then ``vms`` closed."""
    for vgpu in list(host.vgpus.values()):
        host.destroy_vgpu(vgpu)
    for vm in vms:
        vm.close()


def wait_faults(vgpu: Vgpu, count: int, timeout: float = 30.0) -> list[Any]:
    """Host side: the vGPU's execution faults once it recorded ``count`` of them. Read
    under the vGPU lock: the GPU thread records a fault, hangs the engine and enters
    failsafe in one hold of it, so what the caller checks next is already there."""

    def snapshot() -> list[Any]:
        with vgpu.lock:
            return list(vgpu.execution.faults)

    if not wait_until(lambda: len(snapshot()) >= count, timeout, step=0.005):
        raise AssertionError(f"vGPU {vgpu.id} recorded no fault {count} in {timeout} s; "
                             f"stats {vgpu.execution.stats}")
    return snapshot()


def enable_decoding(port: GuestPort) -> int:
    """Turn the vGPU's memory decoding and bus mastering on, as a guest's PCI
    core does; returns BAR0's guest-physical base."""
    port.cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY | regs.PCI_COMMAND_MASTER, 2)
    return (port.cfg_read(regs.PCI_BASE_ADDRESS_0, 4) & ~0xF) | (
        port.cfg_read(regs.PCI_BASE_ADDRESS_1, 4) << 32)


@attrs.define(eq=False)
class BarGuest:
    """A guest's vGPU driven the way its driver would: through BAR0 on its port.

    The core's device and display tests extend it with what they check."""

    gvt: Gvt
    vm: Any
    vgpu: Vgpu
    port: Any
    bar0: int

    def r(self, offset: int, size: int = 4) -> int:
        return self.port.mmio_read(self.bar0 + offset, size)

    def w(self, offset: int, value: int, size: int = 4) -> None:
        self.port.mmio_write(self.bar0 + offset, value, size)

    def enable_msi(self, address: int = 0xFEE0_0000, data: int = 0x4041) -> None:
        """Program and enable the vGPU's MSI capability, as the guest's PCI core does."""
        cap = regs.MSI_CAP_OFFSET
        self.port.cfg_write(cap + regs.PCI_MSI_ADDRESS_LO, address, 4)
        self.port.cfg_write(cap + regs.PCI_MSI_DATA_32, data, 2)
        self.port.cfg_write(cap + regs.PCI_MSI_FLAGS, regs.PCI_MSI_FLAGS_ENABLE, 2)
