"""Guest RAM as KVM memslots, with write tracking by read-only slots.

KVM's kernel page-track API is not reachable from user space; the user-space
equivalent is ``KVM_MEM_READONLY``: a guest write into a read-only slot
leaves the guest as a ``KVM_EXIT_MMIO`` write, which the VMM applies to RAM
and reports (``PageTrackMode.WRITE_LANDED``, as KVMGT's notifier sees it).

RAM is one host mapping; its slots are the runs of the tracked set: each run
of adjacent tracked frames is one read-only slot, each gap one writable slot.
A change recomputes the runs and touches only the slots that differ (delete,
then create; KVM cannot resize or re-flag a slot in place). Changes made
inside :meth:`MemslotMap.batch` are applied once, when the batch ends.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import attrs

from gvt_core.errors import PageTrackError
from gvt_core.hw.sysmem import PAGE_SHIFT
from gvt_kvmgt import abi
from gvt_kvmgt.kvm import KvmVm

#: slot 0 holds the firmware region; RAM slots use the ids above it.
FIRST_RAM_SLOT = 1


@attrs.frozen
class Segment:
    """A run of guest frames mapped by one memslot."""

    first_gfn: int
    pages: int
    readonly: bool


@attrs.define(eq=False)
class MemslotMap:
    """The memslot layout of one VM's RAM."""

    vm: KvmVm
    #: host virtual address of guest frame 0.
    host_base: int
    ram_pages: int
    #: KVM_CAP_NR_MEMSLOTS of this VM (slot 0 is the firmware's).
    max_slots: int
    lock: threading.RLock = attrs.field(factory=threading.RLock)
    _tracked: list[int] = attrs.field(factory=list, init=False)
    _slots: dict[Segment, int] = attrs.field(factory=dict, init=False)
    _free_ids: list[int] = attrs.field(factory=list, init=False)
    _next_id: int = attrs.field(default=FIRST_RAM_SLOT, init=False)
    _batch_depth: int = attrs.field(default=0, init=False)
    #: set when the tracked set changed but the slots do not show it yet.
    dirty: bool = attrs.field(default=False, init=False)
    #: memslot ioctls issued (for benchmarks and tests).
    slot_updates: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        self.apply()

    # --- queries ----------------------------------------------------------------------
    def is_tracked(self, gfn: int) -> bool:
        i = bisect.bisect_left(self._tracked, gfn)
        return i < len(self._tracked) and self._tracked[i] == gfn

    @property
    def tracked_count(self) -> int:
        return len(self._tracked)

    def tracked(self) -> list[int]:
        with self.lock:
            return list(self._tracked)

    @property
    def slot_count(self) -> int:
        return len(self._slots)

    # --- changes ----------------------------------------------------------------------
    def track(self, gfn: int) -> None:
        with self.lock:
            i = bisect.bisect_left(self._tracked, gfn)
            if i < len(self._tracked) and self._tracked[i] == gfn:
                raise PageTrackError(f"guest frame {gfn:#x} is already write-tracked")
            self._tracked.insert(i, gfn)
            try:
                self._changed()
            except BaseException:
                self._tracked.remove(gfn)
                self.dirty = False
                raise

    def untrack(self, gfn: int) -> None:
        with self.lock:
            i = bisect.bisect_left(self._tracked, gfn)
            if i == len(self._tracked) or self._tracked[i] != gfn:
                raise PageTrackError(
                    f"guest frame {gfn:#x} is not write-tracked; nothing to disable"
                )
            del self._tracked[i]
            self._changed()

    def untrack_all(self) -> int:
        """Drop every track (detach); returns how many there were."""
        with self.lock:
            n = len(self._tracked)
            self._tracked.clear()
            self._changed()
            return n

    def _changed(self) -> None:
        self.dirty = True
        if self._batch_depth == 0:
            self.apply()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Apply every track change made inside the block with one slot update at its end.

        Guest code that runs during the block (other vCPUs) sees the old layout
        until the block ends.
        """
        with self.lock:
            self._batch_depth += 1
        try:
            yield
        finally:
            with self.lock:
                self._batch_depth -= 1
                if self._batch_depth == 0 and self.dirty:
                    self.apply()

    def layout(self) -> list[Segment]:
        """The segments the tracked set asks for, in address order."""
        out: list[Segment] = []
        pos = 0
        tracked = self._tracked
        i, n = 0, len(tracked)
        while i < n:
            start = tracked[i]
            j = i
            while j + 1 < n and tracked[j + 1] == tracked[j] + 1:
                j += 1
            if start > pos:
                out.append(Segment(pos, start - pos, False))
            out.append(Segment(start, tracked[j] - start + 1, True))
            pos = tracked[j] + 1
            i = j + 1
        if pos < self.ram_pages:
            out.append(Segment(pos, self.ram_pages - pos, False))
        return out

    def apply(self) -> None:
        """Make the memslots match the tracked set."""
        with self.lock:
            wanted = self.layout()
            if len(wanted) + 1 > self.max_slots:
                raise PageTrackError(
                    f"tracking these {len(self._tracked)} guest pages needs {len(wanted) + 1} "
                    f"KVM memslots but this VM has {self.max_slots} (KVM_CAP_NR_MEMSLOTS); "
                    "track fewer scattered pages or untrack some first"
                )
            wanted_set = set(wanted)
            stale = [seg for seg in self._slots if seg not in wanted_set]
            for seg in stale:
                slot = self._slots.pop(seg)
                self.vm.set_user_memory_region(slot, 0, seg.first_gfn << PAGE_SHIFT, 0, 0)
                self._free_ids.append(slot)
                self.slot_updates += 1
            for seg in wanted:
                if seg in self._slots:
                    continue
                slot = self._free_ids.pop() if self._free_ids else self._take_id()
                self.vm.set_user_memory_region(
                    slot,
                    abi.KVM_MEM_READONLY if seg.readonly else 0,
                    seg.first_gfn << PAGE_SHIFT,
                    seg.pages << PAGE_SHIFT,
                    self.host_base + (seg.first_gfn << PAGE_SHIFT),
                )
                self._slots[seg] = slot
                self.slot_updates += 1
            self.dirty = False

    def _take_id(self) -> int:
        slot = self._next_id
        self._next_id += 1
        return slot

    def release(self) -> None:
        """Delete every RAM slot (VM teardown)."""
        with self.lock:
            for seg, slot in list(self._slots.items()):
                self.vm.set_user_memory_region(slot, 0, seg.first_gfn << PAGE_SHIFT, 0, 0)
            self._slots.clear()
            self._tracked.clear()
