"""Shadow PPGTT behaviour, case by case, through the real stack on sim."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from gvt_core.device.memory.oos import OosPool
from gvt_core.device.memory.page_track import PageTrack
from gvt_core.device.memory.ppgtt import PpgttHostConfig, PpgttManager, ShadowEnv, host_config
from gvt_core.device.memory.ppgtt_entry import TableKind, levels_for_addressing_mode
from gvt_core.errors import (
    AddressingModeError,
    PpgttShadowError,
    ResourceExhaustedError,
    VgpuStateError,
)
from gvt_core.hw import regs
from gvt_core.hw.sysmem import HostPagePool, SystemMemory
from gvt_core.mpt.loader import load_backend
from gvt_core.mpt.ops import HostContext
from gvt_core.testing.recording import RecordingOps
from tests.ppgtt.guest_tables import (
    IPS,
    MODES,
    PS,
    P,
    Stack,
    check_tracking,
    check_walk,
    open_stack,
)

PML4, PDP, PD, PT = 16, 17, 18, 19
DATA = 1024
ROOTS4 = (PML4 << 12, 0, 0, 0)


@pytest.fixture(params=MODES, ids=[f"{a}-{b}" for a, b in MODES])
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    st = open_stack(*request.param)
    yield st
    st.close()


@pytest.fixture
def fwd() -> Iterator[Stack]:
    st = open_stack("forwarded", "iommu")
    yield st
    st.close()


def tree4(st: Stack, ptes: int = 4) -> None:
    """PML4 -> PDP -> PD -> PT, the PT mapping ``ptes`` data pages from DATA."""
    for g in (PML4, PDP, PD, PT):
        st.zero_page(g)
    st.set_entry(PML4, 0, (PDP << 12) | P)
    st.set_entry(PDP, 0, (PD << 12) | P)
    st.set_entry(PD, 0, (PT << 12) | P)
    for i in range(ptes):
        st.set_entry(PT, i, ((DATA + i) << 12) | P)


def held_nothing(st: Stack) -> bool:
    held = st.vm.held()
    return (held.page_tracks, held.dma_maps, st.gvt.gpu.sysmem.count(st.mgr.env.owner)) == (0, 0, 0)


def test_4_level_shadow_walks_like_the_guest(stack: Stack) -> None:
    tree4(stack)
    stack.g2v(True, 4, ROOTS4)
    mm = stack.mgr.find(4, ROOTS4)
    assert mm is not None and mm.shadowed and stack.mgr.shadow_page_count == 4
    for gma in (0, 0x1234, 0x3FFF, 0x4000, 1 << 21, 1 << 30, 1 << 39, (1 << 48) - 1):
        check_walk(stack, mm, gma)
    check_tracking(stack)
    assert stack.vm.held().page_tracks == 4 and stack.vm.held().dma_maps == 4
    stack.g2v(False, 4, ROOTS4)
    assert stack.mgr.find(4, ROOTS4) is None and held_nothing(stack)


def test_3_level_shadow_with_empty_roots_on_scratch(stack: Stack) -> None:
    for g in (PD, PT):
        stack.zero_page(g)
    stack.set_entry(PD, 3, (PT << 12) | P)
    stack.set_entry(PT, 5, (DATA << 12) | P)
    roots = (0, PD << 12, 0, 0)
    stack.g2v(True, 3, roots)
    mm = stack.mgr.find(3, roots)
    assert mm is not None
    scratch_pd = stack.mgr.scratch.table_address(2)
    assert mm.shadow_roots[0] == mm.shadow_roots[2] == mm.shadow_roots[3] == scratch_pd
    gma = (1 << 30) | (3 << 21) | (5 << 12) | 0x10
    assert stack.mgr.gma_to_gpa(mm, gma) == (DATA << 12) | 0x10
    for g in (gma, gma + 0x1000, 0, 3 << 30):
        check_walk(stack, mm, g)
    with pytest.raises(ValueError):
        stack.mgr.gma_to_dma(mm, 4 << 30)


def test_fresh_shadow_pages_are_prefilled_with_scratch(fwd: Stack) -> None:
    tree4(fwd, ptes=1)
    fwd.g2v(True, 4, ROOTS4)
    scratch = fwd.mgr.scratch
    for kind, level in ((TableKind.PML4, 4), (TableKind.PDP, 3), (TableKind.PD, 2), (TableKind.PT, 1)):
        gfn = {4: PML4, 3: PDP, 2: PD, 1: PT}[level]
        sp = fwd.mgr.shadow_of(gfn, kind)
        assert sp is not None
        assert np.all(sp.ents[1:] == np.uint64(scratch.fill_by_level[level]))
    # the scratch tree chains down to the data page: every level present and RW
    for level in range(1, 5):
        table = fwd.gvt.gpu.sysmem.page(scratch.frames[level])
        ents = np.frombuffer(table, dtype="<u8")
        assert np.all(ents == np.uint64((scratch.frames[level - 1] << 12) | P))


def test_entry_replacement_remaps_and_unmaps(stack: Stack) -> None:
    tree4(stack, ptes=1)
    stack.g2v(True, 4, ROOTS4)
    mm = stack.mgr.find(4, ROOTS4)
    assert mm is not None
    stack.set_entry(PT, 0, ((DATA + 100) << 12) | P)
    check_walk(stack, mm, 0)
    assert stack.vm.held().dma_maps == 1
    stack.set_entry(PT, 0, 0)
    assert stack.mgr.scratch.is_scratch(stack.mgr.gma_to_dma(mm, 0))
    assert stack.vm.held().dma_maps == 0
    # replacing a PDE with one naming the same PT keeps the shared shadow alive
    sp = stack.mgr.shadow_of(PT, TableKind.PT)
    stack.set_entry(PD, 0, (PT << 12) | P | regs.PPGTT_PWT)
    assert stack.mgr.shadow_of(PT, TableKind.PT) is sp and not sp.dead
    stack.set_entry(PD, 0, 0)
    assert stack.mgr.shadow_of(PT, TableKind.PT) is None and not stack.vgpu.page_track.is_tracked(PT)


def test_partial_writes_park_on_scratch_until_sync(stack: Stack) -> None:
    tree4(stack, ptes=1)
    host_config(stack.gvt).enable_out_of_sync = False
    stack.g2v(True, 4, ROOTS4)
    mm = stack.mgr.find(4, ROOTS4)
    assert mm is not None
    new = ((DATA + 77) << 12) | P
    stack.port.store((PT << 12) + 8, new & 0xFFFF_FFFF, 4)
    assert stack.mgr.scratch.is_scratch(stack.mgr.gma_to_dma(mm, 0x1000))
    stack.port.store((PT << 12) + 12, new >> 32, 4)
    assert stack.mgr.scratch.is_scratch(stack.mgr.gma_to_dma(mm, 0x1000))
    stack.mgr.sync()
    check_walk(stack, mm, 0x1000)
    assert stack.mgr.stats.partial_writes == 2 and stack.mgr.stats.post_flushed == 1
    # odd sizes: byte stores are parked the same way and counted
    for i, b in enumerate(((DATA + 78) << 12 | P).to_bytes(8, "little")):
        stack.port.store((PT << 12) + 16 + i, b, 1)
    stack.mgr.sync()
    check_walk(stack, mm, 0x2000)
    assert stack.mgr.stats.odd_writes == 8


def test_64k_bit_is_ignored_on_broadwell(stack: Stack) -> None:
    """vgpu_ips_enabled() is false on graphics version 8: the PT is a 4K PT."""
    tree4(stack, ptes=0)
    stack.set_entry(PD, 0, (PT << 12) | P | IPS)
    stack.set_entry(PT, 16, ((DATA + 32) << 12) | P)
    stack.set_entry(PT, 17, ((DATA + 999) << 12) | P)  # a 4K entry of its own
    stack.g2v(True, 4, ROOTS4)
    mm = stack.mgr.find(4, ROOTS4)
    assert mm is not None
    pd = stack.mgr.shadow_of(PD, TableKind.PD)
    assert pd is not None and not int(pd.ents[0]) & IPS
    assert stack.mgr.shadow_of(PT, TableKind.PT64K) is None
    assert stack.mgr.shadow_of(PT, TableKind.PT) is not None
    for gma in (0x10000 + 0x123, 0x11000 + 0x45, 0x12000):
        check_walk(stack, mm, gma)
    assert stack.mgr.gma_to_gpa(mm, 0x11000) == (DATA + 999) << 12
    assert stack.vm.held().dma_maps == 2 and stack.mgr.stats.huge_64k == 0


def test_64k_entries_split_into_16_entries_where_ips_is_on(stack: Stack) -> None:
    stack.mgr.set_page_sizes(ips_64k=True, huge_2m=False)
    tree4(stack, ptes=0)
    stack.set_entry(PD, 0, (PT << 12) | P | IPS)
    stack.set_entry(PT, 16, ((DATA + 32) << 12) | P)  # 64K page 1 at GM 64K
    stack.set_entry(PT, 17, ((DATA + 999) << 12) | P)  # ignored: not a 64K slot
    stack.g2v(True, 4, ROOTS4)
    mm = stack.mgr.find(4, ROOTS4)
    assert mm is not None
    pd = stack.mgr.shadow_of(PD, TableKind.PD)
    assert pd is not None and not int(pd.ents[0]) & IPS
    sp = stack.mgr.shadow_of(PT, TableKind.PT64K)
    assert sp is not None
    assert np.all(sp.ents[16:32] & np.uint64(regs.GVT_SHADOW_64K_SPLIT))
    for off in range(0x10000, 0x20000, 0x1000):
        check_walk(stack, mm, off + 0x123)
    check_walk(stack, mm, 0)
    assert stack.vm.held().dma_maps == 16
    stack.set_entry(PT, 16, ((DATA + 48) << 12) | P)
    check_walk(stack, mm, 0x1F000)
    assert stack.vm.held().dma_maps == 16


def test_2m_entries_always_split_on_broadwell(stack: Stack) -> None:
    """BDW's GTT has 4K pages only: a 2M entry is split even where the backend could
    map 2M at once (sim can)."""
    assert stack.gvt.mpt.caps.max_dma_page >= 2 * regs.MiB and not stack.mgr.huge_2m
    tree4(stack, ptes=0)
    entry = ((DATA & ~511) << 12) | P | PS | regs.PPGTT_PAT_HUGE | regs.PPGTT_DIRTY | (1 << 60)
    stack.set_entry(PD, 1, entry)
    stack.g2v(True, 4, ROOTS4)
    mm = stack.mgr.find(4, ROOTS4)
    assert mm is not None
    pd = stack.mgr.shadow_of(PD, TableKind.PD)
    assert pd is not None and pd.children is not None
    split = pd.children[1]
    assert split is not None and split.kind is TableKind.SPLIT2M
    pde = int(pd.ents[1])
    assert not pde & PS and not pde & regs.PPGTT_DIRTY and pde & (1 << 60)  # gtt.c's split PDE
    leaf = int(split.ents[5])
    assert leaf & regs.PPGTT_PS and leaf & (1 << 60) and leaf & regs.PPGTT_DIRTY
    assert stack.mgr.stats.huge_2m == 0 and stack.mgr.stats.huge_2m_split == 1
    for gma in ((1 << 21), (1 << 21) + 0x1FFFFF, (1 << 21) + 0x12345):
        check_walk(stack, mm, gma)


def test_2m_entries_kept_huge_where_the_gtt_has_2m_pages(stack: Stack) -> None:
    stack.mgr.set_page_sizes(ips_64k=False, huge_2m=True)
    tree4(stack, ptes=0)
    stack.set_entry(PD, 1, ((DATA & ~511) << 12) | P | PS | regs.PPGTT_PAT_HUGE)
    stack.g2v(True, 4, ROOTS4)
    mm = stack.mgr.find(4, ROOTS4)
    assert mm is not None
    pd = stack.mgr.shadow_of(PD, TableKind.PD)
    assert pd is not None and int(pd.ents[1]) & PS and int(pd.ents[1]) & regs.PPGTT_PAT_HUGE
    assert stack.mgr.stats.huge_2m == 1
    for gma in ((1 << 21), (1 << 21) + 0x1FFFFF, (1 << 21) + 0x12345):
        check_walk(stack, mm, gma)


def test_2m_entries_split_when_the_backend_cannot_map_2m(fwd: Stack) -> None:
    tree4(fwd, ptes=0)
    entry = ((DATA & ~511) << 12) | P | PS | regs.PPGTT_PAT_HUGE
    fwd.set_entry(PD, 1, entry)
    fwd.set_entry(PD, 2, entry)  # the same 2M page again: the split PT is shared
    fwd.g2v(True, 4, ROOTS4)
    mm = fwd.mgr.find(4, ROOTS4)
    assert mm is not None
    pd = fwd.mgr.shadow_of(PD, TableKind.PD)
    assert pd is not None and pd.children is not None
    split = pd.children[1]
    assert split is not None and split.kind is TableKind.SPLIT2M and pd.children[2] is split
    assert not int(pd.ents[1]) & PS
    assert np.all(split.ents & np.uint64(regs.PPGTT_PS))  # PAT moved to bit 7
    assert fwd.vm.held().dma_maps == 512 and fwd.mgr.stats.huge_2m_split == 2
    for gma in ((1 << 21), (2 << 21) + 0x1FFFFF, (1 << 21) + 0x12345):
        check_walk(fwd, mm, gma)
    fwd.g2v(False, 4, ROOTS4)
    assert held_nothing(fwd)


def test_a_1g_entry_fails_shadowing_and_leaves_nothing(fwd: Stack) -> None:
    """GVT doesn't support 1GB entry: the PPGTT is not shadowed at all."""
    tree4(fwd, ptes=1)
    fwd.set_entry(PDP, 1, (0 << 12) | P | PS)
    fwd.g2v(True, 4, ROOTS4)
    assert fwd.mgr.find(4, ROOTS4) is None
    assert fwd.mgr.stats.g2v_refused == 1 and fwd.mgr.stats.shadow_failures == 1
    assert held_nothing(fwd) and fwd.mgr.shadow_page_count == 0
    with pytest.raises(PpgttShadowError, match="1GB entry") as err:
        fwd.mgr.find_or_create(4, ROOTS4)
    assert err.value.gfn == PDP
    assert held_nothing(fwd) and fwd.mgr.mms == []
    fwd.set_entry(PDP, 1, 0)  # the guest fixes its tables: shadowing works again
    mm = fwd.mgr.find_or_create(4, ROOTS4)
    check_walk(fwd, mm, 0)
    fwd.mgr.put(mm)
    assert held_nothing(fwd)


