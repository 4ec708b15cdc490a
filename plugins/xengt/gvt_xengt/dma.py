"""DMA as XenGT does it: identity addresses, no IOMMU, reference counted here.

XenGT's ``dma_map_guest_page`` answers ``pfn << PAGE_SHIFT`` (dom0 without
an IOMMU: the GPU uses machine addresses). The GPU here is the simulated
one; the machine frames it sees for a domain's RAM are a window of the
simulated host's frame space that the backend gives the domain when it
starts serving it (frame ``base + gfn``; mainline Xen tells dom0 user space no
machine frame numbers, so the frames cannot be the hardware's). Within the
window a page is reachable exactly while it holds a reference (a map or a
pin); the window resolves each access through the reference table, so an
unmapped page is a :class:`~gvt_core.errors.DmaFault`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gvt_core.errors import DmaFault, DmaMapError, InvalidGfnError
from gvt_core.hw.sysmem import SystemMemory
from gvt_xengt.abi import PAGE_SHIFT, PAGE_SIZE
from gvt_xengt.guestmem import ForeignRam


class IdentityDma:
    """The DMA references one attached vGPU holds on its domain's RAM."""

    def __init__(self, ram: ForeignRam, sysmem: SystemMemory, base_frame: int, owner: str) -> None:
        self.ram = ram
        self.sysmem = sysmem
        self.base = base_frame
        self.owner = owner
        self.refs = np.zeros(ram.pages, dtype=np.int64)
        self.pin_refs = np.zeros(ram.pages, dtype=np.int64)
        self.window = False

    def open(self) -> None:
        self.sysmem.register_window(self.base, self.ram.pages, self._resolve)
        self.window = True

    def release(self) -> None:
        """Drop every mapping and pin (the vGPU was detached); every page faults now."""
        self.refs[:] = 0
        self.pin_refs[:] = 0

    def close(self) -> None:
        """The domain is no longer served: its window leaves the host's memory."""
        self.release()
        if self.window:
            self.sysmem.unregister_window(self.base)
            self.window = False

    def _resolve(self, frame: int) -> memoryview:
        gfn = frame - self.base
        if self.refs[gfn] or self.pin_refs[gfn]:
            return self.ram.page(gfn)
        raise DmaFault(frame << PAGE_SHIFT, PAGE_SIZE, who=f"gpu ({self.owner}, unmapped)")

    @property
    def maps(self) -> int:
        return int(np.count_nonzero((self.refs + self.pin_refs) > 0))

    @property
    def pins(self) -> int:
        return int(self.pin_refs.sum())

    # --- mapping ------------------------------------------------------------------------
    def _size(self, size: int) -> None:
        if size != PAGE_SIZE:
            raise DmaMapError(
                f"xengt maps guest pages of {PAGE_SIZE} bytes (as XenGT), not {size}"
            )

    def _frames(self, gfns: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(gfns, dtype=np.int64).ravel() if len(gfns) else np.zeros(0, np.int64)
        if idx.size:
            bad = (idx < 0) | (idx >= self.ram.pages)
            if bad.any():
                raise InvalidGfnError(int(idx[np.flatnonzero(bad)[0]]),
                                      f"outside guest RAM [0, {self.ram.pages:#x})")
            if not self.ram.all_valid:
                holes = ~self.ram.valid[idx]
                if holes.any():
                    self.ram.check_gfn(int(idx[np.flatnonzero(holes)[0]]))
        return idx

    def map(self, gfn: int, size: int) -> int:
        self._size(size)
        self.ram.check_gfn(gfn)
        self.refs[gfn] += 1
        return (self.base + gfn) << PAGE_SHIFT

    def map_many(self, gfns: Sequence[int] | np.ndarray, size: int) -> np.ndarray:
        self._size(size)
        idx = self._frames(gfns)
        np.add.at(self.refs, idx, 1)
        return ((idx + self.base) << PAGE_SHIFT).astype(np.uint64)

    def _gfn_of(self, dma_addr: int) -> int:
        dma_addr = int(dma_addr)
        gfn = (dma_addr >> PAGE_SHIFT) - self.base
        if dma_addr & (PAGE_SIZE - 1) or not 0 <= gfn < self.ram.pages or not (
            self.refs[gfn] or self.pin_refs[gfn]
        ):
            raise DmaMapError(
                f"no DMA mapping starts at {dma_addr:#x} in {self.owner}; "
                "unmap only addresses dma_map_guest_page returned"
            )
        return gfn

    def pin(self, dma_addr: int) -> None:
        self.pin_refs[self._gfn_of(dma_addr)] += 1

    def unmap(self, dma_addr: int) -> None:
        """Drop one reference: map references first, then pins."""
        gfn = self._gfn_of(dma_addr)
        if self.refs[gfn]:
            self.refs[gfn] -= 1
        else:
            self.pin_refs[gfn] -= 1

    def unmap_many(self, dma_addrs: Sequence[int] | np.ndarray) -> None:
        """All or nothing: every address and how often it is listed is checked first."""
        addrs = np.asarray(dma_addrs, dtype=np.uint64).ravel() if len(dma_addrs) else None
        if addrs is None or addrs.size == 0:
            return
        uniq, counts = np.unique(addrs, return_counts=True)
        gfns = []
        for addr, n in zip(uniq.tolist(), counts.tolist(), strict=True):
            gfn = self._gfn_of(addr)
            held = int(self.refs[gfn] + self.pin_refs[gfn])
            if n > held:
                raise DmaMapError(
                    f"{n} unmaps of the DMA mapping at {addr:#x} in {self.owner}, which holds "
                    f"{held} references; nothing was unmapped"
                )
            gfns.append(gfn)
        g = np.asarray(gfns, dtype=np.int64)
        c = counts.astype(np.int64)
        from_refs = np.minimum(self.refs[g], c)
        self.refs[g] -= from_refs
        self.pin_refs[g] -= c - from_refs
