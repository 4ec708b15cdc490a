"""One User VM's EPT: guest frames -> Service VM frames, with access rights and type.

Kept as sorted extents of consecutive guest frames backed by consecutive
frames with one attribute. The two operations are the hypervisor's
``ept_add_mr`` (a page already present is left as it is: the hypervisor logs
"pte is already present" and keeps the old entry) and ``ept_del_mr`` (the
caller has checked the whole range is present, as ``ept_is_valid_mr`` does).
"""

from __future__ import annotations

import bisect

import attrs

from gvt_acrngt import abi


@attrs.define(eq=False, slots=True)
class Extent:
    gfn: int
    pages: int
    frame: int
    #: ``ACRN_MEM_TYPE_* | ACRN_MEM_ACCESS_*`` as the hypervisor received it.
    attr: int

    @property
    def end(self) -> int:
        return self.gfn + self.pages


class Ept:
    """The second-level page table of one User VM."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._extents: list[Extent] = []

    def __len__(self) -> int:
        return len(self._extents)

    @property
    def pages(self) -> int:
        return sum(e.pages for e in self._extents)

    def lookup(self, gfn: int) -> Extent | None:
        i = bisect.bisect_right(self._starts, gfn) - 1
        if i >= 0 and gfn < self._extents[i].end:
            return self._extents[i]
        return None

    def _overlapping(self, gfn: int, pages: int) -> range:
        """Indices of the extents overlapping ``[gfn, gfn + pages)``."""
        end = gfn + pages
        lo = bisect.bisect_right(self._starts, gfn) - 1
        if lo < 0 or self._extents[lo].end <= gfn:
            lo += 1
        hi = bisect.bisect_left(self._starts, end)
        return range(lo, max(lo, hi))

    def present(self, gfn: int, pages: int) -> bool:
        """Every page of the range is mapped (``ept_is_valid_mr``)."""
        covered = gfn
        for i in self._overlapping(gfn, pages):
            e = self._extents[i]
            if e.gfn > covered:
                return False
            covered = e.end
        return covered >= gfn + pages

    def _insert(self, extent: Extent) -> None:
        i = bisect.bisect_left(self._starts, extent.gfn)
        self._starts.insert(i, extent.gfn)
        self._extents.insert(i, extent)

    def add(self, gfn: int, pages: int, frame: int, attr: int) -> list[tuple[int, int]]:
        """Map the holes of the range; returns the (gfn, pages) runs that were present
        already and kept their old mapping."""
        kept: list[tuple[int, int]] = []
        cursor, end = gfn, gfn + pages
        for e in [self._extents[i] for i in self._overlapping(gfn, pages)]:
            if e.gfn > cursor:
                self._hole(cursor, e.gfn, gfn, frame, attr)
            lo, hi = max(e.gfn, gfn), min(e.end, end)
            kept.append((lo, hi - lo))
            cursor = hi
        if cursor < end:
            self._hole(cursor, end, gfn, frame, attr)
        return kept

    def _hole(self, lo: int, hi: int, gfn: int, frame: int, attr: int) -> None:
        self._insert(Extent(lo, hi - lo, frame + (lo - gfn), attr))

    def delete(self, gfn: int, pages: int) -> None:
        """Unmap the range (pages not present are skipped)."""
        end = gfn + pages
        for i in reversed(self._overlapping(gfn, pages)):
            e = self._extents[i]
            del self._starts[i]
            del self._extents[i]
            if e.gfn < gfn:
                self._insert(Extent(e.gfn, gfn - e.gfn, e.frame, e.attr))
            if e.end > end:
                self._insert(Extent(end, e.end - end, e.frame + (end - e.gfn), e.attr))

    def clear(self) -> None:
        self._starts.clear()
        self._extents.clear()

    def extents(self) -> list[Extent]:
        return list(self._extents)


def rights(attr: int) -> int:
    return attr & abi.ACRN_MEM_ACCESS_RIGHT_MASK
