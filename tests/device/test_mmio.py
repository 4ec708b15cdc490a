"""The register table and BAR0 dispatch (facts 5.1-5.4, 7.2), driven as a guest would."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from gvt_core.device.gvt import Gvt
from gvt_core.device.registers import golden
from gvt_core.device.registers.handlers import ElspSubmission
from gvt_core.device.registers.mmio import Mmio
from gvt_core.device.registers.table import (
    DWORD,
    F_RO,
    F_UNALIGN,
    INFO_BY_DWORD,
    REGISTER_TABLE,
)
from gvt_core.hw import regs

RCS = regs.RENDER_RING_BASE


Guest = Any  # tests/device/conftest.py's Guest


@pytest.fixture
def gvt(sim_gvt: Gvt) -> Gvt:
    return sim_gvt


@pytest.fixture
def guest(make_guest: Callable[..., Guest]) -> Guest:
    return make_guest()


# --- the table ---------------------------------------------------------------------------------


def test_table_is_a_partition_of_named_gen8_registers() -> None:
    names = [i.name for i in REGISTER_TABLE]
    assert len(set(names)) == len(names)
    end = 0
    for info in REGISTER_TABLE:
        assert info.offset >= end and info.offset % 4 == 0 and info.size % 4 == 0
        assert info.offset + info.size <= regs.MMIO_SIZE
        end = info.offset + info.size
    assert len(REGISTER_TABLE) == 885


@pytest.mark.parametrize("engine", sorted(regs.ENGINE_BASES))
def test_every_engine_has_its_execlist_registers(engine: str) -> None:
    base = regs.ENGINE_BASES[engine]
    e = engine.upper()
    expect = {
        regs.RING_TAIL: "RING_TAIL", regs.RING_HEAD: "RING_HEAD", regs.RING_START: "RING_START",
        regs.RING_CTL: "RING_CTL", regs.RING_HWS_PGA: "RING_HWS_PGA",
        regs.RING_MODE_GEN7: "RING_MODE_GEN7", regs.RING_ELSP: "RING_ELSP",
        regs.RING_EXECLIST_STATUS: "RING_EXECLIST_STATUS",
        regs.RING_CONTEXT_STATUS_BUF: "RING_CONTEXT_STATUS_BUF",
        regs.RING_CONTEXT_STATUS_PTR: "RING_CONTEXT_STATUS_PTR",
        regs.RING_PDP_BASE: "RING_PDP", regs.RING_PDP_BASE + 0x1C: "RING_PDP",
        regs.RING_RESET_CTL: "RING_RESET_CTL",
    }
    for off, name in expect.items():
        assert INFO_BY_DWORD[base + off].name == f"{name}({e})"
    csb = INFO_BY_DWORD[base + regs.RING_CONTEXT_STATUS_BUF]
    assert csb.size == 48 and csb.flags & F_RO and csb.ro_mask == DWORD


def test_golden_state_as_the_guest_sees_it(guest: Guest) -> None:
    for base in regs.ENGINE_BASES.values():
        assert guest.r(base + regs.RING_CONTEXT_STATUS_PTR) == regs.CSB_PTR_RESET
        assert guest.r(base + regs.RING_EXECLIST_STATUS) == 0
        assert guest.r(base + regs.RING_EXECLIST_STATUS + 4) == 0
    for bank in range(4):
        assert guest.r(regs.GEN8_GT_ISR_BASE + 0x10 * bank + regs.IRQ_IMR) == 0xFFFF_FFFF
        assert guest.r(regs.GEN8_GT_ISR_BASE + 0x10 * bank + regs.IRQ_IER) == 0
    assert guest.r(regs.SDEIMR) == 0xFFFF_FFFF
    assert guest.r(regs.GEN8_MASTER_IRQ) == 0
    # upstream's emulate_monitor_status_change leaves transcoder A enabled
    assert guest.r(regs.PIPECONF_A) == regs.PIPECONF_ENABLE
    assert guest.r(regs.HSW_PWR_WELL_CTL2) & regs.HSW_PWR_WELL_STATE_ENABLED
    assert guest.r(regs.GEN6_GDRST) == 0


# --- dispatch ----------------------------------------------------------------------------------


def test_plain_register_round_trip_and_partial_sizes(guest: Guest) -> None:
    tail, head = RCS + regs.RING_TAIL, RCS + regs.RING_HEAD
    guest.w(tail, 0x1234_5678)
    assert guest.r(tail) == 0x1234_5678
    guest.w(tail + 1, 0xAB, 1)
    assert guest.r(tail) == 0x1234_AB78
    guest.w(tail + 2, 0xCDEF, 2)
    assert guest.r(tail) == 0xCDEF_AB78
    assert guest.r(tail + 2, 2) == 0xCDEF
    guest.w(tail, 0x1111_2222_3333_4444, 8)  # spans TAIL and HEAD
    assert guest.r(tail) == 0x3333_4444 and guest.r(head) == 0x1111_2222
    assert guest.r(tail, 8) == 0x1111_2222_3333_4444
    assert guest.vgpu.stats.bad_accesses == 0


def test_values_wider_than_the_access_are_truncated(guest: Guest) -> None:
    gvt, vgpu, tail = guest.gvt, guest.vgpu, RCS + regs.RING_TAIL
    for _ in range(2):  # the first touch and the settled fast path
        gvt.emulate_mmio_write(vgpu, guest.bar0 + tail, -1, 4)
        assert guest.r(tail) == 0xFFFF_FFFF
        gvt.emulate_mmio_write(vgpu, guest.bar0 + tail, (1 << 40) | 0x1234, 4)
        assert guest.r(tail) == 0x1234
        gvt.emulate_mmio_write(vgpu, guest.bar0 + tail, 0x1FF, 1)
        assert guest.r(tail) == 0x12FF
        gvt.emulate_mmio_write(vgpu, guest.bar0 + regs.GEN8_GT_ISR_BASE + regs.IRQ_IMR,
                               -2, 4)
        assert guest.r(regs.GEN8_GT_ISR_BASE + regs.IRQ_IMR) == 0xFFFF_FFFE
    assert vgpu.stats.bad_accesses == 0


def test_misaligned_access_reads_all_ones_and_drops_writes(guest: Guest) -> None:
    tail = RCS + regs.RING_TAIL
    guest.w(tail, 0x5555_5555)
    assert guest.r(tail + 1, 2) == 0xFFFF
    assert guest.r(tail + 2, 4) == 0xFFFF_FFFF
    guest.w(tail + 2, 0, 4)
    guest.w(tail + 4, 0, 8)
    assert guest.r(tail) == 0x5555_5555
    assert guest.vgpu.stats.bad_accesses == 4


@pytest.mark.parametrize("size", [0, 3, 5, 7, 9, 16, -4])
def test_odd_sizes_never_raise(guest: Guest, size: int) -> None:
    mmio, tail = guest.vgpu.mmio, RCS + regs.RING_TAIL
    mmio.write(tail, 0xFFFF_FFFF_FFFF_FFFF, 4)
    before = guest.vgpu.stats.bad_accesses
    assert mmio.read(tail, size) == ((1 << (8 * min(size, 8))) - 1 if size > 0 else 0)
    mmio.write(tail, 0, size)
    assert mmio.read(tail, 4) == 0xFFFF_FFFF
    assert guest.vgpu.stats.bad_accesses == before + 2


def test_unaligned_allowed_only_in_f_unalign_registers(guest: Guest) -> None:
    gpio = regs.PCH_GPIO_BASE
    assert INFO_BY_DWORD[gpio].flags & F_UNALIGN
    guest.w(gpio + 2, 0xA1B2_C3D4, 4)  # across a dword boundary, as upstream allows there
    assert guest.r(gpio + 2, 4) == 0xA1B2_C3D4
    assert guest.r(gpio + 4, 2) == 0xA1B2
    assert guest.vgpu.stats.bad_accesses == 0
    # PVINFO is not F_UNALIGN upstream: version_minor | vgt_id across a dword is refused
    # (2 bytes at offset 2 mod 4 stay in one dword; a 4-byte load at +2 crosses into vgt_id)
    assert not INFO_BY_DWORD[regs.VGT_PVINFO_PAGE].flags & F_UNALIGN
    assert guest.r(regs.VGT_PVINFO_PAGE + regs.PVINFO_VERSION_MINOR, 4) == 0xFFFF_FFFF
    assert guest.vgpu.stats.bad_accesses == 1


def test_unknown_register_served_from_vreg_counted_and_logged_once(
    guest: Guest, caplog: pytest.LogCaptureFixture
) -> None:
    off = 0x0FF0  # nothing GEN8 lives here
    assert guest.vgpu.mmio.info(off) is None
    caplog.set_level(logging.INFO, logger="gvt_core.device.registers.mmio")
    guest.w(off, 0xDEAD_BEEF)
    assert guest.r(off) == 0xDEAD_BEEF
    guest.w(off + 2, 0x1, 2)
    assert guest.r(off) == 0x0001_BEEF
    assert guest.vgpu.stats.unknown_mmio == 4
    logged = [r for r in caplog.records if "0xff0" in r.getMessage()]
    assert len(logged) == 1


def test_reserved_hole_reads_all_ones_and_drops_writes(guest: Guest) -> None:
    for off in (regs.MMIO_SIZE, 4 * regs.MiB, regs.GTT_START_OFFSET - 8):
        guest.w(off, 0x1234, 4)
        assert guest.r(off, 4) == 0xFFFF_FFFF
        assert guest.r(off, 8) == 0xFFFF_FFFF_FFFF_FFFF
    assert guest.vgpu.stats.bad_accesses == 9


def test_read_only_registers_ignore_writes(guest: Guest) -> None:
    st = RCS + regs.RING_EXECLIST_STATUS
    guest.vgpu.mmio.set32(st, 0x18)  # the emulator's view
    guest.w(st, 0)
    guest.w(RCS + regs.RING_CONTEXT_STATUS_BUF + 8, 0xFFFF_FFFF)
    assert guest.r(st) == 0x18
    assert guest.r(RCS + regs.RING_CONTEXT_STATUS_BUF + 8) == 0
    assert guest.vgpu.mmio.handlers.counters.ro_writes == 2
    # an ISR has no read-only mask upstream: the guest's write lands in its copy
    guest.w(regs.GEN8_GT_ISR_BASE, 0xFFFF_FFFF)
    assert guest.r(regs.GEN8_GT_ISR_BASE) == 0xFFFF_FFFF


def test_mode_mask_register_changes_only_enabled_bits(guest: Guest) -> None:
    mi_mode = RCS + regs.RING_MI_MODE
    guest.w(mi_mode, (0x00FF << 16) | 0xFFFF)
    assert guest.r(mi_mode) == 0x00FF
    guest.w(mi_mode, (0x0F0F << 16) | 0x0F00)
    assert guest.r(mi_mode) == 0x0FF0
    guest.w(mi_mode, 0x0000_FFFF)  # no mask bits: nothing changes
    assert guest.r(mi_mode) == 0x0FF0


def test_ro_mask_keeps_read_only_bits(guest: Guest) -> None:
    """A writer attached without ``raw`` sees the record's read-only bits merged in."""
    hp, mmio = regs.PCH_PORT_HOTPLUG, guest.vgpu.mmio
    got: list[int] = []
    mmio.attach_register(hp, write=lambda off, v: got.append(v))
    mmio.set32(hp, regs.PORTB_HOTPLUG_STATUS_MASK)  # a hotplug the device saw
    guest.w(hp, 0xFFFF_FFFF)
    status = (regs.PORTA_HOTPLUG_STATUS_MASK | regs.PORTB_HOTPLUG_STATUS_MASK
              | regs.PORTC_HOTPLUG_STATUS_MASK | regs.PORTD_HOTPLUG_STATUS_MASK)
    assert got == [(0xFFFF_FFFF & ~status) | regs.PORTB_HOTPLUG_STATUS_MASK]


