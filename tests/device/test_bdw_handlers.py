"""Handler semantics of the BDW table as upstream handlers.c gives them, driven as a guest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gvt_core.device.interrupt import IrqBank
from gvt_core.device.registers.table import BEHAVIOUR_OWNERS, REGISTER_TABLE
from gvt_core.errors import RegisterBehaviourError
from gvt_core.hw import regs

Guest = Any  # tests/device/conftest.py's Guest


@pytest.fixture
def guest(make_guest: Callable[..., Guest]) -> Guest:
    return make_guest()


# --- what i915 reads while probing a BDW GT2 ---------------------------------------------------


def test_fuses_describe_a_bdw_gt2(guest: Guest) -> None:
    """i915's bdw_sseu_info_init, computed from the guest's reads."""
    fuse2 = guest.r(regs.GEN8_FUSE2)
    slices = (fuse2 & regs.GEN8_F2_S_ENA_MASK) >> regs.GEN8_F2_S_ENA_SHIFT
    ss_mask = ((1 << regs.BDW_MAX_SUBSLICES) - 1) & ~(
        (fuse2 & regs.GEN8_F2_SS_DIS_MASK) >> regs.GEN8_F2_SS_DIS_SHIFT)
    d0, d1, d2 = (guest.r(r) for r in (regs.GEN8_EU_DISABLE0, regs.GEN8_EU_DISABLE1,
                                       regs.GEN8_EU_DISABLE2))
    disabled = [d0 & 0xFFFFFF, (d0 >> 24) | ((d1 & 0xFFFF) << 8), (d1 >> 16) | ((d2 & 0xFF) << 16)]
    eus = 0
    for s in range(3):
        if not slices & (1 << s):
            continue
        for ss in range(regs.BDW_MAX_SUBSLICES):
            if ss_mask & (1 << ss):
                mask = (disabled[s] >> (ss * 8)) & 0xFF
                eus += 8 - bin(mask).count("1")
    assert slices == 1 and ss_mask == 0b111 and eus == 24


def test_straps_show_the_virtual_port_b_and_no_display_fuse(guest: Guest) -> None:
    strap = guest.r(regs.SFUSE_STRAP)
    assert strap & regs.SFUSE_STRAP_DDIB_DETECTED
    assert not strap & (regs.SFUSE_STRAP_DDIC_DETECTED | regs.SFUSE_STRAP_DDID_DETECTED
                        | regs.SFUSE_STRAP_DISPLAY_DISABLED)
    assert guest.r(regs.FUSE_STRAP) == 0  # no display or pipe fused off
    assert not guest.r(regs.DDI_BUF_CTL_A) & regs.DDI_INIT_DISPLAY_DETECTED  # no eDP


def test_engine_reset_handshake_as_i915_does_it(guest: Guest) -> None:
    """gen8_engine_reset_prepare, GDRST, gen8_engine_reset_cancel on each engine."""
    for base in regs.ENGINE_BASES.values():
        ctl = base + regs.RING_RESET_CTL
        guest.w(ctl, (regs.RESET_CTL_REQUEST_RESET << 16) | regs.RESET_CTL_REQUEST_RESET)
        assert guest.r(ctl) & regs.RESET_CTL_READY_TO_RESET
        guest.w(ctl, regs.RESET_CTL_REQUEST_RESET << 16)
        assert not guest.r(ctl) & regs.RESET_CTL_READY_TO_RESET


def test_timestamps_follow_the_host_clock_and_their_upper_dword_follows(guest: Guest) -> None:
    ts = regs.RENDER_RING_BASE + regs.RING_TIMESTAMP
    clock = guest.gvt.clock
    assert guest.r(ts) == clock.now() // 80 & 0xFFFF_FFFF  # 12.5 MHz ticks of the host clock
    a = guest.r(ts)
    clock.advance(800)
    assert guest.r(regs.BLT_RING_BASE + regs.RING_TIMESTAMP) == a + 10  # one counter for all
    guest.vgpu.mmio.handlers.timestamp = lambda: 0x1_2345_6789
    assert guest.r(ts) == 0x2345_6789 and guest.r(ts + 4) == 1


def test_gt_status_and_guc_after_creation(guest: Guest) -> None:
    assert guest.r(regs.GEN6_GT_THREAD_STATUS_REG) == 0
    assert guest.r(regs.GUC_STATUS) == regs.GS_MIA_IN_RESET
    assert guest.r(regs.GUC_STATUS) == 0  # read once, then it clears
    guest.w(regs.GEN6_GDRST, regs.GEN9_GRDOM_GUC)
    assert guest.r(regs.GUC_STATUS) == regs.GS_MIA_IN_RESET


# --- GT handlers ------------------------------------------------------------------------------------


def test_force_nonpriv_takes_only_whitelisted_registers(guest: Guest) -> None:
    slot = regs.RING_FORCE_TO_NONPRIV
    guest.w(slot, 0x2348)  # PS_INVOCATION_COUNT: whitelisted
    assert guest.r(slot) == 0x2348
    guest.w(slot + 4, regs.RENDER_RING_BASE + 0x94)  # RING_NOPID of the engine
    assert guest.r(slot + 4) == regs.RENDER_RING_BASE + 0x94
    guest.w(slot + 8, regs.GEN6_GDRST)  # not whitelisted: dropped
    assert guest.r(slot + 8) == 0
    assert guest.vgpu.mmio.handlers.counters.nonpriv_refused == 1


def test_ips_is_all_engines_or_none(guest: Guest) -> None:
    reg = regs.GEN8_GAMW_ECO_DEV_RW_IA
    guest.w(reg, 0xF)
    assert guest.r(reg) == 0xF
    guest.w(reg, 0x3)
    assert guest.r(reg) == 0xF
    guest.w(reg, 0x100)
    assert guest.r(reg) == 0x100


@pytest.mark.parametrize(("reg", "written", "read"), [
    (regs.GEN6_MBCTL, 0xFF, 0xFF & ~regs.GEN6_MBCTL_ENABLE_BOOT_FETCH),
    (regs.FPGA_DBG, 0x8000_0001, 0x1),
    (regs.EDP_PSR_IMR, 0xFFFF_FFFF, 0),
    (regs.EDP_PSR_IIR, 0x5, 0),
    (regs.GEN7_ERR_INT, 0x3, 0x3),  # plain storage upstream
])
def test_simple_gt_and_display_handlers(guest: Guest, reg: int, written: int, read: int) -> None:
    guest.w(reg, written)
    assert guest.r(reg) == read


# --- display handlers ------------------------------------------------------------------------------


def test_pch_transcoder_state_follows_enable(guest: Guest) -> None:
    guest.w(regs.PCH_TRANSBCONF, regs.TRANS_ENABLE)
    assert guest.r(regs.PCH_TRANSBCONF) == regs.TRANS_ENABLE | regs.TRANS_STATE_ENABLE
    guest.w(regs.PCH_TRANSBCONF, regs.TRANS_STATE_ENABLE)
    assert guest.r(regs.PCH_TRANSBCONF) == 0


def test_fdi_link_training_locks_and_iir_clears(guest: Guest) -> None:
    pipe_b = regs.FDI_PIPE_STRIDE
    guest.vgpu.mmio.set32(regs.FDI_TXA_CTL + pipe_b, regs.FDI_TX_ENABLE)  # TX is untracked
    guest.w(regs.FDI_RXA_CTL + pipe_b, regs.FDI_RX_ENABLE)
    iir = regs.FDI_RXA_IIR + pipe_b
    assert guest.r(iir) == regs.FDI_RX_BIT_LOCK
    guest.vgpu.mmio.set32(regs.FDI_TXA_CTL + pipe_b,
                          regs.FDI_TX_ENABLE | regs.FDI_LINK_TRAIN_PATTERN_2)
    guest.w(regs.FDI_RXA_CTL + pipe_b, regs.FDI_RX_ENABLE | regs.FDI_LINK_TRAIN_PATTERN_2_CPT)
    assert guest.r(iir) == regs.FDI_RX_BIT_LOCK | regs.FDI_RX_SYMBOL_LOCK
    guest.w(iir, regs.FDI_RX_BIT_LOCK)
    assert guest.r(iir) == regs.FDI_RX_SYMBOL_LOCK


def test_ddi_buffer_idle_and_training_patterns(guest: Guest) -> None:
    port_c = 2 * regs.DDI_PORT_STRIDE
    buf = regs.DDI_BUF_CTL_A + port_c
    guest.w(buf, regs.DDI_BUF_CTL_ENABLE | regs.DDI_BUF_IS_IDLE)
    assert guest.r(buf) == regs.DDI_BUF_CTL_ENABLE
    guest.w(buf, 0)
    assert guest.r(buf) == regs.DDI_BUF_IS_IDLE
    guest.w(regs.DP_TP_CTL_A + port_c,
            regs.DP_TP_CTL_LINK_TRAIN_IDLE << regs.DP_TP_CTL_LINK_TRAIN_SHIFT)
    status = regs.DP_TP_STATUS_A + port_c
    assert guest.r(status) & regs.DP_TP_STATUS_IDLE_DONE
    guest.vgpu.mmio.set32(status, regs.DP_TP_STATUS_STICKY | 0x10)
    guest.w(status, (1 << 24) | 0x20)  # clear one sticky bit, set a plain one
    assert guest.r(status) == (regs.DP_TP_STATUS_STICKY & ~(1 << 24)) | 0x20


def test_panel_power_status_follows_control(guest: Guest) -> None:
    guest.w(regs.PCH_PP_CONTROL, regs.PANEL_POWER_ON)
    status = guest.r(regs.PCH_PP_STATUS)
    assert status & regs.PP_ON and status & 0xF == regs.PP_SEQUENCE_STATE_ON_IDLE
    guest.w(regs.PCH_PP_CONTROL, 0)
    assert not guest.r(regs.PCH_PP_STATUS) & regs.PP_ON


def test_lcpll_lock_and_cd_source(guest: Guest) -> None:
    guest.w(regs.LCPLL_CTL, regs.LCPLL_PLL_DISABLE | regs.LCPLL_CD_SOURCE_FCLK)
    v = guest.r(regs.LCPLL_CTL)
    assert not v & regs.LCPLL_PLL_LOCK and v & regs.LCPLL_CD_SOURCE_FCLK_DONE
    guest.w(regs.LCPLL_CTL, 0)
    assert guest.r(regs.LCPLL_CTL) == regs.LCPLL_PLL_LOCK


def test_south_chicken2_mphy_reset_and_crt_force_trigger(guest: Guest) -> None:
    guest.w(regs.SOUTH_CHICKEN2, regs.FDI_MPHY_IOSFSB_RESET_CTL)
    assert guest.r(regs.SOUTH_CHICKEN2) & regs.FDI_MPHY_IOSFSB_RESET_STATUS
    guest.w(regs.PCH_ADPA, regs.ADPA_CRT_HOTPLUG_FORCE_TRIGGER | 0x4)
    assert guest.r(regs.PCH_ADPA) == 0x4


def test_phy_status_registers_read_ready(guest: Guest) -> None:
    for off, value in regs.DPY_REG_READ_VALUES.items():
        guest.w(off, 0)
        assert guest.r(off) == value


def test_sideband_writes_read_back_and_are_bounded(guest: Guest) -> None:
    def sbi_write(where: int, value: int) -> None:
        guest.w(regs.SBI_ADDR, where << regs.SBI_ADDR_OFFSET_SHIFT)
        guest.w(regs.SBI_DATA, value)
        guest.w(regs.SBI_CTL_STAT, (regs.SBI_CMD_CRWR << regs.SBI_OPCODE_SHIFT) | 1)
        assert guest.r(regs.SBI_CTL_STAT) & 0x7 == 0  # not busy, success

    def sbi_read(where: int) -> int:
        guest.w(regs.SBI_ADDR, where << regs.SBI_ADDR_OFFSET_SHIFT)
        guest.w(regs.SBI_CTL_STAT, (regs.SBI_CMD_CRRD << regs.SBI_OPCODE_SHIFT) | 1)
        return int(guest.r(regs.SBI_DATA))

    sbi_write(0x20C, 0xCAFE)
    assert sbi_read(0x20C) == 0xCAFE and sbi_read(0x600) == 0
    for i in range(regs.SBI_REG_MAX + 5):
        sbi_write(0x1000 + 4 * i, i)
    assert len(guest.vgpu.mmio.handlers.sbi) == regs.SBI_REG_MAX
    assert guest.vgpu.mmio.handlers.counters.sbi_dropped == 6


def test_async_flip_completes_at_once_sync_at_vblank(guest: Guest) -> None:
    bank = IrqBank.DE_PIPE_A
    guest.w(bank.imr, 0)
    guest.w(regs.DSPCNTR_A, regs.PLANE_CTL_ASYNC_FLIP)
    guest.w(regs.DSPSURF_A, 0x10_0000)
    assert guest.r(bank.iir) == regs.GEN8_PIPE_PRIMARY_FLIP_DONE
    guest.w(bank.iir, 0xFFFF_FFFF)
    guest.w(regs.SPRSURF_A, 0x20_0000)  # sync sprite flip: no event yet, no flip count
    assert guest.r(bank.iir) == 0
    assert guest.r(regs.SPRSURFLIVE_A) == 0x20_0000
    assert guest.r(regs.PIPE_FLIPCOUNT_G4X_A) == 1


def test_reg_50080_flips_primary_and_sprite(guest: Guest) -> None:
    bank = IrqBank.DE_PIPE_B
    guest.w(bank.imr, 0)
    guest.w(regs.REG_50080_PRIMARY[1], 0x40_0000 | regs.REG50080_FLIP_TYPE_ASYNC)
    assert guest.r(regs.DSPSURFLIVE_A + regs.PIPE_STRIDE) == 0x40_0001
    assert guest.r(bank.iir) == regs.GEN8_PIPE_PRIMARY_FLIP_DONE
    guest.w(regs.REG_50080_SPRITE[1], 0x50_0000)  # sync, pipe B off: live at once, no event
    assert guest.r(regs.SPRSURFLIVE_A + regs.PIPE_STRIDE) == 0x50_0000
    assert guest.vgpu.display.flips.pending[1] == {}
    assert guest.r(bank.iir) == regs.GEN8_PIPE_PRIMARY_FLIP_DONE


def test_edp_transcoder_conf_mirrors_state_without_a_pipe(guest: Guest) -> None:
    guest.w(regs.PIPECONF_EDP, regs.PIPECONF_ENABLE)
    assert guest.r(regs.PIPECONF_EDP) == regs.PIPECONF_ENABLE | regs.PIPECONF_STATE
    assert not guest.vgpu.display.vblank.pipes  # no vblank timer for it


# --- blocks -----------------------------------------------------------------------------------------


def test_mchbar_mirror_and_palettes_are_tracked_blocks(guest: Guest) -> None:
    mmio = guest.vgpu.mmio
    cap = guest.r(regs.GEN6_RP_STATE_CAP)
    assert cap == regs.GEN6_RP_STATE_CAP_RESET
    assert regs.MCHBAR_MIRROR_BASE_SNB in mmio.accessed
    before = guest.vgpu.stats.unknown_mmio
    guest.w(regs.MCHBAR_MIRROR_BASE_SNB + 0x5A00, 0x1234)
    assert guest.r(regs.MCHBAR_MIRROR_BASE_SNB + 0x5A00) == 0x1234
    guest.w(0x4A800 + 0x100, 0xABCDEF)  # LGC_PALETTE(B)
    assert guest.r(0x4A800 + 0x100) == 0xABCDEF
    assert guest.vgpu.stats.unknown_mmio == before
    assert mmio.info(regs.MCHBAR_MIRROR_BASE_SNB + 0x5A00).name == "MCHBAR_MIRROR_BASE_SNB"


# --- behaviour attached by later subsystems -----------------------------------------------------


def test_attach_handler_replaces_the_behaviour_of_every_user(guest: Guest) -> None:
    mmio, h = guest.vgpu.mmio, guest.vgpu.mmio.handlers
    seen: list[tuple[int, int]] = []

    def aux(offset: int, value: int) -> None:
        seen.append((offset, value))
        mmio.set32(offset, value | (1 << 30))  # DONE

    guest.r(regs.DPA_AUX_CH_CTL)  # touched before: the attached handler still takes over
    mmio.attach_handler("w_dp_aux_ch_ctl", aux)
    guest.w(regs.DPA_AUX_CH_CTL, 1 << 31)
    guest.w(regs.PCH_DPC_AUX_CH_CTL + 4, 0x5)
    assert seen == [(regs.DPA_AUX_CH_CTL, 1 << 31), (regs.PCH_DPC_AUX_CH_CTL + 4, 0x5)]
    # (reads of the AUX registers are the display's, attached too: look at the vreg)
    assert mmio.get32(regs.DPA_AUX_CH_CTL) == (1 << 31) | (1 << 30)
    assert callable(h.w_dp_aux_ch_ctl)  # the default stays reachable


def test_attached_handlers_keep_the_tables_read_only_mask(guest: Guest) -> None:
    mmio = guest.vgpu.mmio
    got: list[int] = []
    mmio.attach_handler("w_ring_reset_ctl", lambda off, v: got.append(v))
    mmio.set32(regs.RENDER_RING_BASE + regs.RING_RESET_CTL, 0xA0)
    guest.w(regs.RENDER_RING_BASE + regs.RING_RESET_CTL, 0xFFFF_FFFF)
    assert got == [0x0001_0001 | 0xA0]


def test_attach_register_gives_a_plain_register_behaviour(guest: Guest) -> None:
    mmio = guest.vgpu.mmio
    status = regs.BLT_RING_BASE + regs.RING_EXECLIST_STATUS
    mmio.attach_register(status, read=lambda off: 0x1234)
    assert guest.r(status) == 0x1234
    assert guest.r(status + 4) == 0x1234  # every dword of the record
    mmio.attach_register("RING_CONTEXT_STATUS_PTR(BCS)", write=lambda off, v: mmio.set32(off, 7))
    guest.w(regs.BLT_RING_BASE + regs.RING_CONTEXT_STATUS_PTR, 0xFFFF_FFFF)
    assert guest.r(regs.BLT_RING_BASE + regs.RING_CONTEXT_STATUS_PTR) == 7


def test_attaching_to_what_the_table_lacks_is_a_typed_error(guest: Guest) -> None:
    mmio = guest.vgpu.mmio
    with pytest.raises(RegisterBehaviourError, match="no register"):
        mmio.attach_handler("w_no_such_thing", lambda off, v: None)
    with pytest.raises(RegisterBehaviourError):
        mmio.attach_register(0x0FF0, read=lambda off: 0)
    with pytest.raises(RegisterBehaviourError, match="block"):
        mmio.attach_register(regs.MCHBAR_MIRROR_BASE_SNB, read=lambda off: 0)


def test_every_seam_names_a_handler_of_the_table() -> None:
    used = {h for i in REGISTER_TABLE for h in (i.read, i.write) if h}
    assert set(BEHAVIOUR_OWNERS) <= used
    assert set(BEHAVIOUR_OWNERS.values()) == {"execution", "display"}
