"""The memslot table near KVM_CAP_NR_MEMSLOTS: tracked pages and slots never disagree.

Each run of tracked pages is one read-only slot and each gap one writable
slot, so untracking a page inside a run costs two more slots. Where they do
not fit the page stays write-protected but untracked, and the next change
that can afford it drops it; tracking that does not fit is refused, changing
nothing. The recorder checks every layout KVM would see (no overlap, all of
RAM covered) after each step of random histories.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from gvt_core.errors import HypervisorCallError, PageTrackError
from gvt_core.hw.sysmem import PAGE_SHIFT, SystemMemory
from gvt_core.mpt.ops import HostContext
from gvt_core.testing.plugin import VgpuToken
from gvt_core.testing.recording import RecordingOps
from gvt_kvmgt import KvmgtBackend
from gvt_kvmgt.memslots import MemslotMap

RAM_PAGES = 64


class SlotRecorder:
    """Stands in for the KVM VM: checks each memslot ioctl as KVM would."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.live: dict[int, tuple[int, int, int]] = {}
        self.calls = 0
        self.fail_after = fail_after

    def set_user_memory_region(self, slot: int, flags: int, gpa: int, size: int, uaddr: int) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise HypervisorCallError("kvmgt", "KVM_SET_USER_MEMORY_REGION", 12)
        if size == 0:
            del self.live[slot]
            return
        assert slot not in self.live, f"slot {slot} created twice"
        for other_gpa, other_size, _ in self.live.values():
            assert gpa + size <= other_gpa or other_gpa + other_size <= gpa, "overlapping slots"
        self.live[slot] = (gpa, size, flags)

    def readonly_frames(self) -> set[int]:
        out: set[int] = set()
        for gpa, size, flags in self.live.values():
            if flags:
                out |= set(range(gpa >> PAGE_SHIFT, (gpa + size) >> PAGE_SHIFT))
        return out


def _consistent(slots: MemslotMap, rec: SlotRecorder) -> None:
    covered = sum(size for _, size, _ in rec.live.values())
    assert covered == RAM_PAGES << PAGE_SHIFT
    assert len(rec.live) + 1 <= slots.max_slots
    protected = rec.readonly_frames()
    assert set(slots.tracked()) <= protected
    assert protected == set(slots.protected())
    assert len(rec.live) == slots.slot_count


def test_untrack_that_would_split_past_the_limit_keeps_the_page_protected() -> None:
    rec = SlotRecorder()
    slots = MemslotMap(rec, 0x7000_0000_0000, RAM_PAGES, max_slots=6)  # type: ignore[arg-type]
    for gfn in (10, 11, 12, 30):
        slots.track(gfn)  # RW [10..12] RW [30] RW = 5 slots + firmware = 6: full
    _consistent(slots, rec)
    slots.untrack(11)  # a split needs 7: the page stays protected, untracked
    assert not slots.is_tracked(11) and 11 in slots.protected()
    assert slots.leftover_count == 1
    _consistent(slots, rec)
    slots.untrack(30)  # frees two slots: the leftover goes too
    assert slots.protected() == [10, 12] and slots.leftover_count == 0
    _consistent(slots, rec)
    with pytest.raises(PageTrackError, match="KVM_CAP_NR_MEMSLOTS"):
        slots.track(40)
    assert slots.tracked() == [10, 12]
    _consistent(slots, rec)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, RAM_PAGES - 1)), max_size=40),
       st.integers(4, 9))
def test_random_histories_keep_slots_and_tracks_consistent(
    ops: list[tuple[bool, int]], max_slots: int
) -> None:
    rec = SlotRecorder()
    slots = MemslotMap(rec, 0x7000_0000_0000, RAM_PAGES, max_slots=max_slots)  # type: ignore[arg-type]
    model: set[int] = set()
    for add, gfn in ops:
        try:
            if add:
                slots.track(gfn)
                model.add(gfn)
            else:
                slots.untrack(gfn)
                model.discard(gfn)
        except PageTrackError:
            pass
        assert set(slots.tracked()) == model
        _consistent(slots, rec)
    slots.untrack_all()
    assert slots.protected() == [] and len(rec.live) == 1


def test_a_failing_ioctl_leaves_the_table_what_kvm_has() -> None:
    rec = SlotRecorder()
    slots = MemslotMap(rec, 0x7000_0000_0000, RAM_PAGES, max_slots=16)  # type: ignore[arg-type]
    rec.fail_after = rec.calls + 2  # the delete goes through, a create fails
    with pytest.raises(Exception, match="KVM_SET_USER_MEMORY_REGION"):
        slots.track(20)
    assert slots.tracked() == []
    assert len(rec.live) == slots.slot_count  # the table still describes KVM's slots
    assert slots.dirty  # KVM refused the repair too: the next change heals it
    rec.fail_after = None
    slots.track(30)
    _consistent(slots, rec)
    assert not slots.dirty


def test_leftover_protected_page_writes_land_without_a_trap(kvm: None) -> None:
    """On a real VM: an untracked page kept write-protected takes the guest's write
    into RAM and reports nothing to the core."""
    backend = KvmgtBackend()
    ops = RecordingOps()
    ctx = HostContext(ops=ops, sysmem=SystemMemory(), name="memslots")
    backend.host_init(ctx)
    vm = backend.create_vm_with(ctx, 1 << 20, "memslots", vcpus=1)
    try:
        handle = backend.attach_vgpu(VgpuToken(id=1), vm)
        slots = vm.memslots
        slots.max_slots = slots.slot_count + 1 + 4  # firmware + RAM + room for 4 more
        for gfn in (100, 101, 102):
            backend.enable_page_track(handle, gfn)
        backend.enable_page_track(handle, 200)
        backend.disable_page_track(handle, 101)  # the split does not fit
        assert 101 in slots.protected() and not slots.is_tracked(101)
        port = vm.port()
        port.store(101 << PAGE_SHIFT, 0x1234, 8)
        port.store(100 << PAGE_SHIFT, 0x5678, 8)
        assert vm.read(101 << PAGE_SHIFT, 8) == (0x1234).to_bytes(8, "little")
        assert [c.args[0] for c in ops.of("page_track_write")] == [100 << PAGE_SHIFT]
        backend.detach_vgpu(handle)
        assert vm.held().total == 0 and slots.protected() == []
    finally:
        vm.close()
        backend.host_exit(ctx)
