"""GGTT emulation of one vGPU (facts 4.1, 4.2, 4.6, 4.7, 4.8).

The guest programs its GGTT through BAR0 + 8 MiB, one 8-byte PTE per 4 KiB
page of graphics memory. Only entries inside the vGPU's two GM ranges are
its own; writes elsewhere (the ballooned ranges) are dropped and read back
as 0. The guest's PTEs are kept in a *virtual* GGTT sized to those ranges;
the host GGTT gets a shadow: the guest's entry with its address replaced by
the backend's DMA address of the guest page (every other bit as the guest
wrote it, as upstream), or by the host's scratch page when the page names no
guest RAM or cannot be mapped. A non-present entry becomes the plain scratch
entry, present (departure: upstream clears present there; we keep every host
entry present so the engines and CPU aperture accesses land on scratch
instead of faulting). The GPU therefore only ever
reaches the vGPU's own guest pages or scratch, never a page a guest once
had mapped.

Offsets taken by :meth:`Ggtt.read` / :meth:`Ggtt.write` are relative to the
GGTT start (BAR0 offset - 8 MiB); the MMIO layer subtracts it.

Split 32-bit writes (a guest storing a PTE as two dwords): the virtual entry
takes each half at once, so reads always return what the guest wrote. The
first half written *parks* the entry: its host PTE goes to scratch (the old
mapping is dropped) until the *other* half of the same entry is written,
which completes it and shadows the merged 64-bit value. Rewriting the same
half keeps it parked; a full 8-byte write completes it at once. The halves
seen are one byte per entry in a side array sized to the vGPU's ranges, so
a guest parking every entry it owns holds no more than that.

After :meth:`Ggtt.release` (vGPU destroy) the object refuses to touch the
host GGTT: the entries it owned may already belong to another vGPU.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import numpy as np

from gvt_core.errors import GvtError, InvalidGfnError
from gvt_core.hw import regs

log = logging.getLogger(__name__)

GGTT_BYTES = regs.GGTT_ENTRIES * regs.GTT_ENTRY_SIZE
_PRESENT = regs.GEN8_PAGE_PRESENT
_ADDR = regs.GTT_ADDR_MASK
_GUEST_FLAGS = regs.GGTT_PTE_GUEST_FLAGS
_U64 = (1 << 64) - 1
_U32 = 0xFFFF_FFFF
_PAGE = regs.GTT_PAGE_SIZE


@attrs.define(eq=False)
class GgttCounters:
    #: guest writes / reads of entries outside the vGPU's ranges (dropped / read as 0).
    outside_writes: int = 0
    outside_reads: int = 0
    #: 4-byte halves that parked an entry until its other half arrived.
    parked: int = 0
    #: entries shadowed to a guest page.
    shadowed: int = 0
    #: backend failures to drop a mapping (the mapping is forgotten anyway).
    unmap_failures: int = 0


class Ggtt:
    """The vGPU's slice of the GGTT: virtual entries and their host shadows."""

    def __init__(self, vgpu: Any) -> None:
        self.vgpu = vgpu
        self.mpt = vgpu.mpt
        self.gpu = vgpu.gvt.gpu
        self._stats = vgpu.stats
        res = vgpu.resources
        self.low_first = res.low_gm_base >> regs.GTT_PAGE_SHIFT
        self.low_count = res.low_gm_size >> regs.GTT_PAGE_SHIFT
        self.high_first = res.high_gm_base >> regs.GTT_PAGE_SHIFT
        self.high_count = res.high_gm_size >> regs.GTT_PAGE_SHIFT
        n = self.low_count + self.high_count
        #: the guest's PTEs: low range entries first, then high range entries.
        self.virtual = np.zeros(n, dtype=np.uint64)
        #: DMA address backing each host entry, -1 where the host entry is scratch.
        self.dma = np.full(n, -1, dtype=np.int64)
        #: per slot, the halves of a parked entry written so far (bit 0 low dword,
        #: bit 1 high dword); 0 when the entry is not parked.
        self._partial = np.zeros(n, dtype=np.uint8)
        self.counters = GgttCounters()
        #: set by :meth:`release`: the host entries are no longer this vGPU's.
        self.revoked = False
        self._host_to_scratch()

    # --- geometry ------------------------------------------------------------------------
    def slot(self, index: int) -> int | None:
        """Position of GGTT entry ``index`` in the virtual table; None if not the vGPU's."""
        i = index - self.low_first
        if 0 <= i < self.low_count:
            return i
        i = index - self.high_first
        if 0 <= i < self.high_count:
            return self.low_count + i
        return None

    def _index(self, slot: int) -> int:
        if slot < self.low_count:
            return self.low_first + slot
        return self.high_first + slot - self.low_count

    def _host_to_scratch(self) -> None:
        if self.revoked:
            return
        ggtt, scratch = self.gpu.ggtt, self.gpu.scratch_pte
        ggtt[self.low_first : self.low_first + self.low_count] = scratch
        ggtt[self.high_first : self.high_first + self.high_count] = scratch

    @staticmethod
    def _aligned(offset: int, size: int) -> bool:
        return size in (4, 8) and offset % size == 0 and 0 <= offset <= GGTT_BYTES - size

    # --- guest accesses ---------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        """The guest's view of its PTE (or half of it); 0 outside its ranges."""
        self._stats.ggtt_reads += 1
        return self.read_virtual(offset, size)

    def read_virtual(self, offset: int, size: int) -> int:
        if not self._aligned(offset, size):
            self._stats.bad_accesses += 1
            return (1 << (8 * size)) - 1 if size in (4, 8) else _U64
        slot = self.slot(offset >> regs.GTT_ENTRY_SHIFT)
        if slot is None:
            self.counters.outside_reads += 1
            return 0
        pte = int(self.virtual[slot])
        if size == 8:
            return pte
        return (pte >> (32 * ((offset >> 2) & 1))) & _U32

    def write(self, offset: int, value: int, size: int) -> None:
        """A guest PTE store (facts 4.7)."""
        if self.revoked:
            self._stats.dead_accesses += 1
            return
        self._stats.ggtt_writes += 1
        slot = self._store_virtual(offset, value, size)
        if slot is None:
            return
        index = offset >> regs.GTT_ENTRY_SHIFT
        if size == 8:
            self._partial[slot] = 0
        else:
            seen = int(self._partial[slot]) | (1 << ((offset >> 2) & 1))
            if seen != 3:
                self._partial[slot] = seen
                self.counters.parked += 1
                self._set_host(index, slot, self.gpu.scratch_pte, -1)
                return
            self._partial[slot] = 0
        self._shadow(index, slot, int(self.virtual[slot]))

    def write_virtual(self, offset: int, value: int, size: int) -> None:
        """Failsafe: the guest's value is stored, the host GGTT is not touched."""
        self._stats.ggtt_writes += 1
        self._store_virtual(offset, value, size)

    def _store_virtual(self, offset: int, value: int, size: int) -> int | None:
        if not self._aligned(offset, size):
            self._stats.bad_accesses += 1
            return None
        slot = self.slot(offset >> regs.GTT_ENTRY_SHIFT)
        if slot is None:
            self.counters.outside_writes += 1
            return None
        if size == 8:
            self.virtual[slot] = value & _U64
        else:
            shift = 32 * ((offset >> 2) & 1)
            old = int(self.virtual[slot])
            self.virtual[slot] = (old & ~(_U32 << shift) & _U64) | ((value & _U32) << shift)
        return slot

    # --- shadowing ----------------------------------------------------------------------------
    def _shadow(self, index: int, slot: int, pte: int) -> None:
        if not pte & _PRESENT:
            self._set_host(index, slot, self.gpu.scratch_pte, -1)
            return
        gfn = (pte & _ADDR) >> regs.GTT_PAGE_SHIFT
        handle = self.vgpu.handle
        try:
            dma = (self.mpt.dma_map_guest_page(handle, gfn, _PAGE)
                   if self.mpt.is_valid_gfn(handle, gfn) else None)
        except InvalidGfnError:
            dma = None
        except GvtError as exc:  # the backend refused: out of pin quota, pinning failed
            dma = None
            self._map_failed(gfn, exc)
        if dma is None:
            self._stats.ggtt_to_scratch += 1
            scratch = (self.gpu.scratch_pte & _ADDR) | (pte & _GUEST_FLAGS)
            self._set_host(index, slot, scratch, -1)
            return
        self.counters.shadowed += 1
        self._set_host(index, slot, (dma & _ADDR) | (pte & _GUEST_FLAGS) | _PRESENT, dma)

    def _map_failed(self, gfn: int, exc: GvtError) -> None:
        """Make a refused mapping visible: counted always, logged once per vGPU."""
        stats = self._stats
        stats.dma_map_failures += 1
        if stats.dma_map_failures == 1:
            log.warning("vGPU %d: guest frame %#x cannot be mapped for the GPU (%s); its GGTT "
                        "entry points at scratch; later failures are counted in "
                        "stats.dma_map_failures", self.vgpu.id, gfn, exc)

    def _set_host(self, index: int, slot: int, host_pte: int, dma: int) -> None:
        """Point the host entry at its new target first, then drop the old mapping,
        so the GPU never sees an entry whose page is already unmapped."""
        if self.revoked:
            return
        old = int(self.dma[slot])
        self.dma[slot] = dma
        self.gpu.ggtt[index] = host_pte
        if old >= 0:
            self._unmap(old)

    def _unmap(self, dma: int, quiet: bool = False) -> None:
        try:
            self.mpt.dma_unmap_guest_page(self.vgpu.handle, dma)
        except GvtError as exc:
            self.counters.unmap_failures += 1
            if not quiet:
                log.warning("vGPU %d: dropping GGTT DMA mapping %#x failed: %s",
                            self.vgpu.id, dma, exc)

    # --- translation (facts 4.8) --------------------------------------------------------------
    def gma_to_gpa(self, gma: int) -> int | None:
        """Guest-physical address behind graphics address ``gma``; None if the entry is
        not the vGPU's or not present."""
        if not 0 <= gma < regs.GM_TOTAL:
            return None
        slot = self.slot(gma >> regs.GTT_PAGE_SHIFT)
        if slot is None:
            return None
        pte = int(self.virtual[slot])
        if not pte & _PRESENT:
            return None
        return (pte & _ADDR) | (gma & (_PAGE - 1))

    @property
    def mapped(self) -> int:
        """Host entries currently backed by a guest DMA mapping."""
        return int(np.count_nonzero(self.dma >= 0))

    def host_entry(self, gma: int) -> int:
        """The host GGTT PTE for ``gma`` (diagnostics, tests)."""
        return int(self.gpu.ggtt[gma >> regs.GTT_PAGE_SHIFT])

    # --- life cycle ----------------------------------------------------------------------------
    def reset(self) -> None:
        """DMLR: every entry of the vGPU's ranges back to scratch, every mapping
        dropped, the virtual GGTT cleared."""
        self._host_to_scratch()
        live = np.flatnonzero(self.dma >= 0)
        addrs = [int(a) for a in self.dma[live]]
        self.dma[:] = -1
        self.virtual[:] = 0
        self._partial[:] = 0
        failures = self.counters.unmap_failures
        for addr in addrs:
            self._unmap(addr, quiet=True)
        if self.counters.unmap_failures > failures:
            log.warning("vGPU %d: the backend failed to drop %d GGTT DMA mappings (forgotten "
                        "anyway)", self.vgpu.id, self.counters.unmap_failures - failures)

    def release(self) -> None:
        """vGPU destroy: as :meth:`reset`; nothing stays mapped, and from now on the
        host GGTT is out of reach (its entries may be handed to another vGPU)."""
        self.reset()
        self.revoked = True