def test_hotplug_status_is_the_devices_and_write_one_to_clear(guest: Guest) -> None:
    """The table marks PCH_PORT_HOTPLUG's status fields read-only (only the device sets
    them); the display attaches it raw, so the guest clears them by writing ones."""
    hp = regs.PCH_PORT_HOTPLUG
    status = (regs.PORTA_HOTPLUG_STATUS_MASK | regs.PORTB_HOTPLUG_STATUS_MASK
              | regs.PORTC_HOTPLUG_STATUS_MASK | regs.PORTD_HOTPLUG_STATUS_MASK)
    guest.w(hp, 0xFFFF_FFFF)  # the guest cannot set a status bit
    assert guest.r(hp) == 0xFFFF_FFFF & ~status
    guest.vgpu.mmio.set32(hp, regs.PORTB_HOTPLUG_STATUS_MASK)  # a hotplug the device saw
    guest.w(hp, 0)
    assert guest.r(hp) == regs.PORTB_HOTPLUG_STATUS_MASK  # writing 0 keeps it
    guest.w(hp + 3, 0xFF, 1)  # a byte write elsewhere does not ack port B
    assert guest.r(hp) & regs.PORTB_HOTPLUG_STATUS_MASK == regs.PORTB_HOTPLUG_STATUS_MASK
    guest.w(hp, regs.PORTB_HOTPLUG_STATUS_MASK)
    assert guest.r(hp) & status == 0


