"""The pool of out-of-sync snapshot pages (facts 4.5).

A guest PT page written again and again is cheaper to leave unprotected and
reconcile once before the next workload than to trap every store: tracking
changes cost tens of microseconds on a real hypervisor (34-48 us per
protect/unprotect on KVM here). A page taken out of sync keeps a snapshot of
its guest entries in a slot of this pool; resyncing diffs the guest page
against it. The pool is bounded (the kernel preallocates 8192 pages) so a
guest cannot make the host hold unbounded snapshots, and each vGPU holds at
most its :attr:`OosPool.share` of it, so no guest can take every slot; when
the pool is empty or the vGPU is at its share it reclaims one of its own
slots (syncing that page first).
"""

from __future__ import annotations

import threading

import attrs
import numpy as np

from gvt_core.hw import regs

#: the kernel's ``preallocated_oos_pages``.
DEFAULT_OOS_PAGES = 8192
#: guests sharing one host's pool (GVT_MAX_VGPU less the idle vGPU): each may hold
#: at most its share of the slots, so one guest cannot take every snapshot slot.
OOS_SHARES = 7
#: snapshot rows are allocated in chunks of this many, on demand.
_CHUNK_ROWS = 256


@attrs.define(eq=False)
class OosPool:
    """Bounded snapshot slots, each one guest page of 512 entries; shareable by vGPUs."""

    capacity: int = DEFAULT_OOS_PAGES
    _chunks: list[np.ndarray] = attrs.field(factory=list, init=False)
    _free: list[int] = attrs.field(factory=list, init=False)
    _allocated: int = attrs.field(default=0, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def __attrs_post_init__(self) -> None:
        if self.capacity < 0:
            raise ValueError(f"an out-of-sync pool holds >= 0 pages, not {self.capacity}")

    @property
    def share(self) -> int:
        """Slots one vGPU may hold at once (at least 1)."""
        return max(1, self.capacity // OOS_SHARES)

    def alloc(self) -> int | None:
        """A free slot, or None when all ``capacity`` slots are in use."""
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._allocated >= self.capacity:
                return None
            if self._allocated % _CHUNK_ROWS == 0:
                rows = min(_CHUNK_ROWS, self.capacity - self._allocated)
                self._chunks.append(np.zeros((rows, regs.PPGTT_ENTRIES_PER_PAGE), np.uint64))
            slot = self._allocated
            self._allocated += 1
            return slot

    def free(self, slot: int) -> None:
        with self._lock:
            if not 0 <= slot < self._allocated or slot in self._free:
                raise ValueError(f"out-of-sync slot {slot} is not in use")
            self._free.append(slot)

    def snapshot(self, slot: int) -> np.ndarray:
        """The 512 guest entries saved in ``slot`` (a writable view)."""
        return self._chunks[slot // _CHUNK_ROWS][slot % _CHUNK_ROWS]

    @property
    def in_use(self) -> int:
        return self._allocated - len(self._free)
