"""Pipe timings: what mode a guest programmed, and at what refresh rate (facts 6.5, 9.3).

The transcoder timing registers hold "value - 1" fields (active/total in
HTOTAL and VTOTAL, blank and sync start/end), PIPESRC the pipe's source size.
The pixel clock of a DP transcoder is the port's link symbol clock times the
link M/N ratio (upstream ``vgpu_update_refresh_rate`` with
``bdw_vgpu_get_dp_bitrate``): link clock from PORT_CLK_SEL (LCPLL 810/1350/
2700 or SPLL), M/N from PIPE_LINK_M1/N1. The refresh rate is
pixel clock / (htotal x vtotal), kept in mHz like GVT's ``vrefresh_k``.
When the clock cannot be derived (no DP port, HDMI PLL, M/N zero), GVT's
default of 60 Hz applies. A guest can program any value, so the rate is
clamped to [:data:`MIN_REFRESH_MHZ`, :data:`MAX_REFRESH_MHZ`]: the vblank
timer a hostile mode could otherwise drive at megahertz stays bounded.
"""

from __future__ import annotations

import attrs

from gvt_core.device.display.vregs import RegisterView
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs

#: the slowest and fastest virtual vblank (1 Hz, 240 Hz), in mHz.
MIN_REFRESH_MHZ = 1_000
MAX_REFRESH_MHZ = 240_000
_DP_MODES = (dr.TRANS_DDI_MODE_SELECT_DP_SST, dr.TRANS_DDI_MODE_SELECT_DP_MST)


def _split(value: int) -> tuple[int, int]:
    """(low field + 1, high field + 1) of a timing register."""
    return ((value & dr.TIMING_FIELD_MASK) + 1,
            ((value >> dr.TIMING_HI_SHIFT) & dr.TIMING_FIELD_MASK) + 1)


@attrs.frozen
class PipeTiming:
    """One pipe's programmed mode."""

    pipe: int
    hactive: int
    htotal: int
    hblank_start: int
    hblank_end: int
    hsync_start: int
    hsync_end: int
    vactive: int
    vtotal: int
    vblank_start: int
    vblank_end: int
    vsync_start: int
    vsync_end: int
    src_width: int
    src_height: int
    #: the DP pixel clock, when the transcoder's port clock and M/N give one.
    pixel_clock_khz: int | None
    #: vertical refresh in mHz (derived, or GVT's 60 Hz default), clamped.
    refresh_mhz: int

    @property
    def refresh_hz(self) -> float:
        return self.refresh_mhz / 1000

    @property
    def size(self) -> tuple[int, int]:
        return (self.src_width, self.src_height)


def link_clock_khz(view: RegisterView, port: int) -> int | None:
    """The DP link symbol clock of ``port`` (ports B-E have a PORT_CLK_SEL)."""
    if not regs.PORT_B <= port <= regs.PORT_E:
        return None
    sel = view.get32(dr.port_clk_sel(port)) & dr.PORT_CLK_SEL_MASK
    if sel == dr.PORT_CLK_SEL_SPLL:
        return dr.DP_LINK_CLOCK_KHZ_BY_SPLL.get(view.get32(dr.SPLL_CTL) & dr.SPLL_FREQ_MASK)
    return dr.DP_LINK_CLOCK_KHZ_BY_CLK_SEL.get(sel)


def pixel_clock_khz(view: RegisterView, transcoder: int) -> int | None:
    """link clock x LINK_M1 / LINK_N1 of a DP transcoder; None if not derivable."""
    func = view.get32(dr.trans_ddi_func_ctl(transcoder))
    if func & dr.TRANS_DDI_MODE_SELECT_MASK not in _DP_MODES:
        return None
    link = link_clock_khz(view, (func & dr.TRANS_DDI_PORT_MASK) >> dr.TRANS_DDI_PORT_SHIFT)
    m = view.get32(dr.pipe_reg(dr.PIPE_LINK_M1_A, transcoder)) & dr.DATA_LINK_M_N_MASK
    n = view.get32(dr.pipe_reg(dr.PIPE_LINK_N1_A, transcoder)) & dr.DATA_LINK_M_N_MASK
    if link is None or n == 0 or m == 0:
        return None
    return link * m // n


def refresh_mhz(pixel_clock: int | None, htotal: int, vtotal: int) -> int:
    """Refresh in mHz, GVT's default when unknown, clamped to the supported range."""
    if pixel_clock is None:
        return dr.DEFAULT_REFRESH_MHZ
    rate = round(pixel_clock * 1_000_000 / (htotal * vtotal))
    return min(max(rate, MIN_REFRESH_MHZ), MAX_REFRESH_MHZ)


def decode_timing(view: RegisterView, pipe: int) -> PipeTiming:
    """Pipe ``pipe``'s mode from its (transcoder ``pipe``'s) registers."""
    def r(offset_a: int) -> int:
        return view.get32(dr.pipe_reg(offset_a, pipe))

    hactive, htotal = _split(r(regs.HTOTAL_A))
    hblank_start, hblank_end = _split(r(regs.HBLANK_A))
    hsync_start, hsync_end = _split(r(regs.HSYNC_A))
    vactive, vtotal = _split(r(regs.VTOTAL_A))
    vblank_start, vblank_end = _split(r(regs.VBLANK_A))
    vsync_start, vsync_end = _split(r(regs.VSYNC_A))
    src = r(regs.PIPESRC_A)
    clock = pixel_clock_khz(view, pipe)
    return PipeTiming(
        pipe, hactive, htotal, hblank_start, hblank_end, hsync_start, hsync_end,
        vactive, vtotal, vblank_start, vblank_end, vsync_start, vsync_end,
        ((src >> dr.PIPESRC_WIDTH_SHIFT) & dr.PIPESRC_WIDTH_MASK) + 1,
        (src & dr.PIPESRC_HEIGHT_MASK) + 1,
        clock, refresh_mhz(clock, htotal, vtotal),
    )


def timing_registers(pipe: int, *, width: int, height: int, htotal: int, vtotal: int,
                     hsync: tuple[int, int] | None = None,
                     vsync: tuple[int, int] | None = None) -> dict[int, int]:
    """The register values a driver programs for a mode (the inverse of
    :func:`decode_timing`'s timing part): offset -> value."""
    hs = hsync or (width + 48, width + 80)
    vs = vsync or (height + 3, height + 9)

    def pair(lo: int, hi: int) -> int:
        return ((hi - 1) << dr.TIMING_HI_SHIFT) | (lo - 1)

    return {
        dr.pipe_reg(regs.HTOTAL_A, pipe): pair(width, htotal),
        dr.pipe_reg(regs.HBLANK_A, pipe): pair(width, htotal),
        dr.pipe_reg(regs.HSYNC_A, pipe): pair(*hs),
        dr.pipe_reg(regs.VTOTAL_A, pipe): pair(height, vtotal),
        dr.pipe_reg(regs.VBLANK_A, pipe): pair(height, vtotal),
        dr.pipe_reg(regs.VSYNC_A, pipe): pair(*vs),
        dr.pipe_reg(regs.PIPESRC_A, pipe): ((width - 1) << dr.PIPESRC_WIDTH_SHIFT) | (height - 1),
    }


def dp_link_m_n(pixel_clock: int, link_clock: int) -> tuple[int, int]:
    """LINK_M/LINK_N for a pixel clock on a link clock (both kHz), reduced as i915
    does to N = 2^19."""
    n = dr.DP_LINK_N_REDUCED
    return (pixel_clock * n // link_clock, n)
