"""Guest RAM as KVM memslots, with write tracking by read-only slots.

KVM's kernel page-track API is not reachable from user space; the user-space
equivalent is ``KVM_MEM_READONLY``: a guest write into a read-only slot
leaves the guest as a ``KVM_EXIT_MMIO`` write, which the VMM applies to RAM
and reports (``PageTrackMode.WRITE_LANDED``, as KVMGT's notifier sees it).

RAM is one host mapping; its slots are the runs of the *protected* set: each
run of adjacent protected frames is one read-only slot, each gap one writable
slot. A change recomputes the runs and touches only the slots that differ
(delete, then create; KVM cannot resize or re-flag a slot in place). Changes
made inside :meth:`MemslotMap.batch` are applied once, when the batch ends.

The protected set is the tracked set (what the core asked for), or a superset
of it: untracking a page in the middle of a run splits the run, which costs
two more slots. Near ``KVM_CAP_NR_MEMSLOTS`` that split may not fit; the page
then stays write-protected but untracked (its writes still exit, and land in
RAM without reaching the core), so an untrack never fails and the slots never
disagree with what is tracked. Such leftovers are dropped by the next change
that can afford it. Tracking a page whose layout does not fit is refused with
:class:`~gvt_core.errors.PageTrackError`, changing nothing.
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
    #: frames the core tracks, sorted.
    _tracked: list[int] = attrs.field(factory=list, init=False)
    #: frames the slots write-protect (a superset of ``_tracked``), sorted.
    _protected: list[int] = attrs.field(factory=list, init=False)
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

    def protected(self) -> list[int]:
        """Frames the slots write-protect right now (tracked ones and leftovers)."""
        with self.lock:
            return list(self._protected)

    @property
    def slot_count(self) -> int:
        return len(self._slots)

    @property
    def leftover_count(self) -> int:
        """Untracked pages still write-protected (their split did not fit)."""
        return len(self._protected) - len(self._tracked)

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
                self._heal()
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

    def _heal(self) -> None:
        """After a failed change: put the slots back to the layout of what is
        tracked, if KVM lets us; else leave the table dirty for the next change."""
        self.dirty = set(self._slots) != set(self.layout())
        if self.dirty and self._batch_depth == 0:
            try:
                self.apply()
            except Exception:  # the original error is what the caller needs
                self.dirty = True

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

    def layout(self, protected: list[int] | None = None) -> list[Segment]:
        """The segments a protected set (default: the current one) asks for, in
        address order."""
        out: list[Segment] = []
        pos = 0
        frames = self._protected if protected is None else protected
        i, n = 0, len(frames)
        while i < n:
            start = frames[i]
            j = i
            while j + 1 < n and frames[j + 1] == frames[j] + 1:
                j += 1
            if start > pos:
                out.append(Segment(pos, start - pos, False))
            out.append(Segment(start, frames[j] - start + 1, True))
            pos = frames[j] + 1
            i = j + 1
        if pos < self.ram_pages:
            out.append(Segment(pos, self.ram_pages - pos, False))
        return out

    def _fits(self, protected: list[int]) -> bool:
        return len(self.layout(protected)) + 1 <= self.max_slots

    def _protected_target(self) -> list[int] | None:
        """What to protect for the current tracked set: exactly it when its slots
        fit; else it plus the pages protected now (an untrack whose split does not
        fit keeps its page protected); None when neither fits."""
        tracked = self._tracked
        if self._fits(tracked):
            return list(tracked)
        union = sorted(set(tracked) | set(self._protected))
        return union if self._fits(union) else None

    def apply(self) -> None:
        """Make the memslots match the tracked set (see the module docstring)."""
        with self.lock:
            target = self._protected_target()
            if target is None:
                need = len(self.layout(self._tracked)) + 1
                raise PageTrackError(
                    f"tracking these {len(self._tracked)} guest pages needs {need} KVM "
                    f"memslots but this VM has {self.max_slots} (KVM_CAP_NR_MEMSLOTS); "
                    "track fewer scattered pages or untrack some first"
                )
            wanted = self.layout(target)
            wanted_set = set(wanted)
            # every ioctl is recorded as soon as it succeeded: a failing one leaves
            # ``_slots`` what KVM has, and the next apply() picks up from there
            for seg in [seg for seg in self._slots if seg not in wanted_set]:
                slot = self._slots[seg]
                self.vm.set_user_memory_region(slot, 0, seg.first_gfn << PAGE_SHIFT, 0, 0)
                del self._slots[seg]
                self._free_ids.append(slot)
                self.slot_updates += 1
            for seg in wanted:
                if seg in self._slots:
                    continue
                slot = self._free_ids[-1] if self._free_ids else self._next_id
                self.vm.set_user_memory_region(
                    slot,
                    abi.KVM_MEM_READONLY if seg.readonly else 0,
                    seg.first_gfn << PAGE_SHIFT,
                    seg.pages << PAGE_SHIFT,
                    self.host_base + (seg.first_gfn << PAGE_SHIFT),
                )
                if self._free_ids:
                    self._free_ids.pop()
                else:
                    self._next_id += 1
                self._slots[seg] = slot
                self.slot_updates += 1
            self._protected = target
            self.dirty = False

    def release(self) -> None:
        """Delete every RAM slot (VM teardown)."""
        with self.lock:
            for seg, slot in list(self._slots.items()):
                self.vm.set_user_memory_region(slot, 0, seg.first_gfn << PAGE_SHIFT, 0, 0)
            self._slots.clear()
            self._tracked.clear()
            self._protected.clear()
