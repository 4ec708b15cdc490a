"""DMA mappings of one guest: refcounted per (gfn, size), visible to the GPU via sysmem.

Two address models, as ``Capabilities.dma`` declares:

* ``iommu``: a simulated IOMMU hands out bus addresses from its own space
  (frames from :data:`~gvt_sim.memory.IOVA_FRAME_BASE` up), unrelated to host
  frames. Each guest gets a region of IOVA slots; a slot is reused after its
  mapping is gone, as a real IOVA allocator does, so a stale address the core
  forgot to drop can later point at another page.
* ``identity``: no IOMMU; the bus address of a guest page is its host
  physical address (Xen's and ACRN's ``pfn << PAGE_SHIFT``).

The GPU reaches mapped pages through the host's
:class:`~gvt_core.hw.sysmem.SystemMemory`: the guest's bus range is one
sysmem *window* whose resolver is this table, i.e. the IOMMU page walk
happens at access time and an unmapped address is a
:class:`~gvt_core.errors.DmaFault`. Mapping therefore costs no per-page
registration, and bulk maps are a handful of numpy operations. The windows
are cacheable (sysmem's IOTLB keeps resolved frames): every unmap that
drops a page's last reference invalidates it, before the slot can be reused.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from gvt_core.errors import DmaFault, DmaMapError, InvalidGfnError
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, SystemMemory
from gvt_core.mpt.bulk import all_or_nothing
from gvt_core.mpt.info import DmaMode
from gvt_sim.memory import FRAMES_PER_2M, FrameAllocator, GuestRam

SIZE_4K = PAGE_SIZE
SIZE_2M = FRAMES_PER_2M * PAGE_SIZE


@attrs.define(eq=False)
class IovaSlots:
    """``count`` slots of ``unit`` bus frames each, from ``base``; a free-slot stack."""

    base: int
    count: int
    unit: int
    #: what each slot maps (a gfn for 4 KiB slots, a 2 MiB chunk index), -1 when free.
    owner: np.ndarray = attrs.field(init=False)
    _free: np.ndarray = attrs.field(init=False)
    _top: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.owner = np.full(self.count, -1, dtype=np.int64)
        # lowest slot on top of the stack: fresh mappings get ascending addresses.
        self._free = np.arange(self.count - 1, -1, -1, dtype=np.int64)
        self._top = self.count

    def bind(self, keys: np.ndarray) -> np.ndarray:
        """Take one slot per entry of ``keys`` and record it as the slot's owner.
        The answer is a view of the free stack: use it before the next give."""
        n = int(keys.size)
        if n > self._top:
            raise DmaMapError(
                f"simulated IOMMU region at frame {self.base:#x} has {self._top} free slots, "
                f"{n} requested"
            )
        slots = self._free[self._top - n : self._top][::-1]
        self._top -= n
        self.owner[slots] = keys
        return slots

    def give(self, slot: int) -> None:
        self.owner[slot] = -1
        self._free[self._top] = slot
        self._top += 1

    def give_many(self, slots: np.ndarray) -> None:
        """:meth:`give` for each of ``slots``, last first (so slots given in
        ascending order are taken again in ascending order)."""
        n = int(slots.size)
        self.owner[slots] = -1
        self._free[self._top : self._top + n] = slots[::-1]
        self._top += n

    def slot_of(self, frame: int) -> int:
        """Slot whose first frame is ``frame``, or -1."""
        off = frame - self.base
        if off < 0 or off % self.unit or off >= self.count * self.unit:
            return -1
        return off // self.unit


@attrs.define(eq=False)
class DmaSpace:
    """Every DMA mapping of one guest, and the sysmem windows that expose them."""

    ram: GuestRam
    mode: DmaMode
    sysmem: SystemMemory
    iova: FrameAllocator
    #: who faulted, for DmaFault messages.
    label: str
    _ready: bool = attrs.field(default=False, init=False)
    _ref4k: np.ndarray = attrs.field(init=False)
    _pin4k: np.ndarray = attrs.field(init=False)
    _slot4k: np.ndarray = attrs.field(init=False)
    _ref2m: np.ndarray = attrs.field(init=False)
    _pin2m: np.ndarray = attrs.field(init=False)
    _slot2m: np.ndarray = attrs.field(init=False)
    _iova4k: IovaSlots | None = attrs.field(default=None, init=False)
    _iova2m: IovaSlots | None = attrs.field(default=None, init=False)
    _windows: list[int] = attrs.field(factory=list, init=False)

    # --- set-up and tear-down ------------------------------------------------------------
    def _ensure(self) -> None:
        """Allocate the tables on the first mapping (a guest that never DMAs pays nothing)."""
        if self._ready:
            return
        pages = self.ram.pages
        chunks = pages // FRAMES_PER_2M
        self._ref4k = np.zeros(pages, dtype=np.int32)
        self._pin4k = np.zeros(pages, dtype=np.int32)
        self._ref2m = np.zeros(chunks, dtype=np.int32)
        self._pin2m = np.zeros(chunks, dtype=np.int32)
        if self.mode is DmaMode.IOMMU:
            self._slot4k = np.full(pages, -1, dtype=np.int64)
            self._slot2m = np.full(chunks, -1, dtype=np.int64)
            self._iova4k = IovaSlots(self.iova.alloc(pages), pages, 1)
            self.sysmem.register_window(self._iova4k.base, pages, self._resolve_iova4k,
                                        cacheable=True)
            self._windows.append(self._iova4k.base)
            if chunks:
                base = self.iova.alloc(chunks * FRAMES_PER_2M, align=FRAMES_PER_2M)
                self._iova2m = IovaSlots(base, chunks, FRAMES_PER_2M)
                self.sysmem.register_window(
                    base, chunks * FRAMES_PER_2M, self._resolve_iova2m, cacheable=True
                )
                self._windows.append(base)
        else:
            self.sysmem.register_window(self.ram.base_frame, pages, self._resolve_identity,
                                        cacheable=True)
            self._windows.append(self.ram.base_frame)
        self._ready = True

    def release(self) -> None:
        """Drop every mapping and pin; the GPU faults on all of them afterwards."""
        for first in self._windows:
            self.sysmem.unregister_window(first)
        self._windows.clear()
        self._ready = False
        self._iova4k = self._iova2m = None

    # --- what the GPU sees ------------------------------------------------------------------
    def _fault(self, frame: int) -> DmaFault:
        return DmaFault(frame << PAGE_SHIFT, PAGE_SIZE, who=f"gpu ({self.label})")

    def _resolve_identity(self, frame: int) -> memoryview:
        gfn = frame - self.ram.base_frame
        if self._ref4k[gfn] > 0 or self._ref2m[gfn >> 9] > 0:
            return self.ram.page(gfn)
        raise self._fault(frame)

    def _resolve_iova4k(self, frame: int) -> memoryview:
        assert self._iova4k is not None
        gfn = int(self._iova4k.owner[frame - self._iova4k.base])
        if gfn < 0:
            raise self._fault(frame)
        return self.ram.page(gfn)

    def _resolve_iova2m(self, frame: int) -> memoryview:
        assert self._iova2m is not None
        off = frame - self._iova2m.base
        chunk = int(self._iova2m.owner[off >> 9])
        if chunk < 0:
            raise self._fault(frame)
        return self.ram.page((chunk << 9) + (off & (FRAMES_PER_2M - 1)))

    # --- accounting ------------------------------------------------------------------------------
    @property
    def maps(self) -> int:
        """Live mappings (distinct (gfn, size) pairs)."""
        if not self._ready:
            return 0
        return int(np.count_nonzero(self._ref4k)) + int(np.count_nonzero(self._ref2m))

    @property
    def pins(self) -> int:
        """Pin references still held."""
        if not self._ready:
            return 0
        return int(self._pin4k.sum()) + int(self._pin2m.sum())

    # --- mapping -------------------------------------------------------------------------------
    def _check_size(self, gfn: int, size: int) -> None:
        if size == SIZE_4K:
            self.ram.check_gfn(gfn)
        elif size == SIZE_2M:
            if gfn % FRAMES_PER_2M:
                raise DmaMapError(
                    f"a 2 MiB DMA mapping needs a 512-frame aligned guest frame, got {gfn:#x}"
                )
            self.ram.check_gfn(gfn, FRAMES_PER_2M)
        else:
            raise DmaMapError(
                f"DMA mappings are 4096 or {SIZE_2M} bytes; {size} is not supported"
            )

    def map(self, gfn: int, size: int) -> int:
        """Map one page (one more reference if already mapped); its bus address."""
        gfn = int(gfn)
        self._check_size(gfn, size)
        self._ensure()
        if size == SIZE_4K:
            if self.mode is DmaMode.IDENTITY:
                self._ref4k[gfn] += 1
                return (self.ram.base_frame + gfn) << PAGE_SHIFT
            assert self._iova4k is not None
            slot = int(self._slot4k[gfn])
            if slot < 0:
                slot = int(self._iova4k.bind(np.array([gfn]))[0])
                self._slot4k[gfn] = slot
            self._ref4k[gfn] += 1
            return (self._iova4k.base + slot) << PAGE_SHIFT
        chunk = gfn >> 9
        if self.mode is DmaMode.IDENTITY:
            self._ref2m[chunk] += 1
            return (self.ram.base_frame + gfn) << PAGE_SHIFT
        assert self._iova2m is not None
        slot = int(self._slot2m[chunk])
        if slot < 0:
            slot = int(self._iova2m.bind(np.array([chunk]))[0])
            self._slot2m[chunk] = slot
        self._ref2m[chunk] += 1
        return (self._iova2m.base + slot * FRAMES_PER_2M) << PAGE_SHIFT

    def _frames(self, gfns: Sequence[int] | np.ndarray) -> np.ndarray:
        """``gfns`` as a flat int64 array (a view of an integer array, not a copy),
        every frame checked to be guest RAM."""
        if isinstance(gfns, np.ndarray) and gfns.dtype in (np.uint64, np.int64):
            # a uint64 frame >= 2**63 reads as negative and is refused below
            g = gfns.reshape(-1).view(np.int64)
        else:
            try:
                g = np.asarray(gfns, dtype=np.int64).reshape(-1)
            except (OverflowError, ValueError, TypeError) as exc:
                raise InvalidGfnError(
                    -1, f"guest frame list is not a list of frame numbers: {exc}"
                ) from exc
        if g.size and (int(g.min()) < 0 or int(g.max()) >= self.ram.pages):
            bad = (g < 0) | (g >= self.ram.pages)
            self.ram.check_gfn(int(g[int(np.argmax(bad))]))
        return g

    @staticmethod
    def _counts(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(distinct frames ascending, how often each occurs) in O(n) when the frames
        are dense (a page table's), by sorting when they are sparse."""
        lo, hi = int(g.min()), int(g.max())
        span = hi - lo + 1
        if span > 4 * int(g.size) + 64:
            return np.unique(g, return_counts=True)
        counts = np.bincount(g - lo, minlength=span)
        uniq = np.flatnonzero(counts)
        return uniq + lo, counts[uniq]

    def map_many(self, gfns: Sequence[int] | np.ndarray, size: int) -> np.ndarray | list[int]:
        """Bulk :meth:`map`: all pages mapped, or (on error) none. 4 KiB maps return a
        uint64 array (no per-page Python objects), 2 MiB ones a list."""
        if size != SIZE_4K:
            return all_or_nothing(gfns, lambda gfn: self.map(int(gfn), size), self.unmap)
        g = self._frames(gfns)
        n = int(g.size)
        if n == 0:
            return np.zeros(0, dtype=np.uint64)
        self._ensure()
        lo, hi = int(g[0]), int(g[-1])
        if hi - lo == n - 1 and (n == 1 or bool((g[1:] > g[:-1]).all())):
            out = self._map_run(lo, hi + 1)
        else:
            out = self._map_scattered(g)
        out <<= PAGE_SHIFT
        return out.view(np.uint64)

    def _map_run(self, lo: int, end: int) -> np.ndarray:
        """Map the run of frames ``[lo, end)`` (the common shape of a page table):
        slice operations only; bus frames returned (a fresh array)."""
        if self.mode is DmaMode.IDENTITY:
            self._ref4k[lo:end] += 1
            return np.arange(lo + self.ram.base_frame, end + self.ram.base_frame, dtype=np.int64)
        assert self._iova4k is not None
        seg = self._slot4k[lo:end]
        free = seg < 0
        out = None
        if free.all():
            out = np.arange(lo, end, dtype=np.int64)
            seg[:] = self._iova4k.bind(out)
        elif free.any():
            new = np.flatnonzero(free)
            new += lo
            self._slot4k[new] = self._iova4k.bind(new)
        self._ref4k[lo:end] += 1  # after the slots: running out of them changes nothing
        # the frames array, used up, takes the answer: one fresh array, not two
        return np.add(seg, self._iova4k.base, out=out)

    def _map_scattered(self, g: np.ndarray) -> np.ndarray:
        """Map any frames, repeated ones taking one reference each; bus frames."""
        uniq, counts = self._counts(g)
        if self.mode is DmaMode.IDENTITY:
            self._ref4k[uniq] += counts.astype(np.int32)
            return g + self.ram.base_frame
        assert self._iova4k is not None
        new = uniq[self._slot4k[uniq] < 0]
        if new.size:
            self._slot4k[new] = self._iova4k.bind(new)
        self._ref4k[uniq] += counts.astype(np.int32)
        out = self._slot4k[g]
        out += self._iova4k.base
        return out

    def _find(self, dma_addr: int) -> tuple[bool, int]:
        """(is_2m, index) of the mapping starting at ``dma_addr``; DmaMapError if none."""
        dma_addr = int(dma_addr)
        if self._ready and dma_addr >= 0 and not dma_addr & PAGE_MASK:
            frame = dma_addr >> PAGE_SHIFT
            if self.mode is DmaMode.IDENTITY:
                gfn = frame - self.ram.base_frame
                if 0 <= gfn < self.ram.pages:
                    # the same address can start a 4 KiB and a 2 MiB mapping:
                    # the 4 KiB one is found first (Xen and ACRN never unmap at all).
                    if self._ref4k[gfn] > 0:
                        return False, gfn
                    if gfn % FRAMES_PER_2M == 0 and self._ref2m[gfn >> 9] > 0:
                        return True, gfn >> 9
            else:
                assert self._iova4k is not None
                slot = self._iova4k.slot_of(frame)
                if slot >= 0 and self._iova4k.owner[slot] >= 0:
                    return False, int(self._iova4k.owner[slot])
                if self._iova2m is not None:
                    slot = self._iova2m.slot_of(frame)
                    if slot >= 0 and self._iova2m.owner[slot] >= 0:
                        return True, int(self._iova2m.owner[slot])
        raise DmaMapError(
            f"no DMA mapping starts at bus address {dma_addr:#x} for {self.label}; "
            "pass an address dma_map_guest_page returned and has not fully unmapped"
        )

    def unmap(self, dma_addr: int) -> None:
        """Drop one reference; the last one makes the GPU fault on the pages."""
        is_2m, index = self._find(dma_addr)
        ref, pin = (self._ref2m, self._pin2m) if is_2m else (self._ref4k, self._pin4k)
        ref[index] -= 1
        left = int(ref[index])
        if pin[index] > left:
            pin[index] = left
        if left == 0:
            self.sysmem.invalidate()  # the IOTLB forgets the page before it is reused
        if left == 0 and self.mode is DmaMode.IOMMU:
            if is_2m:
                assert self._iova2m is not None
                self._iova2m.give(int(self._slot2m[index]))
                self._slot2m[index] = -1
            else:
                assert self._iova4k is not None
                self._iova4k.give(int(self._slot4k[index]))
                self._slot4k[index] = -1

    def _refs_at(self, dma_addr: int) -> int:
        """References repeated :meth:`unmap` calls at ``dma_addr`` can drop (identity
        mode: a 4 KiB and a 2 MiB mapping may start there); DmaMapError if none."""
        is_2m, index = self._find(dma_addr)
        if is_2m:
            return int(self._ref2m[index])
        refs = int(self._ref4k[index])
        if self.mode is DmaMode.IDENTITY and index % FRAMES_PER_2M == 0:
            refs += int(self._ref2m[index >> 9])
        return refs

    def _gfns_4k(self, addrs: np.ndarray) -> np.ndarray | None:
        """Guest frames of ``addrs`` when every one starts a live 4 KiB mapping, else None."""
        if not self._ready or int(addrs.min()) < 0:
            return None
        frames = np.bitwise_and(addrs, PAGE_MASK)
        if frames.any():
            return None
        np.right_shift(addrs, PAGE_SHIFT, out=frames)
        if self.mode is DmaMode.IDENTITY:
            frames -= self.ram.base_frame
            if int(frames.min()) < 0 or int(frames.max()) >= self.ram.pages:
                return None
            return frames if bool((self._ref4k[frames] > 0).all()) else None
        assert self._iova4k is not None
        frames -= self._iova4k.base
        if int(frames.min()) < 0 or int(frames.max()) >= self._iova4k.count:
            return None
        gfns = self._iova4k.owner[frames]
        return gfns if bool((gfns >= 0).all()) else None

    def unmap_many(self, dma_addrs: Sequence[int] | np.ndarray) -> None:
        """Bulk :meth:`unmap`, all or nothing: every address is checked (and repeated
        addresses against their reference counts) before any reference is dropped."""
        if isinstance(dma_addrs, np.ndarray) and dma_addrs.dtype in (np.uint64, np.int64):
            a = dma_addrs.reshape(-1).view(np.int64)  # >= 2**63 reads negative: refused
        else:
            try:
                a = np.asarray(dma_addrs, dtype=np.int64).reshape(-1)
            except (OverflowError, ValueError, TypeError) as exc:
                raise DmaMapError(
                    f"DMA address list is not a list of bus addresses: {exc}"
                ) from exc
        if a.size == 0:
            return
        gfns = self._gfns_4k(a)
        if gfns is not None:
            n = int(gfns.size)
            lo, hi = int(gfns[0]), int(gfns[-1])
            if hi - lo == n - 1 and (n == 1 or bool((gfns[1:] > gfns[:-1]).all())):
                if self._unmap_run(lo, hi + 1):
                    return
            elif self._unmap_scattered(gfns):
                return
            if self.mode is DmaMode.IOMMU:
                raise DmaMapError(
                    f"more unmaps than references among {n} DMA addresses for {self.label} "
                    "(an address listed more often than it was mapped); nothing was unmapped"
                )
        # mixed sizes, identity-mode overlaps or a bad address: check each, then drop.
        addrs = a.tolist()
        wanted: dict[int, int] = {}
        for addr in addrs:
            wanted[addr] = wanted.get(addr, 0) + 1
        for addr, n in wanted.items():
            have = self._refs_at(addr)
            if n > have:
                raise DmaMapError(
                    f"{n} unmaps of the DMA mapping at {addr:#x} for {self.label}, which "
                    f"holds {have} references; nothing was unmapped"
                )
        for addr in addrs:
            self.unmap(addr)

    def _unmap_run(self, lo: int, end: int) -> bool:
        """Drop one reference of each 4 KiB mapping of frames ``[lo, end)`` (slice
        operations only); False, dropping nothing, when one has no reference left."""
        refs = self._ref4k[lo:end]
        if int(refs.min()) < 1:
            return False
        refs -= 1
        pins = self._pin4k[lo:end]
        np.minimum(pins, refs, out=pins)
        if not refs.all():
            self.sysmem.invalidate()
        if self.mode is DmaMode.IOMMU:
            assert self._iova4k is not None
            freed = np.flatnonzero(refs == 0)
            if freed.size:
                freed += lo
                self._iova4k.give_many(self._slot4k[freed])
                self._slot4k[freed] = -1
        return True

    def _unmap_scattered(self, gfns: np.ndarray) -> bool:
        """Drop one reference of the 4 KiB mapping of each of ``gfns`` (repeats drop
        more); False, dropping nothing, when that is more than a mapping holds."""
        uniq, counts = self._counts(gfns)
        refs = self._ref4k[uniq]
        if bool((counts > refs).any()):
            return False
        refs -= counts.astype(np.int32)
        self._ref4k[uniq] = refs
        if not refs.all():
            self.sysmem.invalidate()
        np.minimum(self._pin4k[uniq], refs, out=refs)
        self._pin4k[uniq] = refs
        if self.mode is DmaMode.IOMMU:
            assert self._iova4k is not None
            freed = uniq[self._ref4k[uniq] == 0]
            if freed.size:
                self._iova4k.give_many(self._slot4k[freed])
                self._slot4k[freed] = -1
        return True

    def pin(self, dma_addr: int) -> None:
        """One more reference on an existing mapping, counted as a pin."""
        is_2m, index = self._find(dma_addr)
        ref, pin = (self._ref2m, self._pin2m) if is_2m else (self._ref4k, self._pin4k)
        ref[index] += 1
        pin[index] += 1
