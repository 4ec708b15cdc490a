"""The guest's side of a vGPU, the same on every backend.

A ``GuestPort`` performs accesses *as the guest CPU would*: on sim they are
calls into the simulated hypervisor, on kvmgt real instructions executed on a
vCPU (every trap a real KVM exit), on xengt/acrngt ioreqs sent by the
hypervisor double. The guest-driver model and the scenario suite only ever
talk to a vGPU through this protocol, which is what lets them run unchanged
across backends.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs

from gvt_core.mpt.ops import Msi

#: where the vGPU sits on the guest's PCI bus: 00:02.0, as on real Intel parts.
VGPU_BUS = 0
VGPU_DEVICE = 2
VGPU_FUNCTION = 0

#: bytes of PCI (express) configuration space a config access can reach.
CFG_SPACE_SIZE = 4096
#: widths of a config access (x86 ``in``/``out`` at 0xCFC..0xCFF).
CFG_ACCESS_SIZES = (1, 2, 4)
#: widths of a CPU load or store.
CPU_ACCESS_SIZES = (1, 2, 4, 8)
#: guest-physical addresses a port reaches: [0, 512 GiB) (39 address bits).
GUEST_PHYS_LIMIT = 1 << 39
#: MSIs a guest holds undelivered: identical messages coalesce (an MSI is an edge
#: on a pending condition, as the LAPIC's IRR holds one bit per vector, not a
#: log), and at most this many distinct ones wait; more are dropped and counted.
MAX_PENDING_MSIS = 256


def _fits(value: int, size: int) -> bool:
    return type(value) is int and 0 <= value < 1 << (8 * size)


def check_cfg_access(offset: int, size: int, value: int | None = None) -> None:
    """The argument contract of :meth:`GuestPort.cfg_read` / ``cfg_write``, shared
    by every port so they refuse the same calls. ``ValueError`` says which."""
    if type(size) is not int or size not in CFG_ACCESS_SIZES:
        raise ValueError(f"a config access is 1, 2 or 4 bytes, not {size!r}")
    if type(offset) is not int or not 0 <= offset <= CFG_SPACE_SIZE - size:
        raise ValueError(f"config offset {offset!r} is outside the {CFG_SPACE_SIZE}-byte space")
    if (offset & 3) + size > 4:
        raise ValueError(
            f"a config access of {size} bytes at {offset:#x} crosses a dword: "
            "the data port 0xCFC reaches one dword at a time"
        )
    if value is not None and not _fits(value, size):
        raise ValueError(f"value {value!r} does not fit a {size}-byte config write")


def check_cpu_access(gpa: int, size: int, value: int | None = None) -> None:
    """The argument contract of :meth:`GuestPort.mmio_read` / ``mmio_write`` /
    ``store``: a width the CPU has, an address in the guest-physical space and a
    value that fits the width. ``ValueError`` says which."""
    if type(size) is not int or size not in CPU_ACCESS_SIZES:
        raise ValueError(f"a CPU load or store is 1, 2, 4 or 8 bytes, not {size!r}")
    if type(gpa) is not int or not 0 <= gpa <= GUEST_PHYS_LIMIT - size:
        raise ValueError(
            f"guest-physical address {gpa!r} is outside [0, {GUEST_PHYS_LIMIT:#x})"
        )
    if value is not None and not _fits(value, size):
        raise ValueError(f"value {value!r} does not fit a {size}-byte store")


@runtime_checkable
class GuestPort(Protocol):
    """Guest CPU accesses to its vGPU and memory. Sizes are in bytes.

    Every port refuses the same malformed calls with ``ValueError`` (see
    :func:`check_cfg_access`, :func:`check_cpu_access`): a width the CPU does
    not have, an address outside config space or the guest-physical space, a
    value wider than the access, a negative length. RAM accesses outside RAM
    raise :class:`~gvt_core.errors.GuestMemoryError`. Loads from addresses
    nothing decodes read all ones; stores there are dropped.
    """

    #: guest RAM size in bytes; RAM is [0, mem_size).
    mem_size: int

    def cfg_read(self, offset: int, size: int) -> int:
        """Read the vGPU's config space at 00:02.0 (``size`` 1, 2 or 4)."""
        ...

    def cfg_write(self, offset: int, value: int, size: int) -> None:
        """Write the vGPU's config space at 00:02.0."""
        ...

    def mmio_read(self, gpa: int, size: int) -> int:
        """One load of ``size`` (1, 2, 4 or 8) bytes from guest-physical ``gpa``."""
        ...

    def mmio_write(self, gpa: int, value: int, size: int) -> None:
        """One store of ``size`` (1, 2, 4 or 8) bytes to guest-physical ``gpa``."""
        ...

    def mem_read(self, gpa: int, length: int) -> bytes:
        """Read guest RAM (no side effects)."""
        ...

    def store(self, gpa: int, value: int, size: int) -> None:
        """One guest CPU store of ``size`` bytes to RAM; traps if the page is tracked."""
        ...

    def mem_write(self, gpa: int, data: bytes) -> None:
        """Guest CPU stores of ``data``, as naturally aligned 8-byte stores where
        possible; each store to a tracked page traps like :meth:`store`."""
        ...

    def wait_msi(self, timeout: float) -> Msi | None:
        """The next MSI delivered to the guest, waiting up to ``timeout`` seconds
        (a negative timeout is 0); None when none arrived. Identical MSIs sent
        while one is still undelivered coalesce; at most
        :data:`MAX_PENDING_MSIS` distinct ones are held."""
        ...


@attrs.frozen
class HeldResources:
    """Backend resources held for one guest's vGPU; all zero after ``detach_vgpu``."""

    page_tracks: int = 0
    dma_maps: int = 0
    dma_pins: int = 0
    trap_areas: int = 0
    gfn_maps: int = 0
    pvmmio_maps: int = 0
    #: guest pages the backend holds pinned in host memory for DMA (counted against
    #: the VM's pin quota, ``Capabilities.pin_quota``); 0 where nothing is pinned.
    pinned_pages: int = 0

    @property
    def total(self) -> int:
        return (
            self.page_tracks + self.dma_maps + self.dma_pins
            + self.trap_areas + self.gfn_maps + self.pvmmio_maps + self.pinned_pages
        )


@runtime_checkable
class GuestVm(Protocol):
    """A guest launched by a backend's ``create_vm`` hook.

    The core passes it to ``attach_vgpu``; once a vGPU is attached,
    :meth:`port` gives the guest's view of it.
    """

    #: the backend's identifier for the VM (domain id, VM fd number, ...).
    vm_id: int
    #: guest RAM in bytes.
    mem_size: int

    def held(self) -> HeldResources:
        """What the backend currently holds for this VM's vGPU (for leak checks)."""
        ...

    def port(self) -> GuestPort:
        """The guest CPU's accesses; raises :class:`gvt_core.errors.VgpuStateError`
        before a vGPU is attached."""
        ...

    def close(self) -> None:
        """Tear the VM down; every resource it held is released."""
        ...

    def wait_ended(self, timeout: float) -> bool:
        """Block until the guest has ended (it shut down, its domain died, or
        :meth:`close` was called) or ``timeout`` seconds passed; True once it ended.
        ``gvt serve`` waits on this to know when to tear the vGPU down."""
        ...
