"""Reading a surface's pages through a vGPU's own GGTT view, and nothing else.

The decoder asks for graphics-memory pages; a page is served only if it lies
in one of the vGPU's two GM ranges *and* the guest mapped it (its GGTT entry
is present and shadowed to one of the guest's own pages). Anything else is a
typed error: a page outside the vGPU's ranges (ballooned space, another
vGPU's memory, the host's) is :class:`~gvt_core.errors.SurfaceOutOfRangeError`,
a hole in the guest's mapping :class:`~gvt_core.errors.UnmappedSurfaceError`.
So a hostile plane can never make the host read another vGPU's memory or the
scratch page.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from gvt_core.errors import DmaFault, SurfaceOutOfRangeError, UnmappedSurfaceError
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE


class SurfaceMemory(Protocol):
    def pages(self, gm_pages: np.ndarray, plane: str) -> np.ndarray:
        """The (k, 4096) bytes of graphics-memory pages ``gm_pages`` (page numbers,
        ascending); raises the typed errors above for a page it will not serve."""
        ...


class VgpuSurfaceMemory:
    """A vGPU's graphics memory as its display engine would scan it out."""

    def __init__(self, vgpu: Any) -> None:
        self.vgpu_id = vgpu.id
        self.ggtt = vgpu.ggtt
        self.sysmem = vgpu.gvt.gpu.sysmem

    def _slots(self, gm_pages: np.ndarray) -> np.ndarray:
        g = self.ggtt
        slots = np.full(gm_pages.shape, -1, dtype=np.int64)
        low = gm_pages - g.low_first
        in_low = (low >= 0) & (low < g.low_count)
        slots[in_low] = low[in_low]
        high = gm_pages - g.high_first
        in_high = (high >= 0) & (high < g.high_count)
        slots[in_high] = g.low_count + high[in_high]
        return slots

    def pages(self, gm_pages: np.ndarray, plane: str) -> np.ndarray:
        gm_pages = np.asarray(gm_pages, dtype=np.int64)
        slots = self._slots(gm_pages)
        outside = np.flatnonzero(slots < 0)
        if outside.size:
            gm = int(gm_pages[outside[0]]) << PAGE_SHIFT
            raise SurfaceOutOfRangeError(
                plane, f"its surface reaches GM {gm:#x}, outside vGPU {self.vgpu_id}'s graphics "
                f"memory", "the guest must point the plane at memory it owns")
        dma = self.ggtt.dma[slots]
        holes = np.flatnonzero(dma < 0)
        if holes.size:
            gm = int(gm_pages[holes[0]]) << PAGE_SHIFT
            raise UnmappedSurfaceError(
                plane, f"GM page {gm:#x} of the surface has no present GGTT entry",
                "the guest must map every page of the surface before scanning it out")
        out = np.empty((len(gm_pages), PAGE_SIZE), dtype=np.uint8)
        for i, addr in enumerate(dma.tolist()):
            try:
                page = self.sysmem.page((addr & regs.GTT_ADDR_MASK) >> PAGE_SHIFT)
            except DmaFault as exc:
                raise UnmappedSurfaceError(
                    plane, f"GM page {int(gm_pages[i]) << PAGE_SHIFT:#x} maps no reachable memory",
                    str(exc)) from None
            out[i] = np.frombuffer(page, dtype=np.uint8)
        return out