def test_a_1g_entry_written_into_a_live_table_ends_on_scratch(fwd: Stack) -> None:
    tree4(fwd, ptes=1)
    fwd.g2v(True, 4, ROOTS4)
    mm = fwd.mgr.find(4, ROOTS4)
    assert mm is not None
    fwd.set_entry(PDP, 1, (0 << 12) | P | PS)
    assert fwd.mgr.gma_to_gpa(mm, (1 << 30) + 0x42) == 0x42  # the guest walk honours PS
    assert fwd.mgr.scratch.is_scratch(fwd.mgr.gma_to_dma(mm, (1 << 30) + 0x42))
    assert fwd.mgr.stats.huge_1g == 1
    check_walk(fwd, mm, 0)


def test_shadow_entries_keep_the_guests_bits(stack: Stack) -> None:
    """gtt.c copies the guest entry and replaces the address: bits 11:0 and 63:46."""
    tree4(stack, ptes=0)
    high = (1 << 63) | (1 << 50) | (1 << 46)
    stack.set_entry(PT, 3, ((DATA + 3) << 12) | P | regs.PPGTT_PCD | (1 << 9) | high)
    stack.set_entry(PD, 0, (PT << 12) | P | (1 << 62))
    stack.g2v(True, 4, ROOTS4)
    mm = stack.mgr.find(4, ROOTS4)
    assert mm is not None
    pt = stack.mgr.shadow_of(PT, TableKind.PT)
    pd = stack.mgr.shadow_of(PD, TableKind.PD)
    assert pt is not None and pd is not None
    leaf = int(pt.ents[3])
    assert leaf & ~regs.ADDR_MASK_4K == P | regs.PPGTT_PCD | (1 << 9) | high
    assert int(pd.ents[0]) & ~regs.ADDR_MASK_4K == P | (1 << 62)
    check_walk(stack, mm, 0x3000)


