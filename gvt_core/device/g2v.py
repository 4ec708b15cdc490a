"""Where PVINFO ``g2v_notify`` PPGTT notifications go.

The PVINFO handler decodes the notification and the four ``pdp`` root
pointers and hands them to the vGPU's :class:`PpgttOwner`; the shadow PPGTT
manager is that owner. Keeping the seam a protocol lets the MMIO layer stay
ignorant of shadow page tables.
"""

from __future__ import annotations

from collections import Counter
from typing import Protocol, runtime_checkable

import attrs

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


@attrs.define(eq=False)
class G2vLog:
    """A :class:`PpgttOwner` that records notifications and shadows nothing.

    The vGPU's owner until the shadow PPGTT manager is plugged in. It keeps
    count of each notification kind and the last roots announced, so the
    PVINFO path can be tested end to end; since it never builds a shadow,
    :meth:`invalidate` and :meth:`release` have nothing to drop and only
    count the call.
    """

    counts: Counter[str] = attrs.field(factory=Counter)
    last_roots: Roots | None = None

    def g2v_create(self, levels: int, roots: Roots) -> None:
        self.counts[f"l{levels}_create"] += 1
        self.last_roots = roots

    def g2v_destroy(self, levels: int, roots: Roots) -> None:
        self.counts[f"l{levels}_destroy"] += 1
        self.last_roots = roots

    def invalidate(self) -> None:
        """Nothing is shadowed here, so nothing is dropped; the call is counted."""
        self.counts["invalidate"] += 1

    def release(self) -> None:
        """Nothing is shadowed, tracked or mapped here; the call is counted."""
        self.counts["release"] += 1