def test_registers_are_marked_accessed_on_first_touch(guest: Guest) -> None:
    mmio = guest.vgpu.mmio
    assert RCS + regs.RING_CTL not in mmio.accessed
    guest.r(RCS + regs.RING_CTL)
    guest.w(regs.PIPESRC_A, 1)
    guest.r(regs.VGT_PVINFO_PAGE + 0x40)
    assert {RCS + regs.RING_CTL, regs.PIPESRC_A, regs.VGT_PVINFO_PAGE} <= mmio.accessed
    guest.w(RCS + regs.RING_CTL, 7)
    assert guest.r(RCS + regs.RING_CTL) == 7


# --- engines --------------------------------------------------------------------------------------


def test_csb_pointer_is_a_plain_masked_register(guest: Guest) -> None:
    """Upstream tracks it F_MODE_MASK without a handler; the execlist emulation
    owns its write pointer when it arrives."""
    ptr = RCS + regs.RING_CONTEXT_STATUS_PTR
    assert guest.r(ptr) == regs.CSB_PTR_RESET
    guest.w(ptr, (regs.CSB_READ_PTR_MASK << 16) | (3 << 8))
    assert guest.r(ptr) == (3 << 8) | regs.CSB_PTR_RESET


def test_ring_mode_execlist_enable_needs_a_pv_aware_guest(make_guest: Callable[..., Guest]) -> None:
    a, b = make_guest(), make_guest()
    enable = (regs.GFX_RUN_LIST_ENABLE << 16) | regs.GFX_RUN_LIST_ENABLE
    a.read_pvinfo()
    a.w(RCS + regs.RING_MODE_GEN7, enable)
    assert not a.vgpu.failsafe
    assert a.vgpu.mmio.handlers.execlist_enabled(RCS)
    b.w(RCS + regs.RING_MODE_GEN7, enable)
    assert b.vgpu.failsafe and "PVINFO" in b.vgpu.failsafe_reason
    # upstream stores the write (mode-mask rule) before it gives up on the guest
    assert b.vgpu.mmio.handlers.execlist_enabled(RCS)