def test_ppgtt_levels_come_from_the_addressing_mode() -> None:
    assert levels_for_addressing_mode(regs.LEGACY_32B_CONTEXT) == 3
    assert levels_for_addressing_mode(regs.LEGACY_64B_CONTEXT) == 4
    for mode in (regs.ADVANCED_CONTEXT, regs.ADVANCED_AD_CONTEXT, 7):
        with pytest.raises(AddressingModeError, match="not supported"):
            levels_for_addressing_mode(mode)


def test_hostile_entries_stay_inside_the_vgpu(stack: Stack) -> None:
    tree4(stack, ptes=1)
    outside = stack.port.mem_size >> 12
    stack.set_entry(PT, 1, (outside << 12) | P)  # data page beyond RAM
    stack.set_entry(PD, 1, ((outside + 5) << 12) | P)  # a table beyond RAM
    stack.set_entry(PML4, 1, (PML4 << 12) | P)  # its own table (a loop)
    stack.set_entry(PDP, 1, (PML4 << 12) | P)  # an ancestor
    stack.set_entry(PD, 2, (PD << 12) | P)  # itself, read as a PT
    stack.g2v(True, 4, ROOTS4)
    mm = stack.mgr.find(4, ROOTS4)
    assert mm is not None
    s = stack.mgr.stats
    assert s.invalid_entries >= 1 and s.bad_tables >= 1 and s.multi_kind_pages >= 3
    # one guest page, several shadows: PML4 is also read as a PDP, PD and PT
    kinds = {k for k in TableKind if stack.mgr.shadow_of(PML4, k) is not None}
    assert {TableKind.PML4, TableKind.PDP} <= kinds
    gmas = [0x1000, 1 << 21, (1 << 39), (1 << 39) | (1 << 30), (1 << 30), (2 << 21),
            (2 << 21) | 0x1000, (1 << 39) | (1 << 30) | (1 << 21)]
    for gma in gmas:
        check_walk(stack, mm, gma)
    # a write to the shared page reaches every shadow of it
    stack.set_entry(PML4, 2, (PDP << 12) | P)
    check_walk(stack, mm, 2 << 39)
    check_tracking(stack)
    stack.g2v(False, 4, ROOTS4)
    assert held_nothing(stack)


