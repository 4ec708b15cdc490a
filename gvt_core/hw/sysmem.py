"""The host's system memory as the GPU sees it: bus frame -> 4 KiB page.

A real GPU reaches memory through bus addresses (host physical, or IOMMU
addresses). The simulated GPU does the same through this registry: the core
registers the pages it owns (shadow page tables, scratch pages, OpRegion) and
the backend registers the guest pages it DMA-maps or pins. Touching a frame
nobody registered raises :class:`~gvt_core.errors.DmaFault`; it never reads
zeros.

A frame can be registered *write-ignored* (scratch pages): reads see its
contents, every store to it is discarded, whatever the path: the GPU's
:meth:`SystemMemory.write` drops it (counted in ``discarded_writes``), and
:meth:`SystemMemory.page` hands out a private copy, so a CPU store through the
aperture or a gfn map lands in that copy. A page reachable by every vGPU can
therefore carry nothing from one guest to another.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
from collections import Counter
from collections.abc import Callable, Sequence

import attrs

from gvt_core.errors import DmaFault, SysmemConflictError

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = PAGE_SIZE - 1
_ZERO_PAGE = bytes(PAGE_SIZE)
#: translations of cacheable windows kept (the IOTLB); full means start over.
IOTLB_ENTRIES = 1 << 16


@attrs.define(eq=False)
class SystemMemory:
    """Registry of DMA-reachable frames, keyed by bus frame number (address >> 12)."""

    _pages: dict[int, memoryview] = attrs.field(factory=dict, init=False)
    _owner: dict[int, str] = attrs.field(factory=dict, init=False)
    #: write-ignored frames (scratch pages).
    _readonly: set[int] = attrs.field(factory=set, init=False)
    #: bytes the GPU tried to store into write-ignored frames (dropped).
    discarded_writes: int = attrs.field(default=0, init=False)
    #: (first frame, frame count, resolver, cacheable) for windows whose pages move,
    #: like the aperture (a frame resolves through the GGTT at access time) or an
    #: IOMMU's address space (through its page tables).
    _windows: list[tuple[int, int, Callable[[int], memoryview], bool]] = attrs.field(
        factory=list, init=False
    )
    #: the IOTLB: resolved frames of cacheable windows, until :meth:`invalidate`.
    _iotlb: dict[int, memoryview] = attrs.field(factory=dict, init=False)

    def register(self, frame: int, page: memoryview, owner: str, *, writable: bool = True) -> None:
        """Make ``page`` (exactly 4 KiB, writable) reachable at ``frame``; with
        ``writable=False`` stores to the frame are discarded (see the module doc)."""
        if len(page) != PAGE_SIZE:
            raise ValueError(f"a system-memory page is {PAGE_SIZE} bytes, got {len(page)}")
        held = self._owner.get(frame)
        if held is not None:
            raise SysmemConflictError(
                f"frame {frame:#x} is already registered by {held!r}; {owner!r} must "
                "unregister it first or use another frame"
            )
        self._pages[frame] = page
        self._owner[frame] = owner
        if not writable:
            self._readonly.add(frame)

    def is_writable(self, frame: int) -> bool:
        """Whether a store to registered ``frame`` lands (False for scratch pages)."""
        return frame not in self._readonly

    def register_range(self, first_frame: int, buffer: memoryview, owner: str) -> None:
        """Register a contiguous buffer (a multiple of 4 KiB) at consecutive frames."""
        if len(buffer) % PAGE_SIZE:
            raise ValueError("a system-memory range must be a whole number of pages")
        n = len(buffer) // PAGE_SIZE
        for i in range(n):
            if first_frame + i in self._owner:
                raise SysmemConflictError(
                    f"frame {first_frame + i:#x} is already registered by "
                    f"{self._owner[first_frame + i]!r}; cannot register {owner!r} over it"
                )
        for i in range(n):
            self._pages[first_frame + i] = buffer[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]
            self._owner[first_frame + i] = owner

    def register_pages(self, pages: Sequence[tuple[int, memoryview]], owner: str) -> None:
        """:meth:`register` for many (frame, 4 KiB page) pairs: all, or (on a
        conflict) none."""
        frames = [f for f, _ in pages]
        if not self._owner.keys().isdisjoint(frames) or len(set(frames)) != len(frames):
            for f in frames:
                if f in self._owner:
                    raise SysmemConflictError(
                        f"frame {f:#x} is already registered by {self._owner[f]!r}; "
                        f"{owner!r} must unregister it first or use another frame"
                    )
            raise SysmemConflictError(f"{owner!r} listed a frame twice in one registration")
        for _, page in pages:
            if len(page) != PAGE_SIZE:
                raise ValueError(f"a system-memory page is {PAGE_SIZE} bytes, got {len(page)}")
        self._pages.update(pages)
        self._owner.update(dict.fromkeys(frames, owner))

    def unregister(self, frame: int) -> None:
        """Forget ``frame``; later GPU accesses to it fault."""
        if self._pages.pop(frame, None) is None:
            raise KeyError(f"frame {frame:#x} is not registered")
        del self._owner[frame]
        self._readonly.discard(frame)

    def register_window(
        self, first_frame: int, count: int, resolve: Callable[[int], memoryview],
        *, cacheable: bool = False,
    ) -> None:
        """Frames [first_frame, first_frame + count) resolve through ``resolve(frame)``
        (raising :class:`DmaFault` where nothing is behind them): at each access, or,
        for a ``cacheable`` window, once until :meth:`invalidate`, as an IOTLB caches
        an IOMMU's translations. The owner of a cacheable window must call
        :meth:`invalidate` whenever one of its frames stops resolving or resolves to
        another page (an unmap), before the page can be reused."""
        for f, n, _, _ in self._windows:
            if first_frame < f + n and f < first_frame + count:
                raise SysmemConflictError(f"window at frame {first_frame:#x} overlaps another")
        self._windows.append((first_frame, count, resolve, cacheable))

    def unregister_window(self, first_frame: int) -> None:
        """Remove the window starting at ``first_frame``; its frames fault afterwards."""
        for i, (f, _, _, _) in enumerate(self._windows):
            if f == first_frame:
                del self._windows[i]
                self._iotlb.clear()
                return
        raise KeyError(f"no system-memory window starts at frame {first_frame:#x}")

    def invalidate(self) -> None:
        """Flush the IOTLB: cacheable windows resolve every frame afresh."""
        self._iotlb.clear()

    @property
    def window_count(self) -> int:
        """Registered windows (for leak checks: a backend's go away with its mappings)."""
        return len(self._windows)

    def page(self, frame: int) -> memoryview:
        """The 4 KiB buffer at ``frame``; a DMA fault if nobody registered it. For a
        write-ignored frame, a private copy: what is stored into it goes nowhere."""
        page = self._pages.get(frame)
        if page is not None:
            return page if frame not in self._readonly else memoryview(bytearray(page))
        page = self._iotlb.get(frame)
        if page is not None:
            return page
        for first, count, resolve, cacheable in self._windows:
            if first <= frame < first + count:
                page = resolve(frame)
                if cacheable:
                    if len(self._iotlb) >= IOTLB_ENTRIES:
                        self._iotlb.clear()
                    self._iotlb[frame] = page
                return page
        raise DmaFault(frame << PAGE_SHIFT, PAGE_SIZE)

    def pages_of(self, frames: Sequence[int]) -> list[memoryview]:
        """:meth:`page` of each of ``frames``, in order (the GPU's bulk path: the
        registered pages, then the IOTLB, looked up in C loops)."""
        out: list[memoryview | None] = list(map(self._pages.get, frames))
        if self._readonly and not self._readonly.isdisjoint(frames):
            return [self.page(f) for f in frames]  # write-ignored frames get private copies
        if None not in out:
            return out  # type: ignore[return-value]
        cached = list(map(self._iotlb.get, frames))
        if None not in cached and out.count(None) == len(out):
            return cached  # type: ignore[return-value]
        page = self.page
        return [p if p is not None else (c if c is not None else page(f))
                for p, c, f in zip(out, cached, frames, strict=True)]

    def __contains__(self, frame: int) -> bool:
        return frame in self._pages

    def owner(self, frame: int) -> str | None:
        return self._owner.get(frame)

    def count(self, owner: str | None = None) -> int:
        """Registered frames, all or those of one owner."""
        if owner is None:
            return len(self._pages)
        return sum(1 for o in self._owner.values() if o == owner)

    def owners(self) -> Counter[str]:
        return Counter(self._owner.values())

    def read(self, addr: int, length: int) -> bytes:
        """GPU read of ``length`` bytes at bus address ``addr`` (may span pages)."""
        out = bytearray()
        while length > 0:
            frame, off = addr >> PAGE_SHIFT, addr & PAGE_MASK
            page = self._pages.get(frame) or self.page(frame)
            n = min(length, PAGE_SIZE - off)
            out += page[off : off + n]
            addr += n
            length -= n
        return bytes(out)

    def write(self, addr: int, data: bytes) -> None:
        """GPU write at bus address ``addr``; checks every page before writing any.
        The part that falls on write-ignored frames is dropped (and counted)."""
        pos, a, left = 0, addr, len(data)
        spans: list[tuple[memoryview, int, int, int]] = []
        readonly = self._readonly
        while left > 0:
            frame, off = a >> PAGE_SHIFT, a & PAGE_MASK
            page = self._pages.get(frame) or self.page(frame)
            n = min(left, PAGE_SIZE - off)
            if frame in readonly:
                self.discarded_writes += n
                pos += n
                a += n
                left -= n
                continue
            spans.append((page, off, pos, n))
            pos += n
            a += n
            left -= n
        for page, off, p, n in spans:
            page[off : off + n] = data[p : p + n]


def buffer_address(buf: mmap.mmap, offset: int = 0) -> int:
    """Host virtual address of ``buf[offset]`` (what ``from_virt_to_mfn`` takes)."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf, offset))


@attrs.define(eq=False)
class HostPagePool:
    """Host pages the core owns, each registered in :class:`SystemMemory`.

    Pages come from anonymous mmap chunks (page aligned, with a stable host
    virtual address); the host frame of each is asked of the backend through
    ``from_virt_to_mfn``, as the kernel asks for shadow and scratch pages.
    One pool serves every vGPU of a host, from their own threads (each under
    its own vGPU lock), so it takes a lock of its own: a page is never handed
    to two owners.
    """

    sysmem: SystemMemory
    #: the backend's ``from_virt_to_mfn``: host virtual address -> frame.
    frame_of: Callable[[int], int]
    owner: str = "core"
    chunk_pages: int = 256
    _free: list[tuple[int, memoryview]] = attrs.field(factory=list, init=False)
    _chunks: list[mmap.mmap] = attrs.field(factory=list, init=False)
    _in_use: int = attrs.field(default=0, init=False)
    _lock: threading.RLock = attrs.field(factory=threading.RLock, init=False)

    def _grow(self) -> None:
        chunk = mmap.mmap(-1, self.chunk_pages * PAGE_SIZE)
        self._chunks.append(chunk)
        base = buffer_address(chunk)
        view = memoryview(chunk)
        for i in range(self.chunk_pages - 1, -1, -1):
            frame = self.frame_of(base + i * PAGE_SIZE)
            self._free.append((frame, view[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]))

    def alloc(self, owner: str | None = None, *, writable: bool = True) -> tuple[int, memoryview]:
        """A zeroed page, registered in sysmem; returns (frame, buffer). A page
        allocated with ``writable=False`` (scratch) ignores every store that
        reaches it through sysmem; its owner fills it through the buffer."""
        with self._lock:
            if not self._free:
                self._grow()
            frame, page = self._free.pop()
            page[:] = _ZERO_PAGE
            try:
                self.sysmem.register(frame, page, owner or self.owner, writable=writable)
            except BaseException:
                self._free.append((frame, page))
                raise
            self._in_use += 1
            return frame, page

    def alloc_many(
        self, n: int, owner: str | None = None, fill: bytes = _ZERO_PAGE
    ) -> list[tuple[int, memoryview]]:
        """``n`` pages, registered in sysmem with one call; the same pages ``n``
        calls of :meth:`alloc` would return, in that order. Each starts as
        ``fill`` (4 KiB; zeroes by default), so a caller that wants a pattern
        writes the page once."""
        if len(fill) != PAGE_SIZE:
            raise ValueError(f"a page fill is {PAGE_SIZE} bytes, got {len(fill)}")
        with self._lock:
            while len(self._free) < n:
                self._grow()
            if n <= 0:
                return []
            taken = self._free[-n:]
            taken.reverse()
            for _, page in taken:
                page[:] = fill
            self.sysmem.register_pages(taken, owner or self.owner)
            del self._free[-n:]
            self._in_use += n
            return taken

    def free(self, frame: int, page: memoryview) -> None:
        """Return a page from :meth:`alloc`; the GPU can no longer reach it."""
        with self._lock:
            self.sysmem.unregister(frame)
            self._free.append((frame, page))
            self._in_use -= 1

    @property
    def in_use(self) -> int:
        return self._in_use
