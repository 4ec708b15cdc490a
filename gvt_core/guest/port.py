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


@runtime_checkable
class GuestPort(Protocol):
    """Guest CPU accesses to its vGPU and memory. Sizes are in bytes."""

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
        """The next MSI delivered to the guest, waiting up to ``timeout`` seconds;
        None when none arrived."""
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

    @property
    def total(self) -> int:
        return (
            self.page_tracks + self.dma_maps + self.dma_pins
            + self.trap_areas + self.gfn_maps + self.pvmmio_maps
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
