"""DMA mappings of guest pages: pinned, identity-addressed, reference counted.

There is no IOMMU between the simulated GPU and host memory here, so, as
XenGT and AcrnGT do, a guest page's DMA address is its host physical
address (``DmaMode.IDENTITY``). Mapping pins the pages (``mlock``), reads
their frames from pagemap and registers them in the host's system-memory
registry; the last unmap unregisters them. Like KVMGT's two rb-trees the
table is indexed both by (gfn, size) and by DMA address.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence

import attrs

from gvt_core.errors import DmaMapError, HookUnsupportedError, InvalidGfnError
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE, SystemMemory
from gvt_core.mpt.bulk import all_or_nothing
from gvt_kvmgt import hostmem

SIZE_2M = 2 << 20
PAGES_2M = SIZE_2M >> PAGE_SHIFT


@attrs.define(eq=False, slots=True)
class DmaMapping:
    gfn: int
    size: int
    dma_addr: int
    first_frame: int
    refs: int = 1
    pins: int = 0


@attrs.define(eq=False)
class DmaTable:
    """The DMA mappings one attached vGPU holds on its guest's RAM."""

    sysmem: SystemMemory
    #: a 4 KiB memoryview of guest frame ``gfn``.
    page_of: Callable[[int], memoryview]
    #: host virtual address of guest frame ``gfn``.
    host_addr_of: Callable[[int], int]
    ram_pages: int
    owner: str
    max_page: int = PAGE_SIZE
    lock: threading.RLock = attrs.field(factory=threading.RLock)
    _by_key: dict[tuple[int, int], DmaMapping] = attrs.field(factory=dict, init=False)
    _by_addr: dict[int, DmaMapping] = attrs.field(factory=dict, init=False)
    _frame_refs: Counter[int] = attrs.field(factory=Counter, init=False)

    @property
    def maps(self) -> int:
        return len(self._by_key)

    @property
    def pins(self) -> int:
        return sum(m.pins for m in self._by_key.values())

    def _frames(self, gfn: int, pages: int) -> list[int]:
        addr = self.host_addr_of(gfn)
        if hostmem.mlock(addr, pages * PAGE_SIZE) != 0:
            raise DmaMapError(
                f"cannot pin guest frames {gfn:#x}+{pages} for DMA: mlock failed "
                "(raise RLIMIT_MEMLOCK or run with CAP_IPC_LOCK)"
            )
        pm = hostmem.pagemap()
        try:
            hostmem.populate_write(addr, pages * PAGE_SIZE)
            return pm.frames(addr, pages)
        except hostmem.FramesUnavailableError as exc:
            raise HookUnsupportedError("kvmgt", "dma_map_guest_page", str(exc)) from exc

    def map(self, gfn: int, size: int) -> int:
        if size not in (PAGE_SIZE, SIZE_2M):
            raise DmaMapError(
                f"kvmgt maps guest pages of 4096 bytes (or 2 MiB where enabled), not {size}"
            )
        if size > self.max_page:
            raise DmaMapError(
                f"kvmgt was configured with max_dma_page={self.max_page}; a {size}-byte map "
                f"of guest frame {gfn:#x} is refused (load the backend with max_dma_page=2097152)"
            )
        pages = size >> PAGE_SHIFT
        if gfn < 0 or gfn + pages > self.ram_pages:
            raise InvalidGfnError(gfn, f"{pages} frame(s) from it are not all guest RAM")
        if size == SIZE_2M and gfn % PAGES_2M:
            raise DmaMapError(f"a 2 MiB DMA map needs a 512-frame aligned gfn, got {gfn:#x}")
        with self.lock:
            found = self._by_key.get((gfn, size))
            if found is not None:
                found.refs += 1
                return found.dma_addr
            frames = self._frames(gfn, pages)
            first = frames[0]
            if size == SIZE_2M and (
                first % PAGES_2M or any(f != first + i for i, f in enumerate(frames))
            ):
                raise DmaMapError(
                    f"guest frames {gfn:#x}..{gfn + pages - 1:#x} are not backed by one "
                    "contiguous, aligned 2 MiB host page; map them as 4 KiB pages"
                )
            for i, frame in enumerate(frames):
                if self._frame_refs[frame] == 0:
                    self.sysmem.register(frame, self.page_of(gfn + i), self.owner)
                self._frame_refs[frame] += 1
            mapping = DmaMapping(gfn, size, first << PAGE_SHIFT, first)
            self._by_key[(gfn, size)] = mapping
            self._by_addr[mapping.dma_addr] = mapping
            return mapping.dma_addr

    def map_many(self, gfns: Sequence[int], size: int) -> list[int]:
        """All or nothing: on error the references taken so far are dropped again."""
        with self.lock:
            return all_or_nothing(gfns, lambda gfn: self.map(int(gfn), size), self.unmap)

    def unmap_many(self, dma_addrs: Sequence[int]) -> None:
        """:meth:`unmap` for each address, all or nothing: every address (and how
        often it is listed) is checked against its references first."""
        addrs = [int(a) for a in dma_addrs]
        with self.lock:
            for addr, n in Counter(addrs).items():
                mapping = self._lookup(addr)
                if n > mapping.refs + mapping.pins:
                    raise DmaMapError(
                        f"{n} unmaps of the DMA mapping at {addr:#x} in {self.owner}, which "
                        f"holds {mapping.refs + mapping.pins} references; nothing was unmapped"
                    )
            for addr in addrs:
                self.unmap(addr)

    def _lookup(self, dma_addr: int) -> DmaMapping:
        mapping = self._by_addr.get(dma_addr)
        if mapping is None:
            raise DmaMapError(
                f"no DMA mapping starts at {dma_addr:#x} in {self.owner}; "
                "unmap only addresses dma_map_guest_page returned"
            )
        return mapping

    def pin(self, dma_addr: int) -> None:
        with self.lock:
            self._lookup(dma_addr).pins += 1

    def unmap(self, dma_addr: int) -> None:
        """Drop one reference: map references first, then pins; the last one unmaps."""
        with self.lock:
            mapping = self._lookup(dma_addr)
            if mapping.refs:
                mapping.refs -= 1
            else:
                mapping.pins -= 1
            if mapping.refs or mapping.pins:
                return
            self._drop(mapping)

    def _drop(self, mapping: DmaMapping) -> None:
        del self._by_key[(mapping.gfn, mapping.size)]
        del self._by_addr[mapping.dma_addr]
        for i in range(mapping.size >> PAGE_SHIFT):
            frame = mapping.first_frame + i
            self._frame_refs[frame] -= 1
            if self._frame_refs[frame] == 0:
                del self._frame_refs[frame]
                self.sysmem.unregister(frame)

    def release(self) -> int:
        """Drop every mapping and pin (detach); returns how many mappings there were."""
        with self.lock:
            n = len(self._by_key)
            for mapping in list(self._by_key.values()):
                self._drop(mapping)
            return n
