"""The two things a backend receives from the core: the host context and the core ops.

``CoreOps`` is the Python form of the kernel's ``struct intel_gvt_ops``: the
only calls a backend makes *into* the device model. The device model's
:class:`gvt_core.device.gvt.Gvt` implements it; the contract suite uses a
recording implementation to test a backend on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from gvt_core.hw.sysmem import SystemMemory


@runtime_checkable
class CoreOps(Protocol):
    """Backend -> core calls. ``vgpu`` is the object the core passed to ``attach_vgpu``.

    Values are integers in little-endian register order; ``size`` is in bytes.
    None of these raise for guest misbehaviour: a bad offset or size gets the
    documented hardware answer (reads of all ones, dropped writes) and is counted.
    """

    def emulate_cfg_read(self, vgpu: Any, offset: int, size: int) -> int:
        """Read ``size`` (1, 2 or 4) bytes of the vGPU's PCI config space at ``offset``."""
        ...

    def emulate_cfg_write(self, vgpu: Any, offset: int, value: int, size: int) -> None:
        """Write the vGPU's PCI config space (side effects on COMMAND, BARs, MSI, ASLS)."""
        ...

    def emulate_mmio_read(self, vgpu: Any, gpa: int, size: int) -> int:
        """Read ``size`` (1..8) bytes at guest-physical ``gpa`` inside the vGPU's BAR0."""
        ...

    def emulate_mmio_write(self, vgpu: Any, gpa: int, value: int, size: int) -> None:
        """Write ``size`` (1..8) bytes at guest-physical ``gpa`` inside the vGPU's BAR0."""
        ...

    def mmio_accessors(
        self, vgpu: Any
    ) -> tuple[Callable[[int, int], int], Callable[[int, int, int], None]]:
        """``(read(gpa, size), write(gpa, value, size))``: the two calls above with
        ``vgpu`` bound, for a backend's per-access hot path (bind once per attach
        or BAR move, drop at detach). Same semantics and locking."""
        ...

    def page_track_write(self, vgpu: Any, gpa: int, data: bytes) -> None:
        """A guest write to a page the core tracks (``write_protect_handler``).

        Under :attr:`PageTrackMode.WRITE_LANDED` the bytes are already in guest
        RAM; under ``WRITE_FORWARDED`` the core commits them itself.
        """
        ...

    def is_page_tracked(self, vgpu: Any, gfn: int) -> bool:
        """Whether the core asked to track ``gfn`` (backends that route every write
        through one path use it to pick the page-track handler over MMIO)."""
        ...

    def vreg_pages(self, vgpu: Any) -> memoryview:
        """The vGPU's virtual register file: ``MMIO_SIZE`` bytes of page-aligned host
        memory of its own, writable, alive as long as the vGPU. ACRN's ``set_pvmmio``
        maps these pages read-only into a paravirtual guest (AcrnGT reads
        ``vgpu->mmio.vreg``); nothing else lives in them."""
        ...

    def emulation_failed(self, vgpu: Any, reason: str) -> None:
        """The backend could not emulate a guest access of ``vgpu`` (a request it
        cannot decode, an error raised while serving it): the core puts that vGPU,
        and only it, into failsafe mode (the kernel's ``enter_failsafe_mode``)."""
        ...


@attrs.define(eq=False)
class HostContext:
    """Handed to ``host_init``/``host_exit``: what the backend may use of the host."""

    #: the device model's entry points for trapped accesses.
    ops: CoreOps
    #: the host's registry of system-memory frames the GPU may reach by DMA;
    #: the backend registers the guest pages it DMA-maps or pins here.
    sysmem: SystemMemory
    #: a name for log messages and for backends that serve several hosts.
    name: str = "gvt0"


@attrs.frozen
class Msi:
    """One message-signalled interrupt as the guest receives it."""

    address: int
    data: int
