"""The Broadwell MMIO tracking table: every register upstream GVT-g tracks on BDW.

Data only. One :class:`MmioInfo` per record of upstream's table, in upstream's
order (``intel_gvt_mmio_table.c``: ``iterate_generic_mmio``,
``iterate_bdw_only_mmio``, ``iterate_bdw_plus_mmio``, ``iterate_pre_skl_mmio``),
named as i915 names the register (upstream's own spelling, ``_MMIO(0x2124)``,
where it has no name), with the access flags, read-only mask, address mask
and handler names ``handlers.c`` attaches on Broadwell (``init_generic_mmio_info``,
``init_bdw_mmio_info``) and ``F_SR_IN_CTX`` where ``mmio_context.c`` marks the
register as saved in the context image.

Handler names are the names of :class:`~gvt_core.device.registers.handlers.RegisterHandlers`
methods (``r_*`` read, ``w_*`` write). A subsystem that arrives later gives a
record behaviour without editing this file: it attaches a callable to a handler
name (or to one register) on a vGPU's :class:`~gvt_core.device.registers.mmio.Mmio`.
:data:`BEHAVIOUR_OWNERS` says which handler names belong to which subsystem.

Records of 1 KiB or more are *blocks* as upstream treats them (the MCHBAR
mirror, the PVINFO page, the legacy palettes): looked up by range, not per
dword, except PVINFO, which the guest touches often.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from gvt_core.hw import regs

# --- access flags (facts 5.2; upstream gvt.h) ----------------------------------------------
F_RO = 1 << 0
F_GMADR = 1 << 1
F_MODE_MASK = 1 << 2
F_CMD_ACCESS = 1 << 3
F_ACCESSED = 1 << 4
F_PM_SAVE = 1 << 5
F_UNALIGN = 1 << 6
F_SR_IN_CTX = 1 << 7
F_CMD_WRITE_PATCH = 1 << 8

DWORD = 0xFFFF_FFFF

_C = F_CMD_ACCESS
_MC = F_MODE_MASK | F_CMD_ACCESS
#: upstream's ``~_MASKED_BIT_ENABLE(RESET_CTL_REQUEST_RESET)``
_RESET_CTL_RO = ~((regs.RESET_CTL_REQUEST_RESET << 16) | regs.RESET_CTL_REQUEST_RESET) & DWORD


@attrs.frozen(slots=True)
class MmioInfo:
    """One tracked register (or register block) of the table."""

    offset: int
    name: str
    size: int = 4
    flags: int = 0
    #: bits the guest cannot change (all ones = the write is dropped).
    ro_mask: int = 0
    #: for F_GMADR registers: the bits holding the graphics-memory address.
    addr_mask: int = 0
    #: name of a :class:`RegisterHandlers` read method, or None for plain vreg.
    read: str | None = None
    #: name of a :class:`RegisterHandlers` write method, or None for the generic rules.
    write: str | None = None
    #: the upstream iterator the record comes from.
    group: str = "generic"

    @property
    def dwords(self) -> range:
        return range(self.offset, self.offset + self.size, 4)

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def is_block(self) -> bool:
        return self.size >= regs.MMIO_BLOCK_MIN_SIZE


#: engines in the order upstream's MMIO_RING_* macros list them.
RING_ORDER = (
    ("RCS", regs.RENDER_RING_BASE),
    ("BCS", regs.BLT_RING_BASE),
    ("VCS", regs.GEN6_BSD_RING_BASE),
    ("VECS", regs.VEBOX_RING_BASE),
    ("VCS2", regs.GEN8_BSD2_RING_BASE),
)
PIPES = "ABC"

#: handler names whose behaviour another subsystem completes (it attaches its own
#: callable to the name on each vGPU); the default here is upstream's register-level
#: part of the handler, or plain storage where everything is the subsystem's.
BEHAVIOUR_OWNERS: dict[str, str] = {
    "w_elsp": "execution",
    "w_ring_mode": "execution",
    "r_mmio_from_hw": "execution",
    "w_tlb_control": "execution",
    "w_hws_pga": "execution",
    "w_pipeconf": "display",
    "w_pri_surf": "display",
    "w_spr_surf": "display",
    "w_reg50080": "display",
    "r_gmbus": "display",
    "w_gmbus": "display",
    "w_dp_aux_ch_ctl": "display",
}


class _Builder:
    """Collects records in declaration (upstream) order."""

    def __init__(self) -> None:
        self.records: list[MmioInfo] = []
        self.group = "generic"

    def reg(self, name: str, offset: int, size: int = 4, **kw: object) -> None:
        self.records.append(MmioInfo(offset, name, size, group=self.group, **kw))  # type: ignore[arg-type]

    def raw(self, offset: int, size: int = 4, **kw: object) -> None:
        """A register upstream names only by its offset."""
        self.reg(f"_MMIO({offset:#x})", offset, size, **kw)

    def ring(self, name: str, rel: int, size: int = 4, **kw: object) -> None:
        for engine, base in RING_ORDER:
            self.reg(f"{name}({engine})", base + rel, size, **kw)

    def per_pipe(self, name: str, offsets: tuple[int, ...], **kw: object) -> None:
        for p, off in zip(PIPES + "D", offsets, strict=False):
            self.reg(f"{name}({'EDP' if p == 'D' else p})", off, **kw)


def _generic(b: _Builder) -> None:
    b.ring("RING_IMR", regs.RING_IMR, write="w_imr")
    b.reg("SDEIMR", regs.SDEIMR, write="w_imr")
    b.reg("SDEIER", regs.SDEIER, write="w_ier")
    b.reg("SDEIIR", regs.SDEIIR, write="w_iir")
    b.reg("SDEISR", regs.SDEISR)
    b.ring("RING_HWSTAM", regs.RING_HWSTAM)
    gm_rdr = {"flags": F_GMADR | _C, "addr_mask": regs.GM_ADDR_MASK_PAGE}
    b.reg("BSD_HWS_PGA_GEN7", regs.BSD_HWS_PGA_GEN7, **gm_rdr)
    b.reg("BLT_HWS_PGA_GEN7", regs.BLT_HWS_PGA_GEN7, **gm_rdr)
    b.reg("VEBOX_HWS_PGA_GEN7", regs.VEBOX_HWS_PGA_GEN7, **gm_rdr)
    b.ring("RING_EXCC", regs.RING_EXCC, flags=_C)
    b.ring("RING_REG_0x134", 0x134, flags=_C)
    b.ring("RING_INSTDONE", regs.RING_INSTDONE, read="r_mmio_from_hw")
    b.raw(0x2148, **gm_rdr)
    b.reg("CCID(RCS)", regs.RENDER_RING_BASE + regs.RING_CCID, **gm_rdr)
    b.raw(0x12198, **gm_rdr)
    b.reg("GEN7_CXT_SIZE", 0x21A8)
    b.ring("RING_TAIL", regs.RING_TAIL)
    b.ring("RING_HEAD", regs.RING_HEAD)
    b.ring("RING_CTL", regs.RING_CTL)
    b.ring("RING_ACTHD", regs.RING_ACTHD, read="r_mmio_from_hw")
    b.ring("RING_START", regs.RING_START, flags=F_GMADR, addr_mask=regs.GM_ADDR_MASK_RING)
    b.ring("RING_MODE_GEN7", regs.RING_MODE_GEN7,
           flags=F_MODE_MASK | _C | F_CMD_WRITE_PATCH, write="w_ring_mode")
    b.ring("RING_MI_MODE", regs.RING_MI_MODE, flags=_MC)
    # RCS INSTPM is saved in the context image (mmio_context.c gen8_engine_mmio_list)
    for engine, base in RING_ORDER:
        ctx = F_SR_IN_CTX if engine == "RCS" else 0
        b.reg(f"RING_INSTPM({engine})", base + regs.RING_INSTPM, flags=_MC | ctx)
    b.ring("RING_TIMESTAMP", regs.RING_TIMESTAMP, flags=_C, read="r_mmio_from_hw")
    b.ring("RING_TIMESTAMP_UDW", regs.RING_TIMESTAMP_UDW, flags=_C, read="r_mmio_from_hw")
    b.reg("GEN7_GT_MODE", 0x7008, flags=_MC | F_SR_IN_CTX)
    b.reg("CACHE_MODE_0_GEN7", 0x7000, flags=_MC | F_SR_IN_CTX)
    b.reg("CACHE_MODE_1", 0x7004, flags=_MC | F_SR_IN_CTX)
    b.reg("CACHE_MODE_0", 0x2120, flags=_MC)
    b.raw(0x2124, flags=_MC)
    b.raw(0x20DC, flags=_MC)
    b.reg("_3D_CHICKEN3", 0x2090, flags=_MC)
    b.raw(0x2088, flags=_MC)
    b.reg("FF_SLICE_CS_CHICKEN2", 0x20E4, flags=_MC)
    b.raw(0x2470, flags=_MC)
    b.reg("GAM_ECOCHK", regs.GAM_ECOCHK, flags=_C)
    b.reg("GEN7_COMMON_SLICE_CHICKEN1", 0x7010, flags=_MC | F_SR_IN_CTX)
    b.reg("COMMON_SLICE_CHICKEN2", 0x7014, flags=_MC)
    for off in (0x9030, 0x20A0, 0x2420, 0x2430, 0x2434, 0x2438, 0x243C):
        b.raw(off, flags=_C)
    b.raw(0x7018, flags=_MC)
    b.reg("HSW_HALF_SLICE_CHICKEN3", 0xE184, flags=_MC)
    b.reg("GEN7_HALF_SLICE_CHICKEN1", 0xE100, flags=_MC)
    _generic_display(b)
    _generic_gt(b)


def _generic_display(b: _Builder) -> None:
    stride = regs.PIPE_STRIDE
    pipes_edp = (0, stride, 2 * stride, regs.TRANSCODER_EDP_OFFSET - 0x70000)
    b.raw(0x60220, 0x20)
    for off in (0x602A0, 0x65050, 0x650B4, 0xC4040):
        b.raw(off)
    b.reg("DERRMR", 0x44050)
    b.per_pipe("PIPEDSL", tuple(0x70000 + d for d in pipes_edp))
    b.per_pipe("TRANSCONF", tuple(regs.PIPECONF_A + d for d in pipes_edp), write="w_pipeconf")
    b.per_pipe("PIPESTAT", tuple(0x70024 + d for d in pipes_edp))
    b.per_pipe("PIPE_FLIPCOUNT_G4X", tuple(regs.PIPE_FLIPCOUNT_G4X_A + d for d in pipes_edp))
    b.per_pipe("PIPE_FRMCOUNT_G4X", tuple(regs.PIPE_FRMCOUNT_G4X_A + d for d in pipes_edp))
    pipes = (0, stride, 2 * stride)
    b.per_pipe("CURCNTR", tuple(regs.CURCNTR_A + d for d in pipes))
    b.per_pipe("CURPOS", tuple(regs.CURPOS_A + d for d in pipes))
    b.per_pipe("CURBASE", tuple(regs.CURBASE_A + d for d in pipes))
    b.per_pipe("CUR_FBC_CTL", tuple(0x700A0 + d for d in pipes))
    for off in (0x700AC, 0x710AC, 0x720AC, 0x70090, 0x70094, 0x70098, 0x7009C):
        b.raw(off)
    for p, d in zip(PIPES, pipes, strict=True):
        b.reg(f"DSPCNTR({p})", regs.DSPCNTR_A + d)
        b.reg(f"DSPADDR({p})", regs.DSPLINOFF_A + d)
        b.reg(f"DSPSTRIDE({p})", regs.DSPSTRIDE_A + d)
        b.reg(f"DSPPOS({p})", regs.DSPPOS_A + d)
        b.reg(f"DSPSIZE({p})", regs.DSPSIZE_A + d)
        b.reg(f"DSPSURF({p})", regs.DSPSURF_A + d, write="w_pri_surf")
        b.reg(f"DSPOFFSET({p})", regs.DSPTILEOFF_A + d)
        b.reg(f"DSPSURFLIVE({p})", regs.DSPSURFLIVE_A + d)
        b.reg(f"REG_50080({p}, PLANE_PRIMARY)", regs.REG_50080_PRIMARY[PIPES.index(p)],
              write="w_reg50080")
    sprite = (("SPRCTL", 0x70280), ("SPRLINOFF", 0x70284), ("SPRSTRIDE", 0x70288),
              ("SPRPOS", 0x7028C), ("SPRSIZE", 0x70290), ("SPRKEYVAL", 0x70294),
              ("SPRKEYMSK", 0x70298), ("SPRSURF", 0x7029C), ("SPRKEYMAX", 0x702A0),
              ("SPROFFSET", 0x702A4), ("SPRSCALE", 0x70304), ("SPRSURFLIVE", 0x702AC))
    for i, p in enumerate(PIPES):
        for name, off in sprite:
            b.reg(f"{name}({p})", off + i * stride,
                  write="w_spr_surf" if name == "SPRSURF" else None)
        b.reg(f"REG_50080({p}, PLANE_SPRITE0)", regs.REG_50080_SPRITE[i], write="w_reg50080")
    timing = (("TRANS_HTOTAL", 0x0), ("TRANS_HBLANK", 0x4), ("TRANS_HSYNC", 0x8),
              ("TRANS_VTOTAL", 0xC), ("TRANS_VBLANK", 0x10), ("TRANS_VSYNC", 0x14),
              ("BCLRPAT", 0x20), ("TRANS_VSYNCSHIFT", 0x28), ("PIPESRC", 0x1C))
    transcoders = (("A", 0x60000), ("B", 0x61000), ("C", 0x62000), ("EDP", 0x6F000))
    for t, base in transcoders:
        for name, rel in timing:
            if t == "EDP" and name == "PIPESRC":
                continue
            b.reg(f"{name}({t})", base + rel)
    mn = ("PIPE_DATA_M1", "PIPE_DATA_N1", "PIPE_DATA_M2", "PIPE_DATA_N2",
          "PIPE_LINK_M1", "PIPE_LINK_N1", "PIPE_LINK_M2", "PIPE_LINK_N2")
    for t, base in transcoders:
        for i, name in enumerate(mn):
            b.reg(f"{name}({t})", base + 0x30 + 4 * i)
    pf = (("PF_CTL", 0x68080), ("PF_WIN_SZ", 0x68074), ("PF_WIN_POS", 0x68070),
          ("PF_VSCALE", 0x68084), ("PF_HSCALE", 0x68090))
    for i, p in enumerate(PIPES):
        for name, off in pf:
            b.reg(f"{name}({p})", off + i * 0x800)
    b.per_pipe("WM0_PIPE_ILK", (0x45100, 0x45104, 0x45200))
    for name, off in (("WM1_LP_ILK", 0x45108), ("WM2_LP_ILK", 0x4510C), ("WM3_LP_ILK", 0x45110),
                      ("WM1S_LP_ILK", 0x45120), ("WM2S_LP_IVB", 0x45124),
                      ("WM3S_LP_IVB", 0x45128), ("BLC_PWM_CPU_CTL2", 0x48250),
                      ("BLC_PWM_CPU_CTL", 0x48254), ("BLC_PWM_PCH_CTL1", 0xC8250),
                      ("BLC_PWM_PCH_CTL2", 0xC8254)):
        b.reg(name, off)
    b.raw(0x48268)
    b.reg("PCH_GMBUS0", regs.PCH_GMBUS0, 16, read="r_gmbus", write="w_gmbus")
    b.reg("PCH_GPIO_BASE", regs.PCH_GPIO_BASE, 24, flags=F_UNALIGN)
    b.raw(0xE4F00, 0x28)
    b.reg("_PCH_TRANSACONF", regs.PCH_TRANSACONF, write="w_transconf")
    b.reg("_PCH_TRANSBCONF", regs.PCH_TRANSBCONF, write="w_transconf")
    fdi = regs.FDI_PIPE_STRIDE
    b.per_pipe("FDI_RX_IIR", tuple(regs.FDI_RXA_IIR + i * fdi for i in range(3)),
               write="w_fdi_rx_iir")
    b.per_pipe("FDI_RX_IMR", tuple(regs.FDI_RXA_IMR + i * fdi for i in range(3)),
               write="w_fdi_rx_status")
    b.per_pipe("FDI_RX_CTL", tuple(regs.FDI_RXA_CTL + i * fdi for i in range(3)),
               write="w_fdi_rx_status")
    pch_timing = ("HTOTAL", "HBLANK", "HSYNC", "VTOTAL", "VBLANK", "VSYNC")
    for t, base in (("A", 0xE0000), ("B", 0xE1000)):
        for i, name in enumerate(pch_timing):
            b.reg(f"_PCH_TRANS_{name}_{t}", base + 4 * i)
        b.reg(f"_PCH_TRANS_VSYNCSHIFT_{t}", base + 0x28)
    for i, name in enumerate(("DATA_M1", "DATA_N1", "DATA_M2", "DATA_N2",
                              "LINK_M1", "LINK_N1", "LINK_M2", "LINK_N2")):
        b.reg(f"_PCH_TRANSA_{name}", 0xE0030 + 4 * i)
    b.per_pipe("TRANS_DP_CTL", (0xE0300, 0xE1300, 0xE2300))
    for i, p in enumerate(PIPES):
        b.reg(f"TVIDEO_DIP_CTL({p})", 0xE0200 + i * 0x1000)
        b.reg(f"TVIDEO_DIP_DATA({p})", 0xE0208 + i * 0x1000)
        b.reg(f"TVIDEO_DIP_GCP({p})", 0xE0210 + i * 0x1000)
    for name, off in (("_FDI_RXA_MISC", 0xF0010), ("_FDI_RXB_MISC", 0xF1010),
                      ("_FDI_RXA_TUSIZE1", 0xF0030), ("_FDI_RXA_TUSIZE2", 0xF0038),
                      ("_FDI_RXB_TUSIZE1", 0xF1030), ("_FDI_RXB_TUSIZE2", 0xF1038)):
        b.reg(name, off)
    b.reg("PCH_PP_CONTROL", regs.PCH_PP_CONTROL, write="w_pch_pp_control")
    for name, off in (("PCH_PP_DIVISOR", 0xC7210), ("PCH_PP_STATUS", regs.PCH_PP_STATUS),
                      ("PCH_LVDS", 0xE1180), ("_PCH_DPLL_A", 0xC6014), ("_PCH_DPLL_B", 0xC6018),
                      ("_PCH_FPA0", 0xC6040), ("_PCH_FPA1", 0xC6044), ("_PCH_FPB0", 0xC6048),
                      ("_PCH_FPB1", 0xC604C), ("PCH_DREF_CONTROL", 0xC6200),
                      ("PCH_RAWCLK_FREQ", 0xC6204), ("PCH_DPLL_SEL", 0xC7000)):
        b.reg(name, off)
    b.raw(0x61208)
    b.raw(0x6120C)
    b.reg("PCH_PP_ON_DELAYS", 0xC7208)
    b.reg("PCH_PP_OFF_DELAYS", 0xC720C)
    for off in regs.DPY_REG_READ_VALUES:
        b.raw(off, read="r_dpy_reg")
    b.reg("PCH_PORT_HOTPLUG", regs.PCH_PORT_HOTPLUG, flags=F_RO,
          ro_mask=regs.PORTA_HOTPLUG_STATUS_MASK | regs.PORTB_HOTPLUG_STATUS_MASK
          | regs.PORTC_HOTPLUG_STATUS_MASK | regs.PORTD_HOTPLUG_STATUS_MASK)
    b.reg("LCPLL_CTL", regs.LCPLL_CTL, write="w_lcpll_ctl")
    for name, off in (("FUSE_STRAP", regs.FUSE_STRAP), ("DIGITAL_PORT_HOTPLUG_CNTRL", 0x44030),
                      ("DISP_ARB_CTL", 0x45000), ("DISP_ARB_CTL2", 0x45004),
                      ("ILK_DISPLAY_CHICKEN1", 0x42000), ("ILK_DISPLAY_CHICKEN2", 0x42004),
                      ("ILK_DSPCLK_GATE_D", 0x42020), ("SOUTH_CHICKEN1", 0xC2000)):
        b.reg(name, off)
    b.reg("SOUTH_CHICKEN2", regs.SOUTH_CHICKEN2, write="w_south_chicken2")
    for name, off in (("_TRANSA_CHICKEN1", 0xF0060), ("_TRANSB_CHICKEN1", 0xF1060),
                      ("SOUTH_DSPCLK_GATE_D", 0xC2020), ("_TRANSA_CHICKEN2", 0xF0064),
                      ("_TRANSB_CHICKEN2", 0xF1064), ("ILK_DPFC_CB_BASE(A)", 0x43200),
                      ("ILK_DPFC_CONTROL(A)", 0x43208), ("ILK_DPFC_RECOMP_CTL(A)", 0x4320C),
                      ("ILK_DPFC_STATUS(A)", 0x43210), ("ILK_DPFC_FENCE_YOFF(A)", 0x43218),
                      ("ILK_DPFC_CHICKEN(A)", 0x43224), ("ILK_FBC_RT_BASE", 0x2128),
                      ("IPS_CTL", 0x43408)):
        b.reg(name, off)
    csc = ("COEFF_RY_GY", "COEFF_BY", "COEFF_RU_GU", "COEFF_BU", "COEFF_RV_GV", "COEFF_BV",
           "MODE", "PREOFF_HI", "PREOFF_ME", "PREOFF_LO", "POSTOFF_HI", "POSTOFF_ME",
           "POSTOFF_LO")
    csc_off = (0x10, 0x14, 0x18, 0x1C, 0x20, 0x24, 0x28, 0x30, 0x34, 0x38, 0x40, 0x44, 0x48)
    for i, p in enumerate(PIPES):
        for name, rel in zip(csc, csc_off, strict=True):
            b.reg(f"PIPE_CSC_{name}({p})", 0x49000 + i * 0x100 + rel)
    for i, p in enumerate(PIPES):
        b.reg(f"PREC_PAL_INDEX({p})", 0x4A400 + i * 0x800)
        b.reg(f"PREC_PAL_DATA({p})", 0x4A404 + i * 0x800)
        b.reg(f"PREC_PAL_GC_MAX({p}, 0)", 0x4A410 + i * 0x800, 12)
    b.raw(0x60110)
    b.raw(0x61110)
    for off in (0x70400, 0x71400, 0x72400):
        b.raw(off, 0x40)
    b.per_pipe("WM_LINETIME", (0x45270, 0x45274, 0x45278))
    b.reg("SPLL_CTL", 0x46020)
    b.reg("_WRPLL_CTL1", 0x46040)
    b.reg("_WRPLL_CTL2", 0x46060)
    for i, port in enumerate("ABCDE"):
        b.reg(f"PORT_CLK_SEL(PORT_{port})", 0x46100 + 4 * i)
    b.per_pipe("TRANS_CLK_SEL", (0x46140, 0x46144, 0x46148))
    b.reg("HSW_NDE_RSTWRN_OPT", 0x46408)
    for off in (0x46508, 0x49080, 0x49180, 0x49280):
        b.raw(off)
    for off in (0x49090, 0x49190, 0x49290):
        b.raw(off, 0x14)
    b.per_pipe("GAMMA_MODE", (0x4A480, 0x4AC80, 0x4B480))
    b.per_pipe("TRANS_MULT", (0x6002C, 0x6102C, 0x6202C))
    b.per_pipe("HSW_TVIDEO_DIP_CTL", (0x60200, 0x61200, 0x62200))
    b.reg("SFUSE_STRAP", regs.SFUSE_STRAP)
    b.reg("SBI_ADDR", regs.SBI_ADDR)
    b.reg("SBI_DATA", regs.SBI_DATA, read="r_sbi_data")
    b.reg("SBI_CTL_STAT", regs.SBI_CTL_STAT, write="w_sbi_ctl")
    b.reg("PIXCLK_GATE", 0xC6020)
    b.reg("_DPA_AUX_CH_CTL", regs.DPA_AUX_CH_CTL, 24, write="w_dp_aux_ch_ctl")
    ports = "ABCDE"
    for i, port in enumerate(ports):
        b.reg(f"DDI_BUF_CTL(PORT_{port})", regs.DDI_BUF_CTL_A + i * regs.DDI_PORT_STRIDE,
              write="w_ddi_buf_ctl")
    for i, port in enumerate(ports):
        b.reg(f"DP_TP_CTL(PORT_{port})", regs.DP_TP_CTL_A + i * regs.DDI_PORT_STRIDE,
              write="w_dp_tp_ctl")
    for i, port in enumerate(ports):
        b.reg(f"DP_TP_STATUS(PORT_{port})", regs.DP_TP_STATUS_A + i * regs.DDI_PORT_STRIDE,
              write="w_dp_tp_status" if port != "E" else None)
    b.reg("_DDI_BUF_TRANS_A", 0x64E00, 0x50)
    for off in (0x64E60, 0x64EC0, 0x64F20, 0x64F80):
        b.raw(off, 0x50)
    b.reg("HSW_AUD_CFG(A)", 0x65000)
    b.reg("HSW_AUD_PIN_ELD_CP_VLD", 0x650C0)
    b.reg("HSW_AUD_MISC_CTRL(A)", 0x65010)
    for t, off in (("A", 0x60400), ("B", 0x61400), ("C", 0x62400), ("EDP", 0x6F400)):
        b.reg(f"_TRANS_DDI_FUNC_CTL_{t}", off)
    for t, off in (("A", 0x60410), ("B", 0x61410), ("C", 0x62410), ("EDP", 0x6F410)):
        b.reg(f"_TRANS{t if t != 'EDP' else '_EDP'}_MSA_MISC", off)


def _generic_gt(b: _Builder) -> None:
    b.reg("FORCEWAKE", regs.FORCEWAKE)
    b.reg("FORCEWAKE_ACK", regs.FORCEWAKE_ACK)
    b.reg("GEN6_GT_CORE_STATUS", regs.GEN6_GT_CORE_STATUS)
    b.reg("GEN6_GT_THREAD_STATUS_REG", regs.GEN6_GT_THREAD_STATUS_REG)
    b.reg("GTFIFODBG", 0x120000, flags=_C)
    b.reg("GTFIFOCTL", 0x120008, flags=_C)
    for name, off in (("ECOBUS", 0xA180), ("GEN6_RC_CONTROL", regs.GEN6_RC_CONTROL),
                      ("GEN6_RC_STATE", regs.GEN6_RC_STATE), ("GEN6_RPNSWREQ", regs.GEN6_RPNSWREQ),
                      ("GEN6_RC_VIDEO_FREQ", 0xA00C), ("GEN6_RP_DOWN_TIMEOUT", 0xA010),
                      ("GEN6_RP_INTERRUPT_LIMITS", 0xA014), ("GEN6_RPSTAT1", 0xA01C),
                      ("GEN6_RP_CONTROL", regs.GEN6_RP_CONTROL),
                      ("GEN6_RP_UP_THRESHOLD", 0xA02C), ("GEN6_RP_DOWN_THRESHOLD", 0xA030),
                      ("GEN6_RP_CUR_UP_EI", 0xA050), ("GEN6_RP_CUR_UP", 0xA054),
                      ("GEN6_RP_PREV_UP", 0xA058), ("GEN6_RP_CUR_DOWN_EI", 0xA05C),
                      ("GEN6_RP_CUR_DOWN", 0xA060), ("GEN6_RP_PREV_DOWN", 0xA064),
                      ("GEN6_RP_UP_EI", 0xA068), ("GEN6_RP_DOWN_EI", 0xA06C),
                      ("GEN6_RP_IDLE_HYSTERSIS", 0xA070), ("GEN6_RC1_WAKE_RATE_LIMIT", 0xA098),
                      ("GEN6_RC6_WAKE_RATE_LIMIT", 0xA09C),
                      ("GEN6_RC6pp_WAKE_RATE_LIMIT", 0xA0A0),
                      ("GEN6_RC_EVALUATION_INTERVAL", 0xA0A8),
                      ("GEN6_RC_IDLE_HYSTERSIS", 0xA0AC), ("GEN6_RC_SLEEP", 0xA0B0),
                      ("GEN6_RC1e_THRESHOLD", 0xA0B4), ("GEN6_RC6_THRESHOLD", 0xA0B8),
                      ("GEN6_RC6p_THRESHOLD", 0xA0BC), ("GEN6_RC6pp_THRESHOLD", 0xA0C0),
                      ("GEN6_PMINTRMSK", 0xA168), ("RSTDBYCTL", 0x111B8)):
        b.reg(name, off)
    b.reg("GEN6_GDRST", regs.GEN6_GDRST, write="w_gdrst")
    b.reg("FENCE_REG_GEN6_LO(0)", regs.FENCE_REG_GEN6_LO, regs.FENCE_BLOCK_SIZE,
          read="r_fence", write="w_fence")
    b.reg("CPU_VGACNTRL", regs.CPU_VGACNTRL, write="w_vga_control")
    b.reg("TILECTL", 0x101000)
    b.reg("GEN6_UCGCTL1", 0x9400)
    b.reg("GEN6_UCGCTL2", 0x9404)
    b.raw(0x4F000, 0x90)
    b.reg("GEN6_PCODE_DATA", regs.GEN6_PCODE_DATA)
    b.reg("GEN6_PCODE_DATA1", regs.GEN6_PCODE_DATA1)
    b.reg("GEN7_ERR_INT", regs.GEN7_ERR_INT)
    b.reg("HSW_EDRAM_CAP", 0x120010)
    b.reg("HSW_IDICR", 0x9008)
    b.reg("GFX_FLSH_CNTL_GEN6", regs.GFX_FLSH_CNTL_GEN6)
    b.raw(0x3C)
    b.raw(0x860)
    b.reg("ECOSKPD(RCS)", regs.RENDER_RING_BASE + regs.RING_ECOSKPD)
    b.raw(0x121D0)
    b.reg("ECOSKPD(BCS)", regs.BLT_RING_BASE + regs.RING_ECOSKPD)
    b.raw(0x41D0)
    b.reg("GAC_ECO_BITS", 0x14090)
    for off in (0x6200, 0x6204, 0x6208, 0x7118, 0x7180, 0x7408, 0x7C00):
        b.raw(off)
    b.reg("GEN6_MBCTL", regs.GEN6_MBCTL, write="w_mbctl")
    b.raw(0x911C)
    b.reg("GEN8_FUSE2", regs.GEN8_FUSE2)
    b.reg("GEN7_UCGCTL4", 0x940C, flags=_C)
    b.reg("GAB_CTL", 0x24000)
    for off in (0x48800, 0xCE044, 0xE6500, 0xE6504, 0xE6600, 0xE6604, 0xE6700, 0xE6704,
                0xE6800, 0xE6804):
        b.raw(off)
    b.reg("PCH_GMBUS4", 0xC5110)
    b.reg("PCH_GMBUS5", 0xC5120)
    b.raw(0x902C)
    for base in (0xEC008, 0xEC408):
        for i in range(4):
            b.raw(base + 0x18 * i)
            b.raw(base + 4 + 0x18 * i)
    for off in (0xFC810, 0xFC81C, 0xFC828, 0xFC834, 0xFCC00, 0xFCC0C, 0xFCC18, 0xFCC24,
                0xFD000, 0xFD00C, 0xFD018, 0xFD024, 0xFD034):
        b.raw(off)
    b.reg("FPGA_DBG", regs.FPGA_DBG, write="w_fpga_dbg")
    for off in (0x2054, 0x12054, 0x22054, 0x1A054, 0x44070):
        b.raw(off)
    for off in (0x2178, 0x217C, 0x12178, 0x1217C):
        b.raw(off, flags=_C)
    b.raw(0x5200, 32, flags=_C)
    b.raw(0x5240, 32, flags=_C)
    b.raw(0x5280, 16, flags=_C)
    b.reg("BCS_SWCTRL", 0x22200, flags=_C)
    for name, off in (("HS_INVOCATION_COUNT", 0x2300), ("DS_INVOCATION_COUNT", 0x2308),
                      ("IA_VERTICES_COUNT", 0x2310), ("IA_PRIMITIVES_COUNT", 0x2318),
                      ("VS_INVOCATION_COUNT", 0x2320), ("GS_INVOCATION_COUNT", 0x2328),
                      ("GS_PRIMITIVES_COUNT", 0x2330), ("CL_INVOCATION_COUNT", 0x2338),
                      ("CL_PRIMITIVES_COUNT", 0x2340), ("PS_INVOCATION_COUNT", 0x2348),
                      ("PS_DEPTH_COUNT", 0x2350)):
        b.reg(name, off, 8, flags=_C)
    b.reg("ARB_MODE", 0x4030, flags=_MC)
    b.ring("RING_BBADDR", regs.RING_BBADDR, flags=F_GMADR, addr_mask=regs.GM_ADDR_MASK_RING)
    for off in (0x2220, 0x12220, 0x22220):
        b.raw(off, flags=_C)
    b.ring("RING_SYNC_1", regs.RING_SYNC_1, flags=_C)
    b.ring("RING_SYNC_0", regs.RING_SYNC_0, flags=_C)
    b.reg("GUC_STATUS", regs.GUC_STATUS, read="r_guc_status")
    b.reg("MCHBAR_MIRROR_BASE_SNB", regs.MCHBAR_MIRROR_BASE_SNB, regs.MCHBAR_MIRROR_SIZE)
    b.reg("VGT_PVINFO_PAGE", regs.VGT_PVINFO_PAGE, regs.VGT_PVINFO_SIZE,
          read="r_pvinfo", write="w_pvinfo")
    for i, p in enumerate(PIPES):
        b.reg(f"LGC_PALETTE({p}, 0)", 0x4A000 + i * 0x800, 1024)


def _bdw_only(b: _Builder) -> None:
    b.group = "bdw_only"
    for i, name in enumerate(("HSW_PWR_WELL_CTL1", "HSW_PWR_WELL_CTL2", "HSW_PWR_WELL_CTL3",
                              "HSW_PWR_WELL_CTL4", "HSW_PWR_WELL_CTL5", "HSW_PWR_WELL_CTL6")):
        b.reg(name, regs.HSW_PWR_WELL_CTL1 + 4 * i, write="w_power_well_ctl")
    b.reg("WM_MISC", 0x45260)
    b.reg("_SRD_CTL_EDP", 0x6F800)
    for off in (0xB1F0, 0xB1C0, 0xB100, 0xB10C):
        b.raw(off, flags=_C)
    b.raw(0xB110)
    b.reg("VF_GUARDBAND", 0x83A4, flags=_C | F_SR_IN_CTX)
    b.raw(0x8430, flags=_C)
    b.reg("GEN9_CTX_PREEMPT_REG", 0x2248, flags=_C)
    b.reg("FORCEWAKE_ACK_HSW", regs.FORCEWAKE_ACK_HSW)


def _bdw_plus(b: _Builder) -> None:
    b.group = "bdw_plus"
    irq = {regs.IRQ_IMR: ("IMR", "w_imr"), regs.IRQ_IER: ("IER", "w_ier"),
           regs.IRQ_IIR: ("IIR", "w_iir"), regs.IRQ_ISR: ("ISR", None)}
    order = (regs.IRQ_IMR, regs.IRQ_IER, regs.IRQ_IIR, regs.IRQ_ISR)
    banks = [(f"GEN8_GT_{{}}({n})", regs.GEN8_GT_ISR_BASE + 0x10 * n) for n in range(4)]
    banks += [(f"GEN8_DE_PIPE_{{}}({p})", regs.GEN8_DE_PIPE_ISR_BASE + 0x10 * i)
              for i, p in enumerate(PIPES)]
    banks += [("GEN8_DE_PORT_{}", regs.GEN8_DE_PORT_ISR), ("GEN8_DE_MISC_{}", regs.GEN8_DE_MISC_ISR),
              ("GEN8_PCU_{}", regs.GEN8_PCU_ISR)]
    for fmt, isr in banks:
        for rel in order:
            what, handler = irq[rel]
            b.reg(fmt.format(what), isr + rel, write=handler)
    b.reg("GEN8_MASTER_IRQ", regs.GEN8_MASTER_IRQ, write="w_master_irq")
    b.ring("RING_ACTHD_UDW", regs.RING_ACTHD_UDW, read="r_mmio_from_hw")
    b.ring("RING_RESET_CTL", regs.RING_RESET_CTL, flags=F_RO, ro_mask=_RESET_CTL_RO,
           write="w_ring_reset_ctl")
    b.ring("RING_ELSP", regs.RING_ELSP, write="w_elsp")
    b.ring("RING_EXECLIST_STATUS", regs.RING_EXECLIST_STATUS, 8, flags=F_RO, ro_mask=DWORD)
    b.ring("RING_CONTEXT_CONTROL", regs.RING_CONTEXT_CONTROL, flags=_C)
    b.ring("RING_CONTEXT_STATUS_BUF", regs.RING_CONTEXT_STATUS_BUF, regs.CSB_SIZE, flags=F_RO,
           ro_mask=DWORD)
    b.ring("RING_CONTEXT_STATUS_PTR", regs.RING_CONTEXT_STATUS_PTR, flags=F_MODE_MASK)
    b.per_pipe("PIPE_MISC", (0x70030, 0x71030, 0x72030))
    b.raw(0x1C1D0)
    b.reg("GEN6_MBCUNIT_SNPCR", 0x900C)
    b.reg("GEN7_MISCCPCTL", 0x9424)
    b.raw(0x1C054)
    b.reg("GEN6_PCODE_MAILBOX", regs.GEN6_PCODE_MAILBOX, write="w_mailbox")
    b.reg("GEN8_PRIVATE_PAT_LO", regs.GEN8_PRIVATE_PAT_LO)
    b.reg("GEN8_PRIVATE_PAT_HI", regs.GEN8_PRIVATE_PAT_HI)
    b.reg("GAMTARBMODE", 0x4A08)
    b.ring("RING_PDP", regs.RING_PDP_BASE, 8 * regs.RING_PDP_COUNT, flags=_C)
    b.ring("RING_HWS_PGA", regs.RING_HWS_PGA, flags=F_GMADR, addr_mask=regs.GM_ADDR_MASK_RING,
           write="w_hws_pga")
    b.reg("HDC_CHICKEN0", 0x7300, flags=_MC | F_SR_IN_CTX)
    b.per_pipe("CHICKEN_PIPESL_1", (0x420B0, 0x420B4, 0x420B8))
    for off in (0x6671C, 0x66C00, 0x66C04):
        b.raw(off)
    b.reg("HSW_GTT_CACHE_EN", 0x4024)
    b.reg("GEN8_EU_DISABLE0", regs.GEN8_EU_DISABLE0)
    b.reg("GEN8_EU_DISABLE1", regs.GEN8_EU_DISABLE1)
    b.reg("GEN8_EU_DISABLE2", regs.GEN8_EU_DISABLE2)
    b.raw(0xFDC)
    b.reg("GEN8_ROW_CHICKEN", 0xE4F0, flags=_MC)
    b.reg("GEN7_ROW_CHICKEN2", 0xE4F4, flags=_MC)
    b.reg("GEN8_UCGCTL6", 0x9430, flags=_C)
    b.reg("GEN8_L3SQCREG4", 0xB118, flags=_C)
    b.reg("GEN9_SCRATCH_LNCF1", 0xB008)
    b.reg("RING_FORCE_TO_NONPRIV(RCS, 0)", regs.RING_FORCE_TO_NONPRIV,
          4 * regs.RING_FORCE_TO_NONPRIV_SLOTS, flags=_C | F_CMD_WRITE_PATCH,
          write="w_force_nonpriv")
    b.raw(0x44484)
    b.raw(0x4448C)
    b.reg("GEN8_L3_LRA_1_GPGPU", 0x4DD4)
    for off in (0x110000, 0x48400, 0x6E570, 0x65F10):
        b.raw(off)
    b.raw(0xE194, flags=_MC)
    b.raw(0xE188, flags=_MC)
    b.reg("HALF_SLICE_CHICKEN2", 0xE180, flags=_MC)
    b.raw(0x2580, flags=_MC)
    for off in (0xE220, 0xE230, 0xE240, 0xE260, 0xE270, 0xE280, 0xE2A0, 0xE2B0, 0xE2C0, 0x21F0):
        b.raw(off, flags=_C)
    b.reg("GEN8_GAMW_ECO_DEV_RW_IA", regs.GEN8_GAMW_ECO_DEV_RW_IA, write="w_gamw_eco_dev_rw_ia")
    b.raw(0x215C, flags=_C)
    b.raw(0x2290, 8, flags=_C)
    b.raw(0x2B00)
    b.raw(0x2360)
    b.raw(0x1C17C, flags=_C)
    b.raw(0x1C178, flags=_C)
    for name, off in (("GEN8_RTCR", regs.GEN8_RTCR), ("GEN8_M1TCR", regs.GEN8_M1TCR),
                      ("GEN8_M2TCR", regs.GEN8_M2TCR), ("GEN8_BTCR", regs.GEN8_BTCR),
                      ("GEN8_VTCR", regs.GEN8_VTCR)):
        b.reg(name, off, write="w_tlb_control")
    b.reg("GEN8_RING_FAULT_REG", regs.GEN8_RING_FAULT_REG, flags=_C)
    for off in (0x22178, 0x1A178, 0x1A17C, 0x2217C):
        b.raw(off, flags=_C)
    b.reg("EDP_PSR_IMR", regs.EDP_PSR_IMR, write="w_edp_psr_imr_iir")
    b.reg("EDP_PSR_IIR", regs.EDP_PSR_IIR, write="w_edp_psr_imr_iir")
    b.raw(0xE4CC)  # F_CMD_ACCESS only on SKL+ (init_skl_mmio_info)
    b.reg("GEN7_SC_INSTDONE", regs.GEN7_SC_INSTDONE, read="r_mmio_from_hw")


def _pre_skl(b: _Builder) -> None:
    b.group = "pre_skl"
    b.reg("FORCEWAKE_MT", regs.FORCEWAKE_MT, write="w_mul_force_wake")
    b.reg("PCH_ADPA", regs.PCH_ADPA, write="w_pch_adpa")
    b.reg("_PCH_DPB_AUX_CH_CTL", regs.PCH_DPB_AUX_CH_CTL, 24, write="w_dp_aux_ch_ctl")
    b.reg("_PCH_DPC_AUX_CH_CTL", regs.PCH_DPC_AUX_CH_CTL, 24, write="w_dp_aux_ch_ctl")
    b.reg("_PCH_DPD_AUX_CH_CTL", regs.PCH_DPD_AUX_CH_CTL, 24, write="w_dp_aux_ch_ctl")
    for off in (0x70440, 0x71440, 0x72440, 0x7044C, 0x7144C, 0x7244C):
        b.raw(off, 0xC)


@attrs.frozen
class EngineMmio:
    """One register the MMIO context switch saves and restores per vGPU
    (mmio_context.c ``gen8_engine_mmio_list``)."""

    engine: int
    offset: int
    #: masked register: its bits 15:0 are restored with this write-enable mask.
    mask: int
    #: saved in the context image (restored by the context itself unless inhibited).
    in_context: bool


#: the Broadwell list, for the execution subsystem's vGPU switch.
ENGINE_MMIO_CONTEXT: tuple[EngineMmio, ...] = (
    EngineMmio(regs.ENGINE_RCS, 0x229C, 0xFFFF, False),  # RING_MODE_GEN7(RCS)
    EngineMmio(regs.ENGINE_RCS, 0x2248, 0, False),  # GEN9_CTX_PREEMPT_REG
    EngineMmio(regs.ENGINE_RCS, 0x2098, 0, False),  # RING_HWSTAM(RCS)
    EngineMmio(regs.ENGINE_RCS, 0x20C0, 0xFFFF, True),  # RING_INSTPM(RCS)
    *(EngineMmio(regs.ENGINE_RCS, regs.RING_FORCE_TO_NONPRIV + 4 * i, 0, False)
      for i in range(regs.RING_FORCE_TO_NONPRIV_SLOTS)),
    EngineMmio(regs.ENGINE_RCS, 0x7004, 0xFFFF, True),  # CACHE_MODE_1
    EngineMmio(regs.ENGINE_RCS, 0x7008, 0xFFFF, True),  # GEN7_GT_MODE
    EngineMmio(regs.ENGINE_RCS, 0x7000, 0xFFFF, True),  # CACHE_MODE_0_GEN7
    EngineMmio(regs.ENGINE_RCS, 0x7010, 0xFFFF, True),  # GEN7_COMMON_SLICE_CHICKEN1
    EngineMmio(regs.ENGINE_RCS, 0x7300, 0xFFFF, True),  # HDC_CHICKEN0
    EngineMmio(regs.ENGINE_RCS, 0x83A4, 0xFFFF, True),  # VF_GUARDBAND
    EngineMmio(regs.ENGINE_BCS, 0x2229C, 0xFFFF, False),  # RING_MODE_GEN7(BCS)
    EngineMmio(regs.ENGINE_BCS, 0x2209C, 0xFFFF, False),  # RING_MI_MODE(BCS)
    EngineMmio(regs.ENGINE_BCS, 0x220C0, 0xFFFF, False),  # RING_INSTPM(BCS)
    EngineMmio(regs.ENGINE_BCS, 0x22098, 0, False),  # RING_HWSTAM(BCS)
    EngineMmio(regs.ENGINE_BCS, 0x22028, 0, False),  # RING_EXCC(BCS)
)


def build_table() -> tuple[MmioInfo, ...]:
    """Every record, in upstream's order; raises if two records overlap."""
    b = _Builder()
    _generic(b)
    _bdw_only(b)
    _bdw_plus(b)
    _pre_skl(b)
    check(b.records)
    return tuple(b.records)