def test_ring_mode_bit_1_is_failsafe_and_never_stored(make_guest: Callable[..., Guest]) -> None:
    g = make_guest()
    g.read_pvinfo()
    bit1 = regs.GFX_MODE_LEGACY_BIT
    g.w(RCS + regs.RING_MODE_GEN7, (bit1 << 16) | bit1 | (0x10 << 16) | 0x10)
    assert g.vgpu.failsafe and "bit 1" in g.vgpu.failsafe_reason
    assert g.vgpu.mmio.get32(RCS + regs.RING_MODE_GEN7) == 0x10  # the rest of the write
    h = make_guest()
    h.w(RCS + regs.RING_MODE_GEN7, bit1 << 16)  # clearing it is fine
    assert not h.vgpu.failsafe


def test_ring_reset_ctl_answers_ready_to_reset(guest: Guest) -> None:
    ctl = regs.BLT_RING_BASE + regs.RING_RESET_CTL
    request = (regs.RESET_CTL_REQUEST_RESET << 16) | regs.RESET_CTL_REQUEST_RESET
    guest.w(ctl, request)
    assert guest.r(ctl) & regs.RESET_CTL_READY_TO_RESET
    guest.w(ctl, regs.RESET_CTL_READY_TO_RESET)  # read-only: the guest cannot set it
    assert guest.r(ctl) & regs.RESET_CTL_READY_TO_RESET
    guest.w(ctl, regs.RESET_CTL_REQUEST_RESET << 16)  # request withdrawn
    assert not guest.r(ctl) & regs.RESET_CTL_READY_TO_RESET


