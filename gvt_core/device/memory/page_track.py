"""Per-vGPU table of write-tracked guest pages (the kernel's page_track.c).

The core registers a handler per guest frame; ``enable``/``disable`` switch
the backend's write protection. Trapped writes arrive through
:meth:`PageTrack.handle_write`, which hides the hypervisors' difference in
timing: under :attr:`~gvt_core.mpt.info.PageTrackMode.WRITE_FORWARDED` the
bytes are committed to guest RAM first, so every handler sees the page as it
is after the write, exactly as under KVM.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from gvt_core.errors import PageTrackError
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE
from gvt_core.mpt.facade import Mpt
from gvt_core.mpt.info import PageTrackMode

#: handler(gpa, data) called after the write is in guest RAM.
WriteHandler = Callable[[int, bytes], None]


@attrs.define(eq=False, slots=True)
class TrackedPage:
    gfn: int
    handler: WriteHandler
    tracked: bool = False


@attrs.define(eq=False)
class PageTrack:
    """Tracked guest pages of one vGPU."""

    mpt: Mpt
    handle: Any
    pages: dict[int, TrackedPage] = attrs.field(factory=dict)
    #: writes that arrived for a gfn with no registered handler (a stale trap).
    stray_writes: int = 0
    #: set when the vGPU is in failsafe: writes are committed and ignored.
    failsafe: bool = False
    #: set by :meth:`release_all` (vGPU destroy): late writes are stray, nothing more.
    released: bool = False

    def register(self, gfn: int, handler: WriteHandler) -> TrackedPage:
        if gfn in self.pages:
            raise PageTrackError(f"guest frame {gfn:#x} already has a write handler")
        page = TrackedPage(gfn, handler)
        self.pages[gfn] = page
        return page

    def register_many(self, gfns: Sequence[int], handler: WriteHandler) -> None:
        """:meth:`register` for many frames: all registered, or (on error) none."""
        pages = self.pages
        fresh = {gfn: TrackedPage(gfn, handler) for gfn in gfns}
        if len(fresh) != len(gfns) or not pages.keys().isdisjoint(fresh):
            seen: set[int] = set()
            for gfn in gfns:
                if gfn in pages or gfn in seen:
                    raise PageTrackError(
                        f"guest frame {gfn:#x} already has a write handler (or is listed "
                        "twice); no handler was registered"
                    )
                seen.add(gfn)
        pages.update(fresh)

    def unregister(self, gfn: int) -> None:
        page = self.pages.pop(gfn, None)
        if page is None:
            raise PageTrackError(f"guest frame {gfn:#x} has no write handler to remove")
        if page.tracked:
            self.mpt.disable_page_track(self.handle, gfn)

    def enable(self, gfn: int) -> None:
        page = self.pages[gfn]
        if not page.tracked:
            self.mpt.enable_page_track(self.handle, gfn)
            page.tracked = True

    def enable_many(self, gfns: Sequence[int]) -> None:
        """:meth:`enable` for many registered frames, with one backend call for those
        not tracked yet: all tracked, or (on error) none more."""
        pages = [self.pages[gfn] for gfn in gfns]
        todo = [p for p in pages if not p.tracked]
        if not todo:
            return
        self.mpt.enable_page_tracks(self.handle, [p.gfn for p in todo])
        for p in todo:
            p.tracked = True

    def disable(self, gfn: int) -> None:
        page = self.pages[gfn]
        if page.tracked:
            self.mpt.disable_page_track(self.handle, gfn)
            page.tracked = False

    def is_tracked(self, gfn: int) -> bool:
        page = self.pages.get(gfn)
        return page is not None and page.tracked

    @property
    def tracked_count(self) -> int:
        return sum(1 for p in self.pages.values() if p.tracked)

    def handle_write(self, gpa: int, data: bytes) -> None:
        """A trapped guest write to a tracked page."""
        if self.released:
            self.stray_writes += 1
            return
        if self.mpt.caps.page_track is PageTrackMode.WRITE_FORWARDED:
            self.mpt.write_gpa(self.handle, gpa, data)
        if (gpa & PAGE_MASK) + len(data) <= PAGE_SIZE:  # the trapped PTE write: one page
            self._page_write(gpa, data)
            return
        # a write that crosses a page boundary is a write to each page it touches:
        # each tracked one's handler sees its own bytes
        end = gpa + len(data)
        while gpa < end:
            n = min(end - gpa, PAGE_SIZE - (gpa & PAGE_MASK))
            piece, data = data[:n], data[n:]
            self._page_write(gpa, piece)
            gpa += n

    def _page_write(self, gpa: int, data: bytes) -> None:
        """The part of a trapped write that falls in one page."""
        page = self.pages.get(gpa >> PAGE_SHIFT)
        if page is None:
            self.stray_writes += 1
        elif self.failsafe:
            self.disable(page.gfn)
        else:
            page.handler(gpa, data)

    def release_all(self) -> None:
        """Drop every handler and tracking (vGPU destroy)."""
        self.released = True
        for gfn in list(self.pages):
            self.unregister(gfn)