def check(records: list[MmioInfo]) -> None:
    """The table is a partition of dwords: aligned, inside the MMIO range, no overlap,
    unique names."""
    names = set()
    end = -1
    for info in sorted(records, key=lambda i: i.offset):
        if info.offset % 4 or info.size % 4 or info.size <= 0 or info.offset < end:
            raise ValueError(f"register table: {info.name} at {info.offset:#x} overlaps or is unaligned")
        if info.end > regs.MMIO_SIZE:
            raise ValueError(f"register table: {info.name} lies outside the MMIO range")
        if info.name in names:
            raise ValueError(f"register table: {info.name} is listed twice")
        names.add(info.name)
        end = info.end


#: the BDW table in upstream's order.
BDW_TABLE: tuple[MmioInfo, ...] = build_table()
#: the same records by offset.
REGISTER_TABLE: tuple[MmioInfo, ...] = tuple(sorted(BDW_TABLE, key=lambda i: i.offset))
#: records looked up by range (upstream's MMIO blocks).
BLOCKS: tuple[MmioInfo, ...] = tuple(i for i in REGISTER_TABLE if i.is_block)
#: dword offset -> the record covering it, for every non-block record and PVINFO.
INFO_BY_DWORD: dict[int, MmioInfo] = {
    d: i for i in REGISTER_TABLE
    if not i.is_block or i.offset == regs.VGT_PVINFO_PAGE for d in i.dwords
}
INFO_BY_NAME: dict[str, MmioInfo] = {i.name: i for i in REGISTER_TABLE}


def find(offset: int) -> MmioInfo | None:
    """The record covering byte ``offset`` (dword lookup, then the blocks)."""
    info = INFO_BY_DWORD.get(offset & ~3)
    if info is not None:
        return info
    for block in BLOCKS:
        if block.offset <= offset < block.end:
            return block
    return None


def handler_names() -> Iterator[str]:
    """Every handler name the table uses."""
    for info in REGISTER_TABLE:
        if info.read:
            yield info.read
        if info.write:
            yield info.write
