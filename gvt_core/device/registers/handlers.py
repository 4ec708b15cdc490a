"""Register behaviour of one vGPU: upstream's ``handlers.c`` handlers on Broadwell.

The table (:mod:`gvt_core.device.registers.table`) names, for each record, a
read and/or write handler; the methods of :class:`RegisterHandlers` with those
names are bound into the vGPU's dispatch once, at creation. Write handlers take
``(offset, value)`` with ``value`` the whole 32-bit dword (partial writes are
merged and read-only bits restored by the dispatcher first, as upstream's
``intel_vgpu_mmio_reg_rw`` does); read handlers take ``(offset)`` and return
the dword. Both run with the vGPU lock held and never raise for guest input.

Each handler implements what upstream's does to registers. Where the rest of
upstream's handler belongs to a subsystem that arrives with its own issue
(execlist submission, the display's AUX/GMBUS transactions and vblank timer),
the handler here does the register part and hands over through a sink or is
replaced by that subsystem with :meth:`Mmio.attach_handler` (the display
replaces its handlers on every vGPU)
(:data:`~gvt_core.device.registers.table.BEHAVIOUR_OWNERS` lists them).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from gvt_core.device.registers.table import DWORD, INFO_BY_DWORD, REGISTER_TABLE, MmioInfo
from gvt_core.hw import regs
from gvt_core.hw.timestamp import cs_timestamp

if TYPE_CHECKING:
    from gvt_core.device.registers.mmio import Mmio

log = logging.getLogger(__name__)

_MASK_SHIFT = regs.MASKED_WRITE_SHIFT


def masked_enabled(value: int, bit: int) -> bool:
    """Upstream's ``IS_MASKED_BITS_ENABLED``: the bit and its mask bit are both set."""
    both = (bit << _MASK_SHIFT) | bit
    return value & both == both


def masked_disabled(value: int, bit: int) -> bool:
    """``IS_MASKED_BITS_DISABLED``: the mask bit is set and the bit clear."""
    return value & ((bit << _MASK_SHIFT) | bit) == bit << _MASK_SHIFT


def masked_update(old: int, value: int) -> int:
    """A write to a mode-mask register (upstream's post-write step): bits 15:0 change
    where their mask bit (31:16) is set; the stored upper half keeps its old value."""
    mask = value >> _MASK_SHIFT
    return ((old & ~mask) | (value & mask)) & DWORD


@attrs.frozen
class ElspSubmission:
    """Two context descriptors the guest wrote through an engine's ELSP port."""

    engine: int
    #: element 0 (written last) and element 1.
    desc0: int
    desc1: int


ENGINE_BY_BASE: dict[int, int] = {
    base: regs.ENGINE_IDS[name] for name, base in regs.ENGINE_BASES.items()
}
#: TLB invalidation register -> engine id (gvt_reg_tlb_control_handler; facts 0.1 #1).
TLB_ENGINE: dict[int, int] = {
    regs.GEN8_RTCR: regs.ENGINE_RCS,
    regs.GEN8_M1TCR: regs.ENGINE_VCS,
    regs.GEN8_M2TCR: regs.ENGINE_VCS2,
    regs.GEN8_BTCR: regs.ENGINE_BCS,
    regs.GEN8_VTCR: regs.ENGINE_VECS,
}
#: registers a guest may make reachable from unprivileged batches (handlers.c
#: ``force_nonpriv_white_list``), plus the engine's own RING_NOPID.
FORCE_NONPRIV_WHITELIST = frozenset((
    0xD80, 0x20EC, 0x2248, 0x2340, 0x2348, 0x2350, 0x2580, 0x2690, 0x2694, 0x2698, 0x2754,
    0x28A0, 0x4DE0, 0x4DE4, 0x4DFC, 0x7010, 0x7014, 0x7300, 0x7304, 0x7700, 0x7704, 0x7708,
    0x770C, 0x83A8, 0xB110, 0xB118, 0xE100, 0xE18C, 0xE48C, 0xE5F4, 0x64844,
))
_RING_NOPID = 0x94
_TIMESTAMPS = (regs.RING_TIMESTAMP, regs.RING_TIMESTAMP_UDW)


