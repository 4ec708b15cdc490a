"""Standing up guests on a :class:`~gvt_core.device.gvt.Gvt` host, for the suites.

The scenario, hostile-guest, execution, display and scanner-fuzz suites (and
the core's own device tests) all open a host that must launch guests, bring a
guest's vGPU up to decode its BAR, and tear their guests down in the same
order; each of those steps is written once here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from gvt_core.device.gvt import Gvt
from gvt_core.guest.port import GuestPort, GuestVm
from gvt_core.hw import regs


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


def enable_decoding(port: GuestPort) -> int:
    """Turn the vGPU's memory decoding and bus mastering on, as a guest's PCI
    core does; returns BAR0's guest-physical base."""
    port.cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY | regs.PCI_COMMAND_MASTER, 2)
    return (port.cfg_read(regs.PCI_BASE_ADDRESS_0, 4) & ~0xF) | (
        port.cfg_read(regs.PCI_BASE_ADDRESS_1, 4) << 32)