def test_failsafe_turns_registers_into_plain_storage(guest: Guest) -> None:
    guest.vgpu.enter_failsafe("test")
    guest.w(regs.GEN6_GDRST, regs.GEN6_GRDOM_RENDER)
    assert guest.r(regs.GEN6_GDRST) == regs.GEN6_GRDOM_RENDER
    guest.w(RCS + regs.RING_EXECLIST_STATUS, 0x55)
    assert guest.r(RCS + regs.RING_EXECLIST_STATUS) == 0x55
    assert guest.vgpu.stats.resets == 0


def test_elsp_collects_four_dwords_in_hardware_order(guest: Guest) -> None:
    got: list[ElspSubmission] = []
    guest.vgpu.mmio.handlers.elsp_sink = got.append
    elsp = regs.BLT_RING_BASE + regs.RING_ELSP
    for dword in (0x1111, 0x2222_0001, 0x3333, 0x4444_0001):
        assert not got
        guest.w(elsp, dword)
    assert got == [ElspSubmission(regs.ENGINE_BCS, 0x3333_4444_0001, 0x1111_2222_0001)]


def test_elsp_backlog_is_bounded_without_a_consumer(guest: Guest) -> None:
    h = guest.vgpu.mmio.handlers
    h.elsp_sink = None  # the execution subsystem's sink detached
    for i in range(4 * (h.ELSP_BACKLOG + 10)):
        guest.w(RCS + regs.RING_ELSP, i)
    assert len(h.elsp_backlog) == h.ELSP_BACKLOG
    assert h.counters.elsp_unclaimed == h.ELSP_BACKLOG + 10


def test_hws_pga_must_lie_in_the_vgpus_graphics_memory(guest: Guest) -> None:
    res = guest.vgpu.resources
    hws = regs.VEBOX_RING_BASE + regs.RING_HWS_PGA
    guest.w(hws, res.high_gm_base + 0x3000)
    assert guest.r(hws) == res.high_gm_base + 0x3000
    guest.w(hws, res.low_gm_base - 0x1000)  # someone else's memory
    assert guest.r(hws) == res.high_gm_base + 0x3000
    assert guest.vgpu.stats.bad_accesses == 1
    guest.w(hws, 0)  # "no status page" is accepted, as upstream does
    assert guest.r(hws) == 0
    assert guest.vgpu.mmio.handlers.hws_pga[regs.ENGINE_VECS] == 0