def test_out_of_sync_after_two_writes_and_resync(stack: Stack) -> None:
    tree4(stack, ptes=1)
    stack.g2v(True, 4, ROOTS4)
    mm = stack.mgr.find(4, ROOTS4)
    assert mm is not None
    ptes = ((np.arange(512, dtype=np.uint64) + np.uint64(DATA + 200)) << np.uint64(12)) | np.uint64(P)
    before = stack.mgr.stats.trapped_writes
    stack.port.mem_write(PT << 12, ptes.astype("<u8").tobytes())
    assert stack.mgr.stats.trapped_writes - before == 2
    assert stack.mgr.is_out_of_sync(PT) and not stack.vgpu.page_track.is_tracked(PT)
    check_tracking(stack)
    stack.mgr.sync()
    assert not stack.mgr.is_out_of_sync(PT) and stack.vgpu.page_track.is_tracked(PT)
    for i in (0, 1, 2, 300, 511):
        check_walk(stack, mm, i << 12)
    assert stack.vm.held().dma_maps == 512
    # the snapshot slot stays: the next write goes out of sync at once
    stack.set_entry(PT, 7, 0)
    assert stack.mgr.is_out_of_sync(PT)
    stack.mgr.sync()
    assert stack.mgr.scratch.is_scratch(stack.mgr.gma_to_dma(mm, 7 << 12))


