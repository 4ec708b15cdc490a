"""The host's own graphics memory: host pages mapped into the host's GGTT reservation.

What the host driver puts in graphics memory for its own use lives here:
the shadow rings (and, with the command scanner, shadow batch buffers) the
engines execute for vGPUs, and the rings and buffers of native host
contexts. A block is a page-aligned range of the host's hidden-GM
reservation (facts 2.2: the 384 MiB after the aperture that no vGPU gets);
its GGTT entries point at host pages from the GPU's page pool, or stay on
the scratch page for pages the block leaves unbacked (an engine that
touches those faults). Every block is accounted to an owner.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import attrs
import numpy as np

from gvt_core.errors import ResourceExhaustedError
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE, HostPagePool


@attrs.define(eq=False)
class GmBlock:
    """A range of host graphics memory."""

    gm: int
    npages: int
    owner: str
    #: page index within the block -> (host frame, host page) for the backed pages.
    backing: dict[int, tuple[int, memoryview]]
    freed: bool = False

    @property
    def size(self) -> int:
        return self.npages << PAGE_SHIFT

    @property
    def end(self) -> int:
        return self.gm + self.size

    def view(self, index: int) -> memoryview:
        """The host page backing page ``index`` of the block."""
        return self.backing[index][1]

    def write(self, offset: int, data: bytes) -> None:
        """Host CPU write into the block's backed pages."""
        pos = 0
        while pos < len(data):
            i, off = (offset + pos) >> PAGE_SHIFT, (offset + pos) & (PAGE_SIZE - 1)
            k = min(PAGE_SIZE - off, len(data) - pos)
            self.backing[i][1][off : off + k] = data[pos : pos + k]
            pos += k

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            i, off = (offset + len(out)) >> PAGE_SHIFT, (offset + len(out)) & (PAGE_SIZE - 1)
            k = min(PAGE_SIZE - off, length - len(out))
            out += self.backing[i][1][off : off + k]
        return bytes(out)


class HostGm:
    """First-fit page allocator over the host's GM reservation, mapping host pages."""

    def __init__(self, ggtt: np.ndarray, pool: HostPagePool, scratch_pte: int,
                 base: int, size: int) -> None:
        self._ggtt = ggtt
        self._pool = pool
        self._scratch_pte = scratch_pte
        self.base = base
        self.size = size
        #: sorted, coalesced (first page, page count) free ranges.
        self._free: list[tuple[int, int]] = [(base >> PAGE_SHIFT, size >> PAGE_SHIFT)]
        self._in_use: Counter[str] = Counter()

    def in_use(self, owner: str | None = None) -> int:
        """Bytes of graphics memory allocated (to ``owner``, or in total)."""
        pages = self._in_use[owner] if owner is not None else sum(self._in_use.values())
        return pages << PAGE_SHIFT

    @property
    def free_bytes(self) -> int:
        return sum(n for _, n in self._free) << PAGE_SHIFT

    def alloc(self, npages: int, owner: str, backed: Iterable[int] | None = None) -> GmBlock:
        """``npages`` pages of GM; ``backed`` lists the page indexes that get host
        pages (default: all of them), the rest stay on scratch.

        :raises ResourceExhaustedError: the reservation has no such free range.
        """
        if npages <= 0:
            raise ValueError("a GM block has at least one page")
        i = next((k for k, (_, n) in enumerate(self._free) if n >= npages), -1)
        if i < 0:
            raise ResourceExhaustedError("host graphics memory", npages << PAGE_SHIFT,
                                         max((n for _, n in self._free), default=0) << PAGE_SHIFT,
                                         "bytes contiguous")
        first, count = self._free[i]
        if count == npages:
            del self._free[i]
        else:
            self._free[i] = (first + npages, count - npages)
        indexes = range(npages) if backed is None else sorted(set(backed))
        pages = self._pool.alloc_many(len(indexes), owner=owner) if indexes else []
        backing = {}
        for idx, (frame, page) in zip(indexes, pages, strict=True):
            if not 0 <= idx < npages:
                raise ValueError(f"page index {idx} outside a {npages}-page block")
            backing[idx] = (frame, page)
            self._ggtt[first + idx] = (frame << PAGE_SHIFT) | regs.GEN8_PAGE_PRESENT
        self._in_use[owner] += npages
        return GmBlock(first << PAGE_SHIFT, npages, owner, backing)

    def free(self, block: GmBlock) -> None:
        """Unmap and release ``block`` (idempotent)."""
        if block.freed:
            return
        block.freed = True
        first = block.gm >> PAGE_SHIFT
        self._ggtt[first : first + block.npages] = self._scratch_pte
        for frame, page in block.backing.values():
            self._pool.free(frame, page)
        block.backing = {}
        self._in_use[block.owner] -= block.npages
        if not self._in_use[block.owner]:
            del self._in_use[block.owner]
        self._insert(first, block.npages)

    def _insert(self, first: int, count: int) -> None:
        free = self._free
        lo = 0
        while lo < len(free) and free[lo][0] < first:
            lo += 1
        free.insert(lo, (first, count))
        # coalesce with the neighbours
        if lo + 1 < len(free) and free[lo][0] + free[lo][1] == free[lo + 1][0]:
            free[lo] = (free[lo][0], free[lo][1] + free[lo + 1][1])
            del free[lo + 1]
        if lo > 0 and free[lo - 1][0] + free[lo - 1][1] == free[lo][0]:
            free[lo - 1] = (free[lo - 1][0], free[lo - 1][1] + free[lo][1])
            del free[lo]