def test_forcewake_ack_mirrors_request(guest: Guest) -> None:
    req, ack = regs.FORCEWAKE_MT, regs.FORCEWAKE_ACK_HSW
    guest.w(req, 0x0001_0001)
    assert guest.r(ack) == 1
    assert guest.r(req) == 0x0001_0001  # the mask half reads back as written (upstream)
    guest.w(req, 0x0002_0002)
    assert guest.r(ack) == 3
    guest.w(req, 0x0001_0000)
    assert guest.r(ack) == 2 and guest.r(req) == 0x0001_0002
    # the SKL+ forcewake pairs do not exist on BDW: plain untracked storage
    assert guest.vgpu.mmio.info(0xA278) is None


@pytest.mark.parametrize(("name", "engine"), [
    ("GEN8_RTCR", regs.ENGINE_RCS), ("GEN8_M1TCR", regs.ENGINE_VCS),
    ("GEN8_M2TCR", regs.ENGINE_VCS2), ("GEN8_BTCR", regs.ENGINE_BCS),
    ("GEN8_VTCR", regs.ENGINE_VECS)])
def test_tlb_invalidation_reads_done_and_is_pending_for_its_engine(
    guest: Guest, name: str, engine: int
) -> None:
    off = getattr(regs, name)
    guest.w(off, 1)
    assert guest.r(off) == 0
    assert guest.vgpu.mmio.handlers.tlb_pending == 1 << engine


def test_gfx_flush_control_is_plain_storage(guest: Guest) -> None:
    guest.w(regs.GFX_FLSH_CNTL_GEN6, regs.GFX_FLSH_CNTL_EN)
    assert guest.r(regs.GFX_FLSH_CNTL_GEN6) == regs.GFX_FLSH_CNTL_EN


def test_gdrst_engine_reset_asks_the_host_and_reads_complete(guest: Guest) -> None:
    guest.w(RCS + regs.RING_TAIL, 0x40)
    guest.w(regs.GEN6_GDRST, regs.GEN6_GRDOM_RENDER | regs.GEN6_GRDOM_BLT)
    assert guest.r(regs.GEN6_GDRST) == 0
    assert guest.vgpu.stats.resets == 1
    assert guest.r(RCS + regs.RING_TAIL) == 0x40  # an engine reset keeps registers


def test_gdrst_full_is_a_gt_reset(guest: Guest) -> None:
    guest.w(RCS + regs.RING_TAIL, 0x40)
    guest.w(RCS + regs.RING_CONTEXT_STATUS_PTR, 0xFFFF_0300)
    guest.w(regs.PIPESRC_A, 0x31F_0257)
    guest.w(regs.GEN6_GDRST, regs.GEN6_GRDOM_FULL)
    assert guest.r(regs.GEN6_GDRST) == 0
    assert guest.r(RCS + regs.RING_TAIL) == 0
    assert guest.r(RCS + regs.RING_CONTEXT_STATUS_PTR) == regs.CSB_PTR_RESET
    assert guest.r(regs.PIPESRC_A) == 0x31F_0257  # display state survives a GT reset


def test_gdrst_without_a_host_reset_is_recorded() -> None:
    """A vGPU whose host offers no reset_vgpu keeps the request for whoever does."""
    from types import SimpleNamespace

    from gvt_core.device.allocator import VgpuResources
    from gvt_core.device.stats import VgpuStats

    vgpu = SimpleNamespace(
        id=1, gvt=SimpleNamespace(), stats=VgpuStats(), failsafe=False, pv_notified=False,
        resources=VgpuResources(0, 0x100000, 0x100000, 0x100000, (0,)),
    )
    mmio = Mmio(vgpu)
    mmio.write(regs.GEN6_GDRST, regs.GEN6_GRDOM_MEDIA | regs.GEN8_GRDOM_MEDIA2, 4)
    assert mmio.handlers.reset_requests == [(1 << regs.ENGINE_VCS) | (1 << regs.ENGINE_VCS2)]
    assert mmio.read(regs.GEN6_GDRST, 4) == 0


# --- fences ----------------------------------------------------------------------------------------


