"""DMA mappings of guest pages: pinned, identity-addressed, reference counted, accounted.

There is no IOMMU between the simulated GPU and host memory here, so, as
XenGT and AcrnGT do, a guest page's DMA address is its host physical
address (``DmaMode.IDENTITY``). Mapping pins the pages (``mlock``), reads
their frames from pagemap and registers them in the host's system-memory
registry; the last reference to a page (over every mapping that covers it)
unregisters and unpins it again (``munlock``). Like KVMGT's two rb-trees the
table is indexed both by (gfn, size) and by DMA address.

Pinned pages are accounted per VM (:class:`PinAccount`), as VFIO accounts
``vfio_pin_pages`` against each QEMU process's RLIMIT_MEMLOCK: one VM that
points thousands of GGTT entries at its own RAM exhausts its own quota, not
the process-wide limit every other VM also pins from. A map over the quota,
or one the kernel refuses (the process limit), raises :class:`DmaMapError`;
the core then shadows the entry to scratch and counts and logs it for the
vGPU that asked.
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


@attrs.define(eq=False)
class PinAccount:
    """Guest pages one VM holds pinned for DMA, against its quota (pages; None:
    bounded only by the guest's RAM)."""

    vm: str
    limit: int | None
    pinned: int = 0
    #: maps refused because the quota was used up.
    refused: int = 0
    #: maps refused because the kernel would not pin (the process-wide limit).
    pin_failures: int = 0
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def reserve(self, pages: int) -> None:
        """Take ``pages`` more; DmaMapError (counted) when the quota cannot hold them."""
        with self.lock:
            if self.limit is not None and self.pinned + pages > self.limit:
                self.refused += 1
                raise DmaMapError(
                    f"kvmgt guest {self.vm} has {self.pinned} of its {self.limit} pinnable "
                    f"pages pinned; {pages} more are refused (pin quota, kvmgt option pin_quota)"
                )
            self.pinned += pages

    def give_back(self, pages: int) -> None:
        with self.lock:
            self.pinned -= pages


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
    #: the VM's pin account (a fresh unlimited one when not given).
    account: PinAccount | None = None
    lock: threading.RLock = attrs.field(factory=threading.RLock)
    _by_key: dict[tuple[int, int], DmaMapping] = attrs.field(factory=dict, init=False)
    _by_addr: dict[int, DmaMapping] = attrs.field(factory=dict, init=False)
    #: references to each pinned guest page, over every mapping covering it.
    _page_refs: Counter[int] = attrs.field(factory=Counter, init=False)

    def __attrs_post_init__(self) -> None:
        if self.account is None:
            self.account = PinAccount(self.owner, None)

    @property
    def maps(self) -> int:
        return len(self._by_key)

    @property
    def pins(self) -> int:
        return sum(m.pins for m in self._by_key.values())

    @property
    def pinned_pages(self) -> int:
        """Guest pages pinned for this table right now."""
        return len(self._page_refs)

    # --- pinning -----------------------------------------------------------------------
    def _runs(self, gfns: list[int]) -> list[tuple[int, int]]:
        """(first gfn, pages) runs of consecutive frames in ascending ``gfns``."""
        out: list[tuple[int, int]] = []
        for g in gfns:
            if out and out[-1][0] + out[-1][1] == g:
                out[-1] = (out[-1][0], out[-1][1] + 1)
            else:
                out.append((g, 1))
        return out

    def _unpin(self, gfns: list[int]) -> None:
        for first, n in self._runs(gfns):
            hostmem.munlock(self.host_addr_of(first), n * PAGE_SIZE)
        assert self.account is not None
        self.account.give_back(len(gfns))

    def _pin(self, gfn: int, pages: int) -> tuple[list[int], list[int]]:
        """Pin guest frames ``[gfn, gfn + pages)``: (the pages newly pinned, every
        page's host frame). All or nothing."""
        fresh = [g for g in range(gfn, gfn + pages) if g not in self._page_refs]
        assert self.account is not None
        self.account.reserve(len(fresh))
        locked: list[int] = []
        try:
            for first, n in self._runs(fresh):
                err = hostmem.mlock(self.host_addr_of(first), n * PAGE_SIZE)
                if err:
                    self.account.pin_failures += 1
                    raise DmaMapError(
                        f"cannot pin guest frames {first:#x}+{n} of {self.owner} for DMA: "
                        f"mlock failed with errno {err} (the process-wide RLIMIT_MEMLOCK is used "
                        "up; raise it or run with CAP_IPC_LOCK)"
                    )
                locked.extend(range(first, first + n))
            addr = self.host_addr_of(gfn)
            try:
                hostmem.populate_write(addr, pages * PAGE_SIZE)
                frames = hostmem.pagemap().frames(addr, pages)
            except hostmem.FramesUnavailableError as exc:
                raise HookUnsupportedError("kvmgt", "dma_map_guest_page", str(exc)) from exc
        except BaseException:
            for first, n in self._runs(locked):
                hostmem.munlock(self.host_addr_of(first), n * PAGE_SIZE)
            self.account.give_back(len(fresh))
            raise
        return fresh, frames

    # --- mapping -----------------------------------------------------------------------
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
            fresh, frames = self._pin(gfn, pages)
            first = frames[0]
            if size == SIZE_2M and (
                first % PAGES_2M or any(f != first + i for i, f in enumerate(frames))
            ):
                self._unpin(fresh)
                raise DmaMapError(
                    f"guest frames {gfn:#x}..{gfn + pages - 1:#x} are not backed by one "
                    "contiguous, aligned 2 MiB host page; map them as 4 KiB pages"
                )
            fresh_set = set(fresh)
            for i, frame in enumerate(frames):
                if gfn + i in fresh_set:
                    self.sysmem.register(frame, self.page_of(gfn + i), self.owner)
                self._page_refs[gfn + i] += 1
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
        """Forget ``mapping``; pages it was the last reference of are unregistered
        and unpinned."""
        del self._by_key[(mapping.gfn, mapping.size)]
        del self._by_addr[mapping.dma_addr]
        gone: list[int] = []
        for i in range(mapping.size >> PAGE_SHIFT):
            gfn = mapping.gfn + i
            self._page_refs[gfn] -= 1
            if self._page_refs[gfn] == 0:
                del self._page_refs[gfn]
                self.sysmem.unregister(mapping.first_frame + i)
                gone.append(gfn)
        if gone:
            self._unpin(gone)

    def release(self) -> int:
        """Drop every mapping and pin (detach); returns how many mappings there were."""
        with self.lock:
            n = len(self._by_key)
            for mapping in list(self._by_key.values()):
                self._drop(mapping)
            return n