@attrs.define(eq=False)
class HandlerCounters:
    """What the handlers saw of the guest (diagnostics; never reset on the hot path)."""

    ro_writes: int = 0
    bad_gm_writes: int = 0
    fence_out_of_range: int = 0
    fence_rejected: int = 0
    elsp_submissions: int = 0
    elsp_unclaimed: int = 0
    engine_reset_requests: int = 0
    tlb_invalidations: int = 0
    flips: int = 0
    #: FORCE_TO_NONPRIV writes naming a register outside the whitelist (dropped).
    nonpriv_refused: int = 0
    #: IPS settings GAMW_ECO_DEV_RW_IA refused (not all engines or none).
    ips_refused: int = 0
    #: sideband writes dropped because the vGPU's SBI cache was full.
    sbi_dropped: int = 0


class RegisterHandlers:
    """The register handlers of one vGPU (bound into its dispatch dicts once)."""

    #: ELSP submissions kept while nobody consumes them (bounded: a guest
    #: cannot grow host memory by writing ELSP forever).
    ELSP_BACKLOG = 64

    def __init__(self, mmio: Mmio) -> None:
        self.mmio = mmio
        self.vgpu = mmio.vgpu
        self.v32 = mmio.v32
        self.counters = HandlerCounters()
        self._elsp_dwords: dict[int, list[int]] = {e: [] for e in ENGINE_BY_BASE.values()}
        #: consumer of ELSP submissions (the execlist emulation); None -> kept in backlog.
        self.elsp_sink: Callable[[ElspSubmission], None] | None = None
        self.elsp_backlog: deque[ElspSubmission] = deque(maxlen=self.ELSP_BACKLOG)
        #: engine masks of GDRST requests when the host has no reset_vgpu.
        self.reset_requests: list[int] = []
        #: engines whose TLB the guest asked to invalidate (bit per engine id); the
        #: execution layer flushes and clears them when it next runs the engine.
        self.tlb_pending = 0
        #: the guest's hardware-status-page addresses, by engine id (hws_pga_write).
        self.hws_pga: dict[int, int] = {}
        #: the sideband registers the guest wrote (write_virtual_sbi_register).
        self.sbi: dict[int, int] = {}
        #: the command-streamer timestamp source (12.5 MHz ticks on gen8).
        self.timestamp: Callable[[], int] = cs_timestamp

    def reset(self) -> None:
        """Forget half-written ELSP ports and TLB requests (vGPU reset)."""
        for port in self._elsp_dwords.values():
            port.clear()
        self.elsp_backlog.clear()
        self.tlb_pending = 0
        self.hws_pga.clear()

    # --- generic rules --------------------------------------------------------------
    def w_drop(self, offset: int, value: int) -> None:
        """A write to a register whose read-only mask is all ones."""
        self.counters.ro_writes += 1

    def w_masked(self, offset: int, value: int) -> None:
        i = offset >> 2
        self.v32[i] = masked_update(self.v32[i], value)

    def w_ro_mask(self, offset: int, value: int) -> None:
        ro = INFO_BY_DWORD[offset].ro_mask
        i = offset >> 2
        self.v32[i] = (self.v32[i] & ro) | (value & ~ro & DWORD)

    def _store(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] = value

    # --- interrupts (interrupt.c; facts 6.4 with 0.1 #7) ------------------------------
    def w_imr(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] = value
        self.vgpu.irq.check_pending()

    def w_ier(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] = value
        self.vgpu.irq.ier_written(offset)

    def w_iir(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] &= ~value & DWORD
        self.vgpu.irq.iir_written(offset)

    def w_master_irq(self, offset: int, value: int) -> None:
        self.vgpu.irq.write_master(value)

    # --- engines ----------------------------------------------------------------------
    def r_mmio_from_hw(self, offset: int) -> int:
        """``mmio_read_from_hw``: timestamps come from the GPU's clock (``timestamp``:
        the execution layer sets the host clock's, the one the engines write; the
        host's monotonic clock until then); the other engine registers (ACTHD,
        INSTDONE) read the virtual copy, as the simulated engines model neither."""
        if offset & 0xFFF in _TIMESTAMPS and offset & ~0xFFF in ENGINE_BY_BASE:
            ticks = self.timestamp()
            self.v32[offset >> 2] = (ticks if offset & 0xFFF == regs.RING_TIMESTAMP
                                     else ticks >> 32) & DWORD
        return self.v32[offset >> 2]

    def w_ring_mode(self, offset: int, value: int) -> None:
        """``ring_mode_mmio_write``: masked write without bit 1, then failsafe for a
        guest that sets bit 1 or turns on PPGTT / execlists without reading PVINFO."""
        legacy = (regs.GFX_MODE_LEGACY_BIT << _MASK_SHIFT) | regs.GFX_MODE_LEGACY_BIT
        i = offset >> 2
        self.v32[i] = masked_update(self.v32[i], value & ~legacy)
        if masked_enabled(value, regs.GFX_MODE_LEGACY_BIT):
            self.vgpu.enter_failsafe(
                "guest set RING_MODE bit 1 (legacy ring-buffer mode is not virtualised)"
            )
            return
        if (masked_enabled(value, regs.GFX_PPGTT_ENABLE)
                or masked_enabled(value, regs.GFX_RUN_LIST_ENABLE)) and not self.vgpu.pv_notified:
            self.vgpu.enter_failsafe(
                "guest enabled PPGTT/execlist mode in RING_MODE without reading PVINFO "
                "(not a GVT-g aware driver)"
            )

    def execlist_enabled(self, engine_base: int) -> bool:
        return bool(self.v32[(engine_base + regs.RING_MODE_GEN7) >> 2] & regs.GFX_RUN_LIST_ENABLE)

    def w_elsp(self, offset: int, value: int) -> None:
        engine = ENGINE_BY_BASE[offset & ~0xFFF]
        port = self._elsp_dwords[engine]
        port.append(value)
        if len(port) < 4:
            return
        # hardware order: element 1 high, element 1 low, element 0 high, element 0 low
        sub = ElspSubmission(engine, (port[2] << 32) | port[3], (port[0] << 32) | port[1])
        port.clear()
        self.counters.elsp_submissions += 1
        if self.elsp_sink is not None:
            self.elsp_sink(sub)
        else:
            self.counters.elsp_unclaimed += 1
            self.elsp_backlog.append(sub)

    def w_ring_reset_ctl(self, offset: int, value: int) -> None:
        """``ring_reset_ctl_write``: a reset request is answered with READY_TO_RESET
        (the read-only bits were merged in by the dispatcher)."""
        if masked_enabled(value, regs.RESET_CTL_REQUEST_RESET):
            value |= regs.RESET_CTL_READY_TO_RESET
        elif value & (regs.RESET_CTL_REQUEST_RESET << _MASK_SHIFT):
            value &= ~regs.RESET_CTL_READY_TO_RESET & DWORD
        self.v32[offset >> 2] = value

    def w_hws_pga(self, offset: int, value: int) -> None:
        """``hws_pga_write``: 0 (no page) or a page inside the vGPU's graphics memory."""
        if value and not self.vgpu.resources.gm_valid(value, regs.GTT_PAGE_SIZE):
            self.counters.bad_gm_writes += 1
            self.vgpu.stats.bad_accesses += 1
            return
        self.hws_pga[ENGINE_BY_BASE[offset & ~0xFFF]] = value
        self.v32[offset >> 2] = value

    def w_tlb_control(self, offset: int, value: int) -> None:
        """``gvt_reg_tlb_control_handler``: the register reads 0; the invalidation is
        done for the engine before the vGPU next runs on it."""
        self.v32[offset >> 2] = 0
        self.tlb_pending |= 1 << TLB_ENGINE[offset]
        self.counters.tlb_invalidations += 1

    def w_force_nonpriv(self, offset: int, value: int) -> None:
        """``force_nonpriv_write``: only whitelisted registers (or RING_NOPID) may be
        opened to unprivileged batches; anything else is dropped."""
        target = value & regs.RING_FORCE_TO_NONPRIV_ADDRESS_MASK
        base = offset & ~0xFFF
        if target in FORCE_NONPRIV_WHITELIST or target == base + _RING_NOPID:
            self.v32[offset >> 2] = value
            return
        self.counters.nonpriv_refused += 1
        self.vgpu.stats.bad_accesses += 1

    def w_gamw_eco_dev_rw_ia(self, offset: int, value: int) -> None:
        """64K pages (IPS) are enabled for all engines or none; a mix is refused."""
        ips = value & regs.GAMW_ECO_ENABLE_64K_IPS_FIELD
        if ips not in (0, regs.GAMW_ECO_ENABLE_64K_IPS_FIELD):
            self.counters.ips_refused += 1
            return
        self.v32[offset >> 2] = value

    def w_gdrst(self, offset: int, value: int) -> None:
        """Software reset request; the register reads 0 (reset complete) afterwards."""
        if value & regs.GEN6_GRDOM_FULL:
            mask = regs.ALL_ENGINES_MASK
        else:
            mask = 0
            for bit, engines in regs.GDRST_ENGINE_BITS.items():
                if value & bit:
                    mask |= engines
            if value & regs.GEN9_GRDOM_GUC:
                self.v32[regs.GUC_STATUS >> 2] |= regs.GS_MIA_IN_RESET
        self.v32[offset >> 2] = 0
        if not mask:
            return
        self.counters.engine_reset_requests += 1
        reset = getattr(self.vgpu.gvt, "reset_vgpu", None)
        if reset is None:
            self.reset_requests.append(mask)
            return
        reset(self.vgpu, dmlr=False, engine_mask=mask)

    def r_guc_status(self, offset: int) -> int:
        """Reads MIA_IN_RESET once, then it clears."""
        value = self.v32[offset >> 2]
        self.v32[offset >> 2] = value & ~regs.GS_MIA_IN_RESET
        return value

    def w_mul_force_wake(self, offset: int, value: int) -> None:
        """``mul_force_wake_write`` (FORCEWAKE_MT): the low half is a masked update and
        the upper half keeps the mask written; the ack mirrors the low half."""
        old = self.v32[offset >> 2]
        mask = value >> _MASK_SHIFT
        new = (value & 0xFFFF_0000) | (old & 0xFFFF & ~mask) | (value & mask)
        self.v32[offset >> 2] = new
        self.v32[regs.FORCEWAKE_ACK_HSW >> 2] = new & 0xFFFF

    def w_mailbox(self, offset: int, value: int) -> None:
        """``mailbox_write``: every PCODE command completes at once without error;
        the RC6 voltage-ID read answers with bit 0 set."""
        if value & regs.GEN6_PCODE_COMMAND_MASK == regs.GEN6_PCODE_READ_RC6VIDS:
            self.v32[regs.GEN6_PCODE_DATA >> 2] |= 0x1
        value &= ~(regs.GEN6_PCODE_READY | regs.GEN6_PCODE_ERROR_MASK) & DWORD
        self.v32[offset >> 2] = value

    def w_mbctl(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] = value & ~regs.GEN6_MBCTL_ENABLE_BOOT_FETCH & DWORD

    def w_fpga_dbg(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] = value & ~regs.FPGA_DBG_RM_NOCLAIM & DWORD

    # --- fences (facts 2.2) --------------------------------------------------------------
    def _fence_index(self, offset: int) -> int | None:
        """The virtual fence index, or None (counted) if the vGPU does not own it."""
        index = (offset - regs.FENCE_REG_GEN6_LO) >> 3
        if index < len(self.vgpu.resources.fences):
            return index
        self.counters.fence_out_of_range += 1
        if not self.vgpu.pv_notified:
            self.vgpu.enter_failsafe(
                f"guest touched fence register {index} beyond its "
                f"{len(self.vgpu.resources.fences)} fences without reading PVINFO"
            )
        else:
            self.vgpu.stats.bad_accesses += 1
        return None

    def r_fence(self, offset: int) -> int:
        if self._fence_index(offset) is None:
            return 0
        return self.v32[offset >> 2]

    def w_fence(self, offset: int, value: int) -> None:
        """Program the host fence behind virtual fence ``index``. Departure from
        upstream (which writes any value): a valid fence must lie inside the
        vGPU's own graphics memory, else the host fence is cleared, because a
        fence over another vGPU's range would retile that vGPU's aperture."""
        index = self._fence_index(offset)
        if index is None:
            return
        self.v32[offset >> 2] = value
        lo_i = (regs.FENCE_REG_GEN6_LO >> 2) + 2 * index
        lo, hi = self.v32[lo_i], self.v32[lo_i + 1]
        host = 0
        if lo & regs.FENCE_VALID:
            start = lo & regs.FENCE_PAGE_MASK
            end = (hi & regs.FENCE_PAGE_MASK) + regs.GTT_PAGE_SIZE
            if end > start and self.vgpu.resources.gm_valid(start, end - start):
                host = (hi << 32) | lo
            else:
                self.counters.fence_rejected += 1
                self.vgpu.stats.bad_accesses += 1
        else:
            host = (hi << 32) | lo
        self.vgpu.gvt.gpu.write_fence(self.vgpu.resources.fences[index], host)

    # --- display: pipes, planes, flips (defaults; the display subsystem replaces them) -----------
    # Every vGPU's display (``vgpu.py`` ``route_display``) attaches its own behaviour to
    # these names: vblank timers, flips latched at vblank, flip-done events. What stays
    # here is upstream's register part, for a register file without a display.
    def w_pipeconf(self, offset: int, value: int) -> None:
        """``pipeconf_mmio_write``: the state bit follows the enable bit."""
        value &= ~regs.PIPECONF_STATE & DWORD
        if value & regs.PIPECONF_ENABLE:
            value |= regs.PIPECONF_STATE
        self.v32[offset >> 2] = value

    def _flip(self, pipe: int, plane_bit: int, value: int) -> None:
        """A surface write: the live surface follows; a primary flip is counted."""
        if plane_bit == 1:
            self.v32[(regs.DSPSURFLIVE_A + regs.PIPE_STRIDE * pipe) >> 2] = value
            count = (regs.PIPE_FLIPCOUNT_G4X_A + regs.PIPE_STRIDE * pipe) >> 2
            self.v32[count] = (self.v32[count] + 1) & DWORD
        else:
            self.v32[(regs.SPRSURFLIVE_A + regs.PIPE_STRIDE * pipe) >> 2] = value
        self.counters.flips += 1

    def w_pri_surf(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] = value
        self._flip((offset - regs.DSPSURF_A) // regs.PIPE_STRIDE, 1, value)

    def w_spr_surf(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] = value
        self._flip((offset - regs.SPRSURF_A) // regs.PIPE_STRIDE, 2, value)

    def w_reg50080(self, offset: int, value: int) -> None:
        """The flip register pair at 0x50080: primary or sprite surface of a pipe."""
        self.v32[offset >> 2] = value
        if offset in regs.REG_50080_PRIMARY:
            self._flip(regs.REG_50080_PRIMARY.index(offset), 1, value)
        else:
            self._flip(regs.REG_50080_SPRITE.index(offset), 2, value)

    # --- display: DP AUX and GMBUS (transactions: the display subsystem) ------------------------
    def r_gmbus(self, offset: int) -> int:
        """Plain storage until the display subsystem attaches its GMBUS controller."""
        return self.v32[offset >> 2]

    def w_gmbus(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] = value

    def w_dp_aux_ch_ctl(self, offset: int, value: int) -> None:
        """Plain storage until the display subsystem attaches its DP AUX channels."""
        self.v32[offset >> 2] = value

    # --- display: ports, links, PCH --------------------------------------------------------------
    def w_transconf(self, offset: int, value: int) -> None:
        if value & regs.TRANS_ENABLE:
            value |= regs.TRANS_STATE_ENABLE
        else:
            value &= ~regs.TRANS_STATE_ENABLE & DWORD
        self.v32[offset >> 2] = value

    def w_fdi_rx_iir(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] &= ~value & DWORD

    def _fdi_trained(self, pipe: int, pattern: int) -> bool:
        """``check_fdi_rx_train_status``: TX and RX both enabled on ``pattern``, unless
        the guest masked the lock bit it would report."""
        stride = regs.FDI_PIPE_STRIDE * pipe
        if pattern == 1:
            rx_bits, tx_bits, lock = (regs.FDI_LINK_TRAIN_PATTERN_1_CPT,
                                      regs.FDI_LINK_TRAIN_PATTERN_1, regs.FDI_RX_BIT_LOCK)
        else:
            rx_bits, tx_bits, lock = (regs.FDI_LINK_TRAIN_PATTERN_2_CPT,
                                      regs.FDI_LINK_TRAIN_PATTERN_2, regs.FDI_RX_SYMBOL_LOCK)
        if self.v32[(regs.FDI_RXA_IMR + stride) >> 2] & lock:
            return False
        rx_check = regs.FDI_RX_ENABLE | rx_bits
        tx_check = regs.FDI_TX_ENABLE | tx_bits
        return (self.v32[(regs.FDI_TXA_CTL + stride) >> 2] & tx_check == tx_check
                and self.v32[(regs.FDI_RXA_CTL + stride) >> 2] & rx_check == rx_check)

    def w_fdi_rx_status(self, offset: int, value: int) -> None:
        """``update_fdi_rx_iir_status`` (FDI_RX_CTL / FDI_RX_IMR): link training
        succeeds as soon as both ends are set for a pattern."""
        self.v32[offset >> 2] = value
        pipe = (offset & 0xFFFF) >> 12
        iir = (regs.FDI_RXA_IIR + regs.FDI_PIPE_STRIDE * pipe) >> 2
        if self._fdi_trained(pipe, 1):
            self.v32[iir] |= regs.FDI_RX_BIT_LOCK
        if self._fdi_trained(pipe, 2):
            self.v32[iir] |= regs.FDI_RX_SYMBOL_LOCK
        if offset == regs.FDI_RXA_CTL and self._fdi_auto_training_started():
            port_e = (regs.DP_TP_STATUS_A + 4 * regs.DDI_PORT_STRIDE) >> 2
            self.v32[port_e] |= regs.DP_TP_STATUS_AUTOTRAIN_DONE

    def _fdi_auto_training_started(self) -> bool:
        e = 4 * regs.DDI_PORT_STRIDE
        buf = self.v32[(regs.DDI_BUF_CTL_A + e) >> 2]
        rx = self.v32[regs.FDI_RXA_CTL >> 2]
        tx = self.v32[(regs.DP_TP_CTL_A + e) >> 2]
        return bool(buf & regs.DDI_BUF_CTL_ENABLE and rx & regs.FDI_RX_ENABLE
                    and rx & regs.FDI_AUTO_TRAINING and tx & regs.DP_TP_CTL_ENABLE
                    and tx & regs.DP_TP_CTL_FDI_AUTOTRAIN)

    def w_ddi_buf_ctl(self, offset: int, value: int) -> None:
        if value & regs.DDI_BUF_CTL_ENABLE:
            value &= ~regs.DDI_BUF_IS_IDLE & DWORD
        else:
            value |= regs.DDI_BUF_IS_IDLE
            if offset == regs.DDI_BUF_CTL_A + 4 * regs.DDI_PORT_STRIDE:
                status = (regs.DP_TP_STATUS_A + 4 * regs.DDI_PORT_STRIDE) >> 2
                self.v32[status] &= ~regs.DP_TP_STATUS_AUTOTRAIN_DONE & DWORD
        self.v32[offset >> 2] = value

    def w_dp_tp_ctl(self, offset: int, value: int) -> None:
        """Selecting the idle pattern reports idle-done in the port's DP_TP_STATUS."""
        self.v32[offset >> 2] = value
        train = (value & regs.DP_TP_CTL_LINK_TRAIN_MASK) >> regs.DP_TP_CTL_LINK_TRAIN_SHIFT
        if train == regs.DP_TP_CTL_LINK_TRAIN_IDLE:
            status = offset - regs.DP_TP_CTL_A + regs.DP_TP_STATUS_A
            self.v32[status >> 2] |= regs.DP_TP_STATUS_IDLE_DONE

    def w_dp_tp_status(self, offset: int, value: int) -> None:
        sticky = regs.DP_TP_STATUS_STICKY
        i = offset >> 2
        stored = (value & ~sticky) | (self.v32[i] & sticky)
        self.v32[i] = stored & ~(value & sticky) & DWORD

    def w_pch_adpa(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] = value & ~regs.ADPA_CRT_HOTPLUG_FORCE_TRIGGER & DWORD

    def w_pch_pp_control(self, offset: int, value: int) -> None:
        """Panel power follows the request at once."""
        self.v32[offset >> 2] = value
        status = regs.PCH_PP_STATUS >> 2
        if value & regs.PANEL_POWER_ON:
            s = self.v32[status] | regs.PP_ON | regs.PP_SEQUENCE_STATE_ON_IDLE
            s &= ~(regs.PP_SEQUENCE_POWER_DOWN | regs.PP_CYCLE_DELAY_ACTIVE)
        else:
            s = self.v32[status] & ~(regs.PP_ON | regs.PP_SEQUENCE_POWER_DOWN
                                     | regs.PP_CYCLE_DELAY_ACTIVE)
        self.v32[status] = s & DWORD

    def r_dpy_reg(self, offset: int) -> int:
        """PHY status registers read fixed "ready" values."""
        self.v32[offset >> 2] = regs.DPY_REG_READ_VALUES[offset]
        return self.v32[offset >> 2]

    def w_lcpll_ctl(self, offset: int, value: int) -> None:
        if value & regs.LCPLL_PLL_DISABLE:
            value &= ~regs.LCPLL_PLL_LOCK & DWORD
        else:
            value |= regs.LCPLL_PLL_LOCK
        if value & regs.LCPLL_CD_SOURCE_FCLK:
            value |= regs.LCPLL_CD_SOURCE_FCLK_DONE
        else:
            value &= ~regs.LCPLL_CD_SOURCE_FCLK_DONE & DWORD
        self.v32[offset >> 2] = value

    def w_south_chicken2(self, offset: int, value: int) -> None:
        if value & regs.FDI_MPHY_IOSFSB_RESET_CTL:
            value |= regs.FDI_MPHY_IOSFSB_RESET_STATUS
        else:
            value &= ~regs.FDI_MPHY_IOSFSB_RESET_STATUS & DWORD
        self.v32[offset >> 2] = value

    def _sbi_offset(self) -> int:
        return (self.v32[regs.SBI_ADDR >> 2] & regs.SBI_ADDR_OFFSET_MASK) >> regs.SBI_ADDR_OFFSET_SHIFT

    def _sbi_opcode(self) -> int:
        return (self.v32[regs.SBI_CTL_STAT >> 2] & regs.SBI_OPCODE_MASK) >> regs.SBI_OPCODE_SHIFT

    def r_sbi_data(self, offset: int) -> int:
        """A sideband read returns what the guest last wrote there (0 if nothing)."""
        if self._sbi_opcode() == regs.SBI_CMD_CRRD:
            self.v32[offset >> 2] = self.sbi.get(self._sbi_offset(), 0)
        return self.v32[offset >> 2]

    def w_sbi_ctl(self, offset: int, value: int) -> None:
        """Every sideband transaction completes at once with success; writes are
        remembered for :meth:`r_sbi_data`, at most ``SBI_REG_MAX`` registers."""
        value &= ~(regs.SBI_STAT_MASK | (regs.SBI_RESPONSE_MASK << regs.SBI_RESPONSE_SHIFT))
        self.v32[offset >> 2] = value & DWORD
        if self._sbi_opcode() == regs.SBI_CMD_CRWR:
            where = self._sbi_offset()
            if where not in self.sbi and len(self.sbi) >= regs.SBI_REG_MAX:
                self.counters.sbi_dropped += 1
                return
            self.sbi[where] = self.v32[regs.SBI_DATA >> 2]

    def w_power_well_ctl(self, offset: int, value: int) -> None:
        v = value & ~regs.HSW_PWR_WELL_STATE_ENABLED
        if value & regs.HSW_PWR_WELL_ENABLE_REQUEST:
            v |= regs.HSW_PWR_WELL_STATE_ENABLED
        self.v32[offset >> 2] = v & DWORD

    def w_vga_control(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] = value
        log.debug("vGPU %d: VGA mode %s", self.vgpu.id,
                  "disabled" if value & regs.VGA_DISP_DISABLE else "enabled")

    def w_edp_psr_imr_iir(self, offset: int, value: int) -> None:
        """PSR is not virtualised: its interrupt registers stay 0."""
        self.v32[offset >> 2] = 0

    # --- PVINFO ----------------------------------------------------------------------------
    def r_pvinfo(self, offset: int) -> int:
        return self.mmio.pvinfo.read(offset)

    def w_pvinfo(self, offset: int, value: int) -> None:
        self.mmio.pvinfo.write(offset, value)


def resolve(handlers: RegisterHandlers, name: str) -> Callable[..., object]:
    """The bound handler ``name`` of ``handlers`` (table names are checked at import)."""
    return getattr(handlers, name)  # type: ignore[no-any-return]


def _check_names(table: tuple[MmioInfo, ...]) -> None:
    for info in table:
        for h in (info.read, info.write):
            if h is not None and not callable(getattr(RegisterHandlers, h, None)):
                raise ValueError(f"register table: {info.name} names unknown handler {h!r}")


_check_names(REGISTER_TABLE)
