"""Where PVINFO ``g2v_notify`` PPGTT notifications go.

The PVINFO handler decodes the notification and the four ``pdp`` root
pointers and hands them to the vGPU's :class:`PpgttOwner`; the shadow PPGTT
manager is that owner. Keeping the seam a protocol lets the MMIO layer stay
ignorant of shadow page tables.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

#: the guest's root pointers: pdp[0..3] for a 3-level table, pdp[0] = PML4 for 4 levels.
Roots = tuple[int, int, int, int]


@runtime_checkable
class PpgttOwner(Protocol):
    """The per-vGPU owner of shadow PPGTTs."""

    def g2v_create(self, levels: int, roots: Roots) -> None:
        """The guest announced a PPGTT (``levels`` 3 or 4): shadow and pin it."""
        ...

    def g2v_destroy(self, levels: int, roots: Roots) -> None:
        """The guest retired a PPGTT it announced: unpin (and free) the shadow."""
        ...

    def invalidate(self) -> None:
        """GT reset or device-model reset: drop every shadow."""
        ...

    def release(self) -> None:
        """vGPU destroy: drop every shadow and every page track and DMA map they held."""
        ...
