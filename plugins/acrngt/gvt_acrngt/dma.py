"""DMA mappings of one User VM's RAM: identity addressed, reference counted.

AcrnGT's ``dma_map_guest_page`` is the guest page's host physical address
(``pfn << PAGE_SHIFT``): the Service VM owns the GPU with no IOMMU
translation of its own. The frames are those the HSM pinned when the RAM
segment was set (so they do not move while the VM lives). What this table
adds is the MPT contract's bookkeeping: references per page (and pins), and
the pages the GPU may reach registered in the host's system-memory registry
from the first reference to the last, so a stale DMA address faults instead
of reading guest memory the core gave up.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from gvt_acrngt.memory import GuestRam
from gvt_core.errors import DmaMapError, InvalidGfnError
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, SystemMemory


class IdentityDma:
    """The DMA mappings one attached vGPU holds on its guest's RAM."""

    def __init__(self, sysmem: SystemMemory, ram: GuestRam, frames: np.ndarray, owner: str) -> None:
        self.sysmem = sysmem
        self.ram = ram
        self.frames = frames
        self.owner = owner
        self.pages = len(frames)
        self.lock = threading.RLock()
        self._refs = np.zeros(self.pages, dtype=np.int64)
        self._pins = np.zeros(self.pages, dtype=np.int64)
        self._order = np.argsort(frames, kind="stable")
        self._sorted = frames[self._order]

    @property
    def maps(self) -> int:
        return int(np.count_nonzero(self._refs))

    @property
    def pins(self) -> int:
        return int(self._pins.sum())

    # --- lookups ------------------------------------------------------------------------
    def _gfns(self, gfns: Sequence[int] | np.ndarray) -> np.ndarray:
        try:
            g = np.asarray(gfns, dtype=np.int64).reshape(-1)
        except (OverflowError, ValueError, TypeError) as exc:
            raise InvalidGfnError(-1, f"not a list of guest frame numbers: {exc}") from exc
        if isinstance(gfns, np.ndarray) and gfns.dtype == np.uint64 and g.size:
            g = gfns.reshape(-1).view(np.int64)  # >= 2**63 reads negative: refused below
        if g.size and (int(g.min()) < 0 or int(g.max()) >= self.pages):
            bad = int(g[int(np.argmax((g < 0) | (g >= self.pages)))])
            raise InvalidGfnError(bad, f"outside guest RAM [0, {self.pages:#x}) frames")
        return g

    def _gfns_of(self, addrs: Sequence[int] | np.ndarray) -> np.ndarray:
        """Guest frames of DMA addresses, each the start of a live mapping."""
        try:
            a = np.asarray(addrs, dtype=np.int64).reshape(-1)
        except (OverflowError, ValueError, TypeError) as exc:
            raise DmaMapError(f"not a list of DMA addresses: {exc}") from exc
        if isinstance(addrs, np.ndarray) and addrs.dtype == np.uint64 and a.size:
            a = addrs.reshape(-1).view(np.int64)
        if not a.size:
            return a
        frames = a >> PAGE_SHIFT
        idx = np.searchsorted(self._sorted, frames)
        idx_c = np.minimum(idx, self.pages - 1)
        ok = (a >= 0) & ((a & PAGE_MASK) == 0) & (self._sorted[idx_c] == frames)
        gfns = self._order[idx_c]
        ok &= self._refs[gfns] > 0
        if not bool(ok.all()):
            bad = int(a[int(np.argmin(ok))])
            raise DmaMapError(
                f"no DMA mapping starts at bus address {bad:#x} in {self.owner}; "
                "pass an address dma_map_guest_page returned and has not fully unmapped"
            )
        return gfns

    @staticmethod
    def _size(size: int) -> None:
        if size != PAGE_SIZE:
            raise DmaMapError(
                f"acrngt maps guest pages of {PAGE_SIZE} bytes (its DMA addresses are host "
                f"frames, contiguous only page by page); {size} is not supported"
            )

    # --- mapping --------------------------------------------------------------------------
    def _register(self, gfns: np.ndarray) -> None:
        fresh = gfns[self._refs[gfns] == 0]
        if fresh.size:
            fresh = np.unique(fresh)
            self.sysmem.register_pages(
                [(int(self.frames[g]), self.ram.page(int(g))) for g in fresh], self.owner
            )

    def map(self, gfn: int, size: int) -> int:
        self._size(size)
        g = self._gfns([gfn])
        with self.lock:
            self._register(g)
            self._refs[g] += 1
            return int(self.frames[g[0]]) << PAGE_SHIFT

    def map_many(self, gfns: Sequence[int] | np.ndarray, size: int) -> np.ndarray:
        self._size(size)
        g = self._gfns(gfns)
        with self.lock:
            if g.size:
                self._register(g)
                np.add.at(self._refs, g, 1)
            return (self.frames[g] << PAGE_SHIFT).astype(np.uint64)

    def _drop(self, gfns: np.ndarray) -> None:
        np.subtract.at(self._refs, gfns, 1)
        np.minimum(self._pins, self._refs, out=self._pins)
        gone = np.unique(gfns[self._refs[gfns] == 0])
        for g in gone:
            self.sysmem.unregister(int(self.frames[g]))

    def unmap(self, dma_addr: int) -> None:
        with self.lock:
            self._drop(self._gfns_of([dma_addr]))

    def unmap_many(self, dma_addrs: Sequence[int] | np.ndarray) -> None:
        """All or nothing: every address, and how often it is listed, is checked first."""
        with self.lock:
            g = self._gfns_of(dma_addrs)
            if not g.size:
                return
            uniq, counts = np.unique(g, return_counts=True)
            short = counts > self._refs[uniq]
            if bool(short.any()):
                bad = int(uniq[int(np.argmax(short))])
                raise DmaMapError(
                    f"{int(counts[int(np.argmax(short))])} unmaps of the DMA mapping at "
                    f"{int(self.frames[bad]) << PAGE_SHIFT:#x} in {self.owner}, which holds "
                    f"{int(self._refs[bad])} references; nothing was unmapped"
                )
            self._drop(g)

    def pin(self, dma_addr: int) -> None:
        with self.lock:
            g = self._gfns_of([dma_addr])
            self._refs[g] += 1
            self._pins[g] += 1

    def release(self) -> None:
        """Drop every mapping and pin (detach): the GPU faults on all of them afterwards."""
        with self.lock:
            for g in np.flatnonzero(self._refs):
                self.sysmem.unregister(int(self.frames[g]))
            self._refs[:] = 0
            self._pins[:] = 0