def test_out_of_sync_switch_per_host(fwd: Stack) -> None:
    host_config(fwd.gvt).enable_out_of_sync = False
    tree4(fwd, ptes=0)
    fwd.g2v(True, 4, ROOTS4)
    before = fwd.mgr.stats.trapped_writes
    fwd.port.mem_write(PT << 12, bytes(4096))
    assert fwd.mgr.stats.trapped_writes - before == 512 and fwd.mgr.out_of_sync_count == 0


def test_out_of_sync_pool_reclaims_own_pages(fwd: Stack) -> None:
    fwd.mgr.config = PpgttHostConfig(oos_pool=OosPool(capacity=1))
    tree4(fwd, ptes=0)
    fwd.set_entry(PD, 1, ((PT + 1) << 12) | P)
    fwd.zero_page(PT + 1)
    fwd.g2v(True, 4, ROOTS4)
    mm = fwd.mgr.find(4, ROOTS4)
    assert mm is not None
    for i in range(3):
        fwd.set_entry(PT, i, ((DATA + i) << 12) | P)
    assert fwd.mgr.is_out_of_sync(PT)
    fwd.port.store(PT << 12, ((DATA + 9) << 12) | P, 8)  # untracked now
    for i in range(3):
        fwd.set_entry(PT + 1, i, ((DATA + 50 + i) << 12) | P)
    # the only slot moved to PT + 1; PT was synced first (its untracked write is shadowed)
    assert fwd.mgr.stats.oos_reclaimed == 1
    assert fwd.mgr.is_out_of_sync(PT + 1) and not fwd.mgr.is_out_of_sync(PT)
    check_walk(fwd, mm, 0)
    fwd.mgr.sync()
    for gma in (0, 0x1000, 1 << 21, (1 << 21) | 0x2000):
        check_walk(fwd, mm, gma)