def _fence(start: int, end_page: int, valid: bool = True) -> int:
    return ((end_page & 0xFFFFF000) << 32) | (start & 0xFFFFF000) | (0x10 << 32) | int(valid)


def test_fence_write_programs_the_backing_host_fence(guest: Guest) -> None:
    res, gpu = guest.vgpu.resources, guest.gvt.gpu
    value = _fence(res.low_gm_base, res.low_gm_base + 0xF000)
    guest.w(regs.FENCE_REG_GEN6_LO + 8 * 2, value, 8)
    assert gpu.fences[res.fences[2]] == value
    assert guest.r(regs.FENCE_REG_GEN6_LO + 8 * 2, 8) == value
    # i915's sequence: low dword off, high dword, low dword on
    v2 = _fence(res.high_gm_base, res.high_gm_base + 0x1F000)
    off = regs.FENCE_REG_GEN6_LO + 8 * 3
    guest.w(off, 0)
    guest.w(off + 4, v2 >> 32)
    guest.w(off, v2 & 0xFFFF_FFFF)
    assert gpu.fences[res.fences[3]] == v2


def test_fence_outside_the_vgpus_memory_is_refused(
    gvt: Gvt, make_guest: Callable[..., Guest]
) -> None:
    a, b = make_guest(), make_guest()
    theirs = b.vgpu.resources.low_gm_base
    a.w(regs.FENCE_REG_GEN6_LO, _fence(theirs, theirs + 0x1000), 8)
    assert gvt.gpu.fences[a.vgpu.resources.fences[0]] == 0
    assert a.vgpu.mmio.handlers.counters.fence_rejected >= 1


def test_out_of_range_fence_from_non_pv_guest_is_failsafe(guest: Guest) -> None:
    n = len(guest.vgpu.resources.fences)
    before = list(guest.gvt.gpu.fences)
    guest.w(regs.FENCE_REG_GEN6_LO + 8 * n, 0x1001, 4)
    assert guest.vgpu.failsafe
    assert guest.gvt.gpu.fences == before


def test_out_of_range_fence_from_pv_guest_is_dropped(guest: Guest) -> None:
    guest.read_pvinfo()
    before = list(guest.gvt.gpu.fences)
    guest.w(regs.FENCE_REG_GEN6_LO + 8 * 15, 0x1001, 8)
    assert guest.r(regs.FENCE_REG_GEN6_LO + 8 * 15, 8) == 0
    assert not guest.vgpu.failsafe
    assert guest.gvt.gpu.fences == before
    assert guest.vgpu.mmio.handlers.counters.fence_out_of_range == 4  # per dword touched


# --- display and power ----------------------------------------------------------------------------


def test_pipeconf_enable_is_mirrored_to_state(guest: Guest) -> None:
    timers = guest.vgpu.display.vblank
    pipeconf_b = regs.PIPECONF_A + regs.PIPE_STRIDE
    guest.w(pipeconf_b, regs.PIPECONF_ENABLE)
    assert guest.r(pipeconf_b) == regs.PIPECONF_ENABLE | regs.PIPECONF_STATE
    assert timers.running(1)  # the display starts pipe B's vblank timer
    guest.w(pipeconf_b, regs.PIPECONF_STATE)  # the state bit is not the guest's to set
    assert guest.r(pipeconf_b) == 0
    assert not timers.running(1)


def test_dspsurf_write_flips_the_live_surface(guest: Guest) -> None:
    surf = guest.vgpu.resources.low_gm_base + 0x10_0000
    guest.w(regs.DSPSURF_A, surf)
    assert guest.r(regs.DSPSURFLIVE_A) == surf
    assert guest.r(regs.PIPE_FLIPCOUNT_G4X_A) == 1
    guest.w(regs.DSPSURFLIVE_A, 0)  # plain storage upstream
    assert guest.r(regs.DSPSURFLIVE_A) == 0


