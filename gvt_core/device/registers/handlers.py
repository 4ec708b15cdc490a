"""The register table: which GEN8 registers a vGPU emulates and how.

Each :class:`MmioInfo` is one register (or one register block, like the
CSB or the PVINFO page) named as in the hardware documentation and i915,
with the kernel's access flags (facts 5.2) and the names of its read/write
handlers. Registers without a handler are served from the vGPU's virtual
register file (vreg) with the generic RO / RO-mask / mode-mask rules.

:class:`RegisterHandlers` holds the handlers of one vGPU. Write handlers take
``(offset, value)`` with ``value`` the full 32-bit dword (partial writes are
merged by the dispatcher first), read handlers take ``(offset)`` and return
the dword. Both run with the vGPU lock held and never raise for guest input.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from gvt_core.hw import regs

if TYPE_CHECKING:
    from gvt_core.device.registers.mmio import Mmio

log = logging.getLogger(__name__)

# --- access flags (facts 5.2) -------------------------------------------------------
F_RO = 1 << 0
F_GMADR = 1 << 1
F_MODE_MASK = 1 << 2
F_CMD_ACCESS = 1 << 3
F_ACCESSED = 1 << 4
F_PM_SAVE = 1 << 5
F_UNALIGN = 1 << 6
F_SR_IN_CTX = 1 << 7
F_CMD_WRITE_PATCH = 1 << 8
#: gvt-private: write-1-to-clear (interrupt identity registers); a partial write
#: merges with zeros, so bytes the guest did not write clear nothing.
F_W1C = 1 << 9

DWORD = 0xFFFF_FFFF


@attrs.frozen
class MmioInfo:
    """One tracked register (or register block) of the table."""

    offset: int
    name: str
    size: int = 4
    flags: int = 0
    #: bits the guest cannot change (all ones = read-only).
    ro_mask: int = 0
    #: for F_GMADR registers: the bits holding the graphics-memory address.
    addr_mask: int = 0
    #: name of a :class:`RegisterHandlers` read method, or None for plain vreg.
    read: str | None = None
    #: name of a :class:`RegisterHandlers` write method, or None for the generic rules.
    write: str | None = None

    @property
    def dwords(self) -> range:
        return range(self.offset, self.offset + self.size, 4)


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

FORCEWAKE_ACKS: dict[int, int] = {
    regs.FORCEWAKE_RENDER_GEN9: regs.FORCEWAKE_ACK_RENDER_GEN9,
    regs.FORCEWAKE_MT: regs.FORCEWAKE_ACK_HSW,
    regs.FORCEWAKE_MEDIA_GEN9: regs.FORCEWAKE_ACK_MEDIA_GEN9,
}

TLB_INV_REGS: dict[str, int] = {
    "GEN8_RTCR": regs.GEN8_RTCR,
    "GEN8_BTCR": regs.GEN8_BTCR,
    "GEN8_M1TCR": regs.GEN8_M1TCR,
    "GEN8_M2TCR": regs.GEN8_M2TCR,
    "GEN8_VTCR": regs.GEN8_VTCR,
}


def _engine_regs(name: str, base: int) -> list[MmioInfo]:
    e = name.upper()
    ring = F_CMD_ACCESS
    out = [
        MmioInfo(base + regs.RING_TAIL, f"{e} RING_TAIL", flags=ring),
        MmioInfo(base + regs.RING_HEAD, f"{e} RING_HEAD", flags=ring),
        MmioInfo(base + regs.RING_START, f"{e} RING_START", flags=ring | F_GMADR,
                 addr_mask=regs.RING_ADDR_MASK),
        MmioInfo(base + regs.RING_CTL, f"{e} RING_CTL", flags=ring),
        MmioInfo(base + regs.RING_ACTHD_UDW, f"{e} RING_ACTHD_UDW", flags=F_RO | ring),
        MmioInfo(base + regs.RING_ACTHD, f"{e} RING_ACTHD", flags=F_RO | ring),
        MmioInfo(base + regs.RING_HWS_PGA, f"{e} RING_HWS_PGA", flags=F_GMADR,
                 addr_mask=regs.RING_ADDR_MASK, write="w_hws_pga"),
        MmioInfo(base + regs.RING_NOPID, f"{e} RING_NOPID", flags=F_RO | ring),
        MmioInfo(base + regs.RING_HWSTAM, f"{e} RING_HWSTAM", flags=ring),
        MmioInfo(base + regs.RING_MI_MODE, f"{e} RING_MI_MODE", flags=F_MODE_MASK | ring),
        MmioInfo(base + regs.RING_IMR, f"{e} RING_IMR", flags=ring),
        MmioInfo(base + regs.RING_INSTPM, f"{e} RING_INSTPM", flags=F_MODE_MASK | ring),
        MmioInfo(base + regs.RING_BBADDR, f"{e} RING_BBADDR", flags=F_RO | ring),
        MmioInfo(base + regs.RING_BBADDR_UDW, f"{e} RING_BBADDR_UDW", flags=F_RO | ring),
        MmioInfo(base + regs.RING_ELSP, f"{e} RING_ELSP", write="w_elsp"),
        # a 64-bit register at a dword-aligned offset: 8-byte reads are allowed
        MmioInfo(base + regs.RING_EXECLIST_STATUS, f"{e} RING_EXECLIST_STATUS", size=8,
                 flags=F_RO | F_UNALIGN),
        MmioInfo(base + regs.RING_CONTEXT_CONTROL, f"{e} RING_CONTEXT_CONTROL",
                 flags=F_MODE_MASK | F_SR_IN_CTX | ring),
        MmioInfo(base + regs.RING_MODE_GEN7, f"{e} RING_MODE_GEN7",
                 flags=F_MODE_MASK | ring, write="w_ring_mode"),
        MmioInfo(base + regs.RING_TIMESTAMP, f"{e} RING_TIMESTAMP", flags=F_RO | ring),
        MmioInfo(base + regs.RING_TIMESTAMP_UDW, f"{e} RING_TIMESTAMP_UDW", flags=F_RO | ring),
        MmioInfo(base + regs.RING_CONTEXT_STATUS_BUF, f"{e} RING_CONTEXT_STATUS_BUF",
                 size=regs.CSB_SIZE, flags=F_RO),
        MmioInfo(base + regs.RING_CONTEXT_STATUS_PTR, f"{e} RING_CONTEXT_STATUS_PTR",
                 flags=F_MODE_MASK, write="w_csb_ptr"),
        MmioInfo(base + regs.RING_CTX_TIMESTAMP, f"{e} RING_CTX_TIMESTAMP",
                 flags=F_SR_IN_CTX | ring),
    ]
    for n in range(regs.RING_PDP_COUNT):
        pdp = base + regs.RING_PDP_BASE + 8 * n
        out.append(MmioInfo(pdp, f"{e} GEN8_RING_PDP_LDW({n})", flags=F_SR_IN_CTX | ring))
        out.append(MmioInfo(pdp + 4, f"{e} GEN8_RING_PDP_UDW({n})", flags=F_SR_IN_CTX | ring))
    return out


def _irq_bank(prefix: str, isr: int) -> list[MmioInfo]:
    return [
        MmioInfo(isr + regs.IRQ_ISR, f"{prefix}ISR", flags=F_RO),
        MmioInfo(isr + regs.IRQ_IMR, f"{prefix}IMR", write="w_irq_mask"),
        MmioInfo(isr + regs.IRQ_IIR, f"{prefix}IIR", flags=F_W1C, write="w_iir"),
        MmioInfo(isr + regs.IRQ_IER, f"{prefix}IER", write="w_irq_mask"),
    ]


def _pipe_regs(pipe: int) -> list[MmioInfo]:
    p = "ABC"[pipe]
    d = regs.PIPE_STRIDE * pipe
    surf = F_GMADR
    return [
        MmioInfo(regs.HTOTAL_A + d, f"HTOTAL_{p}"),
        MmioInfo(regs.HBLANK_A + d, f"HBLANK_{p}"),
        MmioInfo(regs.HSYNC_A + d, f"HSYNC_{p}"),
        MmioInfo(regs.VTOTAL_A + d, f"VTOTAL_{p}"),
        MmioInfo(regs.VBLANK_A + d, f"VBLANK_{p}"),
        MmioInfo(regs.VSYNC_A + d, f"VSYNC_{p}"),
        MmioInfo(regs.PIPESRC_A + d, f"PIPESRC_{p}"),
        MmioInfo(regs.PIPECONF_A + d, f"PIPECONF_{p}", write="w_pipeconf"),
        MmioInfo(regs.PIPE_FRMCOUNT_G4X_A + d, f"PIPE_FRMCOUNT_G4X_{p}", flags=F_RO),
        MmioInfo(regs.PIPE_FLIPCOUNT_G4X_A + d, f"PIPE_FLIPCOUNT_G4X_{p}", flags=F_RO),
        MmioInfo(regs.CURCNTR_A + d, f"CURCNTR_{p}"),
        MmioInfo(regs.CURBASE_A + d, f"CURBASE_{p}", flags=surf, addr_mask=regs.RING_ADDR_MASK),
        MmioInfo(regs.CURPOS_A + d, f"CURPOS_{p}"),
        MmioInfo(regs.DSPCNTR_A + d, f"DSPCNTR_{p}"),
        MmioInfo(regs.DSPLINOFF_A + d, f"DSPLINOFF_{p}"),
        MmioInfo(regs.DSPSTRIDE_A + d, f"DSPSTRIDE_{p}"),
        MmioInfo(regs.DSPPOS_A + d, f"DSPPOS_{p}"),
        MmioInfo(regs.DSPSIZE_A + d, f"DSPSIZE_{p}"),
        MmioInfo(regs.DSPSURF_A + d, f"DSPSURF_{p}", flags=surf,
                 addr_mask=regs.RING_ADDR_MASK, write="w_dspsurf"),
        MmioInfo(regs.DSPTILEOFF_A + d, f"DSPTILEOFF_{p}"),
        MmioInfo(regs.DSPSURFLIVE_A + d, f"DSPSURFLIVE_{p}", flags=F_RO),
        MmioInfo(regs.SPRCTL_A + d, f"SPRCTL_{p}"),
        MmioInfo(regs.SPRLINOFF_A + d, f"SPRLINOFF_{p}"),
        MmioInfo(regs.SPRSTRIDE_A + d, f"SPRSTRIDE_{p}"),
        MmioInfo(regs.SPRPOS_A + d, f"SPRPOS_{p}"),
        MmioInfo(regs.SPRSIZE_A + d, f"SPRSIZE_{p}"),
        MmioInfo(regs.SPRSURF_A + d, f"SPRSURF_{p}", flags=surf,
                 addr_mask=regs.RING_ADDR_MASK, write="w_sprsurf"),
        MmioInfo(regs.SPRSURFLIVE_A + d, f"SPRSURFLIVE_{p}", flags=F_RO),
    ]


def build_table() -> tuple[MmioInfo, ...]:
    """Every register the device model tracks, in offset order."""
    t: list[MmioInfo] = []
    for name, base in regs.ENGINE_BASES.items():
        t += _engine_regs(name, base)
    t += [
        MmioInfo(regs.GEN6_GDRST, "GEN6_GDRST", write="w_gdrst"),
        MmioInfo(regs.GEN8_PRIVATE_PAT_LO, "GEN8_PRIVATE_PAT_LO", flags=F_PM_SAVE),
        MmioInfo(regs.GEN8_PRIVATE_PAT_HI, "GEN8_PRIVATE_PAT_HI", flags=F_PM_SAVE),
        MmioInfo(regs.GAM_ECOCHK, "GAM_ECOCHK", flags=F_CMD_ACCESS),
        MmioInfo(regs.GEN8_RING_FAULT_REG, "GEN8_RING_FAULT_REG"),
        MmioInfo(regs.ERROR_GEN6, "ERROR_GEN6"),
        MmioInfo(regs.GEN8_FAULT_TLB_DATA0, "GEN8_FAULT_TLB_DATA0", flags=F_RO),
        MmioInfo(regs.GEN8_FAULT_TLB_DATA1, "GEN8_FAULT_TLB_DATA1", flags=F_RO),
        MmioInfo(regs.GEN6_RPNSWREQ, "GEN6_RPNSWREQ"),
        MmioInfo(regs.GEN6_RP_CONTROL, "GEN6_RP_CONTROL"),
        MmioInfo(regs.GEN6_RC_CONTROL, "GEN6_RC_CONTROL"),
        MmioInfo(regs.GEN6_RC_STATE, "GEN6_RC_STATE"),
        MmioInfo(regs.GEN6_GT_THREAD_STATUS_REG, "GEN6_GT_THREAD_STATUS_REG", flags=F_RO),
        MmioInfo(regs.GEN6_GT_CORE_STATUS, "GEN6_GT_CORE_STATUS", flags=F_RO),
        MmioInfo(regs.GEN6_PCODE_MAILBOX, "GEN6_PCODE_MAILBOX", write="w_pcode_mailbox"),
        MmioInfo(regs.GEN6_PCODE_DATA, "GEN6_PCODE_DATA"),
        MmioInfo(regs.GEN6_PCODE_DATA1, "GEN6_PCODE_DATA1"),
        MmioInfo(regs.GEN6_RP_STATE_CAP, "GEN6_RP_STATE_CAP", flags=F_RO),
        MmioInfo(regs.GEN6_GT_PERF_STATUS, "GEN6_GT_PERF_STATUS", flags=F_RO),
        MmioInfo(regs.FORCEWAKE_MT, "FORCEWAKE_MT", flags=F_MODE_MASK, write="w_forcewake"),
        MmioInfo(regs.FORCEWAKE_ACK_HSW, "FORCEWAKE_ACK_HSW", flags=F_RO),
        MmioInfo(regs.FORCEWAKE_RENDER_GEN9, "FORCEWAKE_RENDER_GEN9", flags=F_MODE_MASK,
                 write="w_forcewake"),
        MmioInfo(regs.FORCEWAKE_ACK_RENDER_GEN9, "FORCEWAKE_ACK_RENDER_GEN9", flags=F_RO),
        MmioInfo(regs.FORCEWAKE_MEDIA_GEN9, "FORCEWAKE_MEDIA_GEN9", flags=F_MODE_MASK,
                 write="w_forcewake"),
        MmioInfo(regs.FORCEWAKE_ACK_MEDIA_GEN9, "FORCEWAKE_ACK_MEDIA_GEN9", flags=F_RO),
        MmioInfo(regs.GFX_FLSH_CNTL_GEN6, "GFX_FLSH_CNTL_GEN6", write="w_self_clearing"),
        MmioInfo(regs.FPGA_DBG, "FPGA_DBG", flags=F_W1C, write="w_w1c"),
        MmioInfo(regs.GEN7_ERR_INT, "GEN7_ERR_INT", flags=F_W1C, write="w_w1c"),
        MmioInfo(regs.GEN8_MASTER_IRQ, "GEN8_MASTER_IRQ", write="w_master_irq"),
        MmioInfo(regs.HSW_PWR_WELL_CTL1, "HSW_PWR_WELL_CTL1", write="w_power_well"),
        MmioInfo(regs.HSW_PWR_WELL_CTL2, "HSW_PWR_WELL_CTL2", write="w_power_well"),
        MmioInfo(regs.HSW_PWR_WELL_CTL3, "HSW_PWR_WELL_CTL3", write="w_power_well"),
        MmioInfo(regs.HSW_PWR_WELL_CTL4, "HSW_PWR_WELL_CTL4", write="w_power_well"),
        MmioInfo(regs.LCPLL_CTL, "LCPLL_CTL", ro_mask=regs.LCPLL_PLL_LOCK),
        MmioInfo(regs.SFUSE_STRAP, "SFUSE_STRAP", flags=F_RO),
        MmioInfo(regs.PCH_PORT_HOTPLUG, "PCH_PORT_HOTPLUG"),
        MmioInfo(regs.VGT_PVINFO_PAGE, "VGT_PVINFO_PAGE", size=regs.VGT_PVINFO_SIZE,
                 flags=F_UNALIGN, read="r_pvinfo", write="w_pvinfo"),
    ]
    t += [MmioInfo(off, name, write="w_self_clearing") for name, off in TLB_INV_REGS.items()]
    for bank in range(regs.GEN8_GT_BANKS):
        t += _irq_bank(f"GEN8_GT_{bank}_", regs.GEN8_GT_ISR_BASE + 0x10 * bank)
    for pipe in range(regs.NUM_PIPES):
        t += _irq_bank(f"GEN8_DE_PIPE_{'ABC'[pipe]}_",
                       regs.GEN8_DE_PIPE_ISR_BASE + 0x10 * pipe)
    t += _irq_bank("GEN8_DE_PORT_", regs.GEN8_DE_PORT_ISR)
    t += _irq_bank("GEN8_DE_MISC_", regs.GEN8_DE_MISC_ISR)
    t += _irq_bank("GEN8_PCU_", regs.GEN8_PCU_ISR)
    t += _irq_bank("SDE", regs.SDEISR)
    for pipe in range(regs.NUM_PIPES):
        t += _pipe_regs(pipe)
    for i in range(regs.MAX_NUM_FENCES):
        t.append(MmioInfo(regs.FENCE_REG_GEN6_LO + 8 * i, f"FENCE_REG_GEN6({i})", size=8,
                          read="r_fence", write="w_fence"))
    t.sort(key=lambda i: i.offset)
    _check(t)
    return tuple(t)


def _check(table: list[MmioInfo]) -> None:
    """The table is a partition of dwords: no two records overlap."""
    end = -1
    for info in table:
        if info.offset % 4 or info.size % 4 or info.offset < end:
            raise ValueError(f"register table: {info.name} at {info.offset:#x} overlaps or is unaligned")
        if info.offset + info.size > regs.MMIO_SIZE:
            raise ValueError(f"register table: {info.name} lies outside the MMIO range")
        end = info.offset + info.size


#: the table, built once.
REGISTER_TABLE: tuple[MmioInfo, ...] = build_table()
#: dword offset -> the record that covers it.
INFO_BY_DWORD: dict[int, MmioInfo] = {d: i for i in REGISTER_TABLE for d in i.dwords}


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
        #: called with (pipe, enabled) when the guest turns a pipe on or off.
        self.pipe_sink: Callable[[int, bool], None] | None = None
        self.flip_pending = [0] * regs.NUM_PIPES  # bit 0 primary, bit 1 sprite
        #: engine masks of GDRST requests when the host has no reset_vgpu.
        self.reset_requests: list[int] = []

    def reset(self) -> None:
        """Forget half-written ELSP ports and pending flips (vGPU reset)."""
        for port in self._elsp_dwords.values():
            port.clear()
        self.flip_pending = [0] * regs.NUM_PIPES
        self.elsp_backlog.clear()

    # --- generic rules --------------------------------------------------------------
    def w_drop(self, offset: int, value: int) -> None:
        self.counters.ro_writes += 1

    def w_masked(self, offset: int, value: int) -> None:
        i = offset >> 2
        m = value >> regs.MASKED_WRITE_SHIFT
        self.v32[i] = ((self.v32[i] & ~m) | (value & m)) & 0xFFFF

    def w_ro_mask(self, offset: int, value: int) -> None:
        ro = INFO_BY_DWORD[offset].ro_mask
        i = offset >> 2
        self.v32[i] = (self.v32[i] & ro) | (value & ~ro & DWORD)

    def w_w1c(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] &= ~value & DWORD

    def w_self_clearing(self, offset: int, value: int) -> None:
        """Requests the hardware completes at once and then clears (TLB invalidation,
        GGTT flush): the emulated GPU has no TLB to flush, so the request is done."""
        self.counters.tlb_invalidations += 1
        self.v32[offset >> 2] = 0

    # --- engines ----------------------------------------------------------------------
    def w_ring_mode(self, offset: int, value: int) -> None:
        mask = value >> regs.MASKED_WRITE_SHIFT
        enabling = mask & value & (regs.GFX_PPGTT_ENABLE | regs.GFX_RUN_LIST_ENABLE)
        if enabling and not self.vgpu.pv_notified:
            self.vgpu.enter_failsafe(
                "guest enabled PPGTT/execlist mode in RING_MODE without reading PVINFO "
                "(not a GVT-g aware driver)"
            )
            return
        self.w_masked(offset, value)

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

    def w_csb_ptr(self, offset: int, value: int) -> None:
        """Only the read pointer is the guest's; the write pointer belongs to the hardware."""
        i = offset >> 2
        m = (value >> regs.MASKED_WRITE_SHIFT) & regs.CSB_READ_PTR_MASK
        self.v32[i] = (self.v32[i] & ~m) | (value & m)

    def w_hws_pga(self, offset: int, value: int) -> None:
        if not self.vgpu.resources.gm_valid(value & regs.RING_ADDR_MASK, regs.GTT_PAGE_SIZE):
            self.counters.bad_gm_writes += 1
            self.vgpu.stats.bad_accesses += 1
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
        self.v32[offset >> 2] = 0
        if not mask:
            return
        self.counters.engine_reset_requests += 1
        reset = getattr(self.vgpu.gvt, "reset_vgpu", None)
        if reset is None:
            self.reset_requests.append(mask)
            return
        reset(self.vgpu, dmlr=False, engine_mask=mask)

    def w_forcewake(self, offset: int, value: int) -> None:
        self.w_masked(offset, value)
        self.v32[FORCEWAKE_ACKS[offset] >> 2] = self.v32[offset >> 2]

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

    # --- interrupts (facts 6.4) ----------------------------------------------------------
    def w_iir(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] &= ~value & DWORD
        self.vgpu.irq.update()

    def w_irq_mask(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] = value
        self.vgpu.irq.update()

    def w_master_irq(self, offset: int, value: int) -> None:
        self.vgpu.irq.write_master(value)

    # --- display -------------------------------------------------------------------------
    def w_power_well(self, offset: int, value: int) -> None:
        v = value & ~regs.HSW_PWR_WELL_STATE_ENABLED
        if value & regs.HSW_PWR_WELL_ENABLE_REQUEST:
            v |= regs.HSW_PWR_WELL_STATE_ENABLED
        self.v32[offset >> 2] = v

    def w_pcode_mailbox(self, offset: int, value: int) -> None:
        """A mailbox command completes at once with status 0 (success)."""
        if value & regs.GEN6_PCODE_READY:
            value &= ~(regs.GEN6_PCODE_READY | regs.GEN6_PCODE_STATUS_MASK) & DWORD
        self.v32[offset >> 2] = value

    def w_pipeconf(self, offset: int, value: int) -> None:
        pipe = (offset - regs.PIPECONF_A) // regs.PIPE_STRIDE
        was = bool(self.v32[offset >> 2] & regs.PIPECONF_STATE)
        on = bool(value & regs.PIPECONF_ENABLE)
        value &= ~regs.PIPECONF_STATE
        if on:
            value |= regs.PIPECONF_STATE
        self.v32[offset >> 2] = value
        if on != was and self.pipe_sink is not None:
            self.pipe_sink(pipe, on)

    def pipe_enabled(self, pipe: int) -> bool:
        return bool(self.v32[(regs.PIPECONF_A + regs.PIPE_STRIDE * pipe) >> 2] & regs.PIPECONF_STATE)

    def _flip(self, offset: int, value: int, surf_a: int, live_a: int, plane_bit: int) -> None:
        pipe = (offset - surf_a) // regs.PIPE_STRIDE
        self.v32[offset >> 2] = value
        self.v32[(live_a + regs.PIPE_STRIDE * pipe) >> 2] = value
        count = (regs.PIPE_FLIPCOUNT_G4X_A + regs.PIPE_STRIDE * pipe) >> 2
        self.v32[count] = (self.v32[count] + 1) & DWORD
        self.flip_pending[pipe] |= plane_bit
        self.counters.flips += 1

    def w_dspsurf(self, offset: int, value: int) -> None:
        """A flip: the live surface follows; flip-done comes with the next vblank."""
        self._flip(offset, value, regs.DSPSURF_A, regs.DSPSURFLIVE_A, 1)

    def w_sprsurf(self, offset: int, value: int) -> None:
        self._flip(offset, value, regs.SPRSURF_A, regs.SPRSURFLIVE_A, 2)

    def vblank(self, pipe: int) -> None:
        """Emulate a vblank on ``pipe`` (facts 6.5): pending flip-done events first,
        then the vblank event, then the frame counter."""
        from gvt_core.device.interrupt import IrqEvent

        if not self.pipe_enabled(pipe):
            return
        irq = self.vgpu.irq
        pending, self.flip_pending[pipe] = self.flip_pending[pipe], 0
        if pending & 1:
            irq.raise_event(IrqEvent.primary_flip_done(pipe))
        if pending & 2:
            irq.raise_event(IrqEvent.sprite_flip_done(pipe))
        irq.raise_event(IrqEvent.vblank(pipe))
        count = (regs.PIPE_FRMCOUNT_G4X_A + regs.PIPE_STRIDE * pipe) >> 2
        self.v32[count] = (self.v32[count] + 1) & DWORD

    # --- PVINFO ----------------------------------------------------------------------------
    def r_pvinfo(self, offset: int) -> int:
        return self.mmio.pvinfo.read(offset)

    def w_pvinfo(self, offset: int, value: int) -> None:
        self.mmio.pvinfo.write(offset, value)


def resolve(handlers: RegisterHandlers, name: str) -> Any:
    """The bound handler ``name`` of ``handlers`` (table names are checked at import)."""
    return getattr(handlers, name)


for _info in REGISTER_TABLE:
    for _h in (_info.read, _info.write):
        if _h is not None and not callable(getattr(RegisterHandlers, _h, None)):
            raise ValueError(f"register table: {_info.name} names unknown handler {_h!r}")