def test_g2v_references_cannot_drop_a_workloads_reference(fwd: Stack) -> None:
    tree4(fwd, ptes=1)
    fwd.g2v(True, 4, ROOTS4)
    mm = fwd.mgr.find_or_create(4, ROOTS4)  # as a workload would
    fwd.g2v(False, 4, ROOTS4)
    fwd.g2v(False, 4, ROOTS4)  # a hostile extra destroy
    assert fwd.mgr.stats.g2v_unknown == 1
    assert mm.shadowed and fwd.mgr.find(4, ROOTS4) is mm
    fwd.mgr.pin(mm)
    fwd.mgr.put(mm)
    assert mm.shadowed  # still pinned
    fwd.mgr.unpin(mm)
    assert mm.dead and held_nothing(fwd)
    with pytest.raises(VgpuStateError):
        fwd.mgr.pin(mm)


def test_bad_notifications_are_counted(fwd: Stack) -> None:
    fwd.mgr.g2v_create(5, (0, 0, 0, 0))
    fwd.mgr.g2v_destroy(4, (0x1000, 0, 0, 0))
    assert fwd.mgr.stats.g2v_bad == 1 and fwd.mgr.stats.g2v_unknown == 1
    with pytest.raises(ValueError):
        fwd.mgr.find_or_create(2, (0, 0, 0, 0))