def test_power_well_state_follows_request_and_pcode_completes(guest: Guest) -> None:
    guest.w(regs.HSW_PWR_WELL_CTL2, 0)
    assert guest.r(regs.HSW_PWR_WELL_CTL2) == 0
    guest.w(regs.HSW_PWR_WELL_CTL2, regs.HSW_PWR_WELL_ENABLE_REQUEST)
    assert guest.r(regs.HSW_PWR_WELL_CTL2) == (
        regs.HSW_PWR_WELL_ENABLE_REQUEST | regs.HSW_PWR_WELL_STATE_ENABLED)
    guest.w(regs.GEN6_PCODE_MAILBOX, regs.GEN6_PCODE_READY | regs.GEN6_PCODE_READ_RC6VIDS)
    assert guest.r(regs.GEN6_PCODE_MAILBOX) == 0
    assert guest.r(regs.GEN6_PCODE_DATA) & 1
    guest.w(regs.GEN6_PCODE_MAILBOX, 0x00AB_CD17)  # no READY: still completed, no error
    assert guest.r(regs.GEN6_PCODE_MAILBOX) == 0x00AB_CD00


# --- reset -------------------------------------------------------------------------------------------


def test_mmio_reset_gt_and_dmlr(guest: Guest) -> None:
    mmio = guest.vgpu.mmio
    guest.w(RCS + regs.RING_TAIL, 0x80)
    guest.w(regs.PIPESRC_A, 0x100)
    guest.w(regs.VGT_PVINFO_PAGE + regs.PVINFO_CURSOR_X_HOT, 5)
    mmio.reset(dmlr=False)
    assert guest.r(RCS + regs.RING_TAIL) == 0
    assert guest.r(regs.PIPESRC_A) == 0x100
    mmio.reset(dmlr=True)
    assert guest.r(regs.PIPESRC_A) == 0
    assert guest.r(regs.VGT_PVINFO_PAGE + regs.PVINFO_CURSOR_X_HOT) == 0xFFFF_FFFF
    assert guest.r(regs.VGT_PVINFO_PAGE, 8) == regs.VGT_MAGIC
    page = regs.VGT_PVINFO_PAGE
    assert mmio.vreg[:page] == golden.VGPU_MMIO[:page]


def test_fast_paths_agree_with_the_general_path(make_guest: Callable[..., Guest]) -> None:
    """The per-instance closures are an optimisation of Mmio.read/write, not other semantics."""
    fast, slow = make_guest(), make_guest()
    ops = [(RCS + regs.RING_TAIL, 0x1234_5678), (RCS + regs.RING_MI_MODE, 0x00F0_00FF),
           (RCS + regs.RING_EXECLIST_STATUS, 5), (regs.FORCEWAKE_MT, 0x0001_0001),
           (regs.GEN8_GT_ISR_BASE + regs.IRQ_IMR, 0xFFFF_FFFE), (0x0FF0, 0xABCD),
           (regs.PIPECONF_A, regs.PIPECONF_ENABLE), (regs.DSPSURF_A, 0x80_0000),
           (regs.VGT_PVINFO_PAGE + regs.PVINFO_CURSOR_X_HOT, 3), (regs.GEN6_GDRST, 0)]
    for off, value in ops:
        fast.vgpu.mmio.write(off, value, 4)
        Mmio.write(slow.vgpu.mmio, off, value, 4)
        assert fast.vgpu.mmio.read(off, 4) == Mmio.read(slow.vgpu.mmio, off, 4)
    pv = regs.VGT_PVINFO_PAGE
    skip = {(pv + regs.PVINFO_VGT_ID) >> 2, (pv + regs.PVINFO_AVAIL_RS_MAPPABLE_BASE) >> 2,
            (pv + regs.PVINFO_AVAIL_RS_NONMAPPABLE_BASE) >> 2}  # per-vGPU identity
    a, b = fast.vgpu.mmio.v32, slow.vgpu.mmio.v32
    assert [i for i in range(len(a)) if a[i] != b[i] and i not in skip] == []
    assert fast.vgpu.mmio.accessed == slow.vgpu.mmio.accessed