def test_limits_on_mms_and_shadow_pages(fwd: Stack) -> None:
    fwd.mgr.max_mms = 2
    fwd.mgr.max_shadow_pages = 3
    tree4(fwd, ptes=1)
    fwd.g2v(True, 4, ROOTS4)
    mm = fwd.mgr.find(4, ROOTS4)
    assert mm is not None and fwd.mgr.shadow_page_count == 3
    assert fwd.mgr.stats.shadow_limit == 1  # the PT ended on scratch
    assert fwd.mgr.scratch.is_scratch(fwd.mgr.gma_to_dma(mm, 0))
    # a new mm reclaims the unpinned one's shadows first
    other = fwd.mgr.find_or_create(3, (PD << 12, 0, 0, 0))
    assert not mm.shadowed and fwd.mgr.stats.mms_reclaimed == 1
    with pytest.raises(ResourceExhaustedError):
        fwd.mgr.find_or_create(3, (PT << 12, 0, 0, 0))
    fwd.g2v(True, 3, (PT << 12, 0, 0, 0))
    assert fwd.mgr.stats.g2v_refused == 1
    fwd.mgr.put(other)
    fwd.mgr.pin(mm)  # re-shadowed on pin
    assert mm.shadowed
    fwd.mgr.unpin(mm)


def test_reset_and_destroy_release_everything(fwd: Stack) -> None:
    tree4(fwd, ptes=8)
    fwd.g2v(True, 4, ROOTS4)
    fwd.g2v(True, 3, (PD << 12, 0, 0, 0))
    assert fwd.vm.held().page_tracks == 4
    fwd.gvt.reset_vgpu(fwd.vgpu, dmlr=False)
    assert fwd.mgr.mms == [] and held_nothing(fwd)
    fwd.g2v(True, 4, ROOTS4)
    owner = fwd.mgr.env.owner
    sysmem = fwd.gvt.gpu.sysmem
    assert sysmem.count(owner) == 4 and sysmem.count(owner + "-scratch") == 5
    mgr = fwd.mgr
    fwd.gvt.destroy_vgpu(fwd.vgpu)
    assert mgr.released and sysmem.count(owner) == 0 and sysmem.count(owner + "-scratch") == 0
    assert mgr.stats.leak_swept == 0


def test_low_level_manager_on_a_bare_backend() -> None:
    """The manager needs only a backend, a page track and host pages (no Gvt)."""
    loaded = load_backend("sim", page_track="landed", dma="identity")
    sysmem = SystemMemory()
    ops = RecordingOps()
    host = HostContext(ops=ops, sysmem=sysmem)
    mpt = loaded.mpt
    mpt.host_init(host)
    vm = mpt.create_vm(host, 8 * regs.MiB, "bare")

    class Token:
        id = 1

    handle = mpt.attach_vgpu(Token(), vm)
    track = PageTrack(mpt, handle)
    pool = HostPagePool(sysmem, mpt.from_virt_to_mfn)
    mgr = PpgttManager(ShadowEnv(mpt, handle, track, sysmem, pool, owner="bare"))
    port = vm.port()
    port.store(PD << 12, (PT << 12) | P, 8)
    port.store(PT << 12, (DATA << 12) | P, 8)
    mm = mgr.find_or_create(3, (PD << 12, 0, 0, 0))
    assert mgr.gma_to_gpa(mm, 0x10) == (DATA << 12) | 0x10
    assert sysmem.read(mgr.gma_to_dma(mm, 0x10), 1) == port.mem_read((DATA << 12) | 0x10, 1)
    port.store(PT << 12, ((DATA + 1) << 12) | P, 8)  # reaches the recording ops, not us
    assert ops.of("page_track_write")
    track.handle_write(PT << 12, (((DATA + 1) << 12) | P).to_bytes(8, "little"))
    assert mgr.gma_to_gpa(mm, 0) == (DATA + 1) << 12
    mgr.release()
    assert vm.held().page_tracks == 0 and vm.held().dma_maps == 0 and sysmem.count() == 0
    mpt.detach_vgpu(handle)
    vm.close()
    mpt.host_exit(host)
