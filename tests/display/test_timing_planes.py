"""Pipe timings -> mode and refresh rate; plane registers -> descriptions."""

from __future__ import annotations

from typing import Any

import pytest

from gvt_core.device.display.formats import PixelFormat
from gvt_core.device.display.planes import (
    active_pipe,
    decode_cursor,
    decode_primary,
    decode_sprite,
)
from gvt_core.device.display.tiling import Tiling
from gvt_core.device.display.timing import (
    MAX_REFRESH_MHZ,
    MIN_REFRESH_MHZ,
    decode_timing,
    dp_link_m_n,
    timing_registers,
)
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs


def program_mode(rf: Any, pipe: int, width: int, height: int, htotal: int, vtotal: int,
                 pixel_khz: int | None, clk_sel: int = dr.PORT_CLK_SEL_LCPLL_810) -> None:
    for off, val in timing_registers(pipe, width=width, height=height, htotal=htotal,
                                     vtotal=vtotal).items():
        rf.set32(off, val)
    if pixel_khz is None:
        return
    rf.set32(dr.trans_ddi_func_ctl(pipe), dr.TRANS_DDI_FUNC_ENABLE | dr.TRANS_DDI_MODE_SELECT_DP_SST
             | (regs.PORT_B << dr.TRANS_DDI_PORT_SHIFT))
    rf.set32(dr.port_clk_sel(regs.PORT_B), clk_sel)
    link = {dr.PORT_CLK_SEL_LCPLL_810: 162000, dr.PORT_CLK_SEL_LCPLL_1350: 270000,
            dr.PORT_CLK_SEL_LCPLL_2700: 540000, dr.PORT_CLK_SEL_SPLL: 270000}[clk_sel]
    m, n = dp_link_m_n(pixel_khz, link)
    rf.set32(dr.pipe_reg(dr.PIPE_LINK_M1_A, pipe), m)
    rf.set32(dr.pipe_reg(dr.PIPE_LINK_N1_A, pipe), n)


@pytest.mark.parametrize("clk_sel", [dr.PORT_CLK_SEL_LCPLL_810, dr.PORT_CLK_SEL_LCPLL_1350,
                                     dr.PORT_CLK_SEL_LCPLL_2700, dr.PORT_CLK_SEL_SPLL])
def test_1920x1200_mode(regfile: Any, clk_sel: int) -> None:
    regfile.set32(dr.SPLL_CTL, dr.SPLL_FREQ_1350MHz)
    program_mode(regfile, 0, 1920, 1200, 2080, 1235, 154000, clk_sel)
    t = decode_timing(regfile, 0)
    assert (t.hactive, t.vactive, t.htotal, t.vtotal) == (1920, 1200, 2080, 1235)
    assert t.size == (1920, 1200)
    assert abs(t.pixel_clock_khz - 154000) <= 1
    assert abs(t.refresh_mhz - 59950) <= 1


def test_other_pipe_and_mode(regfile: Any) -> None:
    program_mode(regfile, 2, 1024, 768, 1344, 806, 65000)
    t = decode_timing(regfile, 2)
    assert t.pipe == 2 and t.size == (1024, 768)
    assert abs(t.refresh_hz - 60.004) < 0.01
    assert decode_timing(regfile, 0).refresh_mhz == dr.DEFAULT_REFRESH_MHZ


def test_underivable_clock_defaults_to_60hz(regfile: Any) -> None:
    program_mode(regfile, 0, 800, 600, 1056, 628, None)
    assert decode_timing(regfile, 0).pixel_clock_khz is None
    assert decode_timing(regfile, 0).refresh_mhz == 60000
    # an HDMI transcoder or an HDMI PLL give no DP clock either
    program_mode(regfile, 0, 800, 600, 1056, 628, 40000, dr.PORT_CLK_SEL_LCPLL_810)
    regfile.set32(dr.port_clk_sel(regs.PORT_B), dr.PORT_CLK_SEL_WRPLL1)
    assert decode_timing(regfile, 0).refresh_mhz == 60000
    regfile.set32(dr.pipe_reg(dr.PIPE_LINK_N1_A, 0), 0)
    assert decode_timing(regfile, 0).pixel_clock_khz is None


def test_hostile_refresh_is_clamped(regfile: Any) -> None:
    program_mode(regfile, 0, 1, 1, 1, 1, 154000)  # a 1x1-pixel-total mode at 154 MHz
    assert decode_timing(regfile, 0).refresh_mhz == MAX_REFRESH_MHZ
    program_mode(regfile, 0, 8192, 8192, 8192, 8192, 10)
    assert decode_timing(regfile, 0).refresh_mhz == MIN_REFRESH_MHZ


def test_primary_description(regfile: Any) -> None:
    p = 1
    regfile.set32(dr.pipe_reg(regs.DSPCNTR_A, p), dr.DISP_ENABLE | dr.DISP_TILED | dr.DISP_ASYNC_FLIP
                  | (dr.DISP_FORMAT_RGBX888 << dr.DISP_FORMAT_SHIFT))
    regfile.set32(dr.pipe_reg(regs.DSPSURFLIVE_A, p), 0x0123_4567)
    regfile.set32(dr.pipe_reg(regs.DSPSURF_A, p), 0x0200_0000)
    regfile.set32(dr.pipe_reg(regs.DSPSTRIDE_A, p), 8192 | 0x3F)  # low bits are not stride
    regfile.set32(dr.pipe_reg(regs.PIPESRC_A, p), (1279 << 16) | 719)
    regfile.set32(dr.pipe_reg(dr.DSPOFFSET_A, p), (10 << 16) | 20)
    d = decode_primary(regfile, p)
    assert d.enabled and d.format is PixelFormat.XBGR8888 and d.tiling is Tiling.X
    assert (d.base, d.surface, d.stride) == (0x0123_4000, 0x0200_0000, 8192)
    assert (d.width, d.height, d.x_offset, d.y_offset) == (1280, 720, 20, 10)
    assert d.async_flip


@pytest.mark.parametrize(("bits", "fmt"), [(0x5, PixelFormat.RGB565), (0x6, PixelFormat.XRGB8888),
                                           (0x8, PixelFormat.XBGR2101010),
                                           (0xA, PixelFormat.XRGB2101010),
                                           (0xE, PixelFormat.XBGR8888), (0x2, None), (0x0, None),
                                           (0x7, None), (0xF, None)])
def test_primary_formats(regfile: Any, bits: int, fmt: PixelFormat | None) -> None:
    regfile.set32(regs.DSPCNTR_A, dr.DISP_ENABLE | (bits << dr.DISP_FORMAT_SHIFT))
    d = decode_primary(regfile, 0)
    assert d.format is fmt and d.hw_format == bits
    assert d.format_name == (fmt.name if fmt else ("8-bit indexed (C8)" if bits == 2
                                                   else f"reserved ({bits:#x})"))


def test_sprite_description(regfile: Any) -> None:
    regfile.set32(regs.SPRCTL_A, dr.SPRITE_ENABLE | (dr.SPRITE_FORMAT_RGBX888 << dr.SPRITE_FORMAT_SHIFT))
    regfile.set32(regs.SPRPOS_A, (40 << 16) | 30)
    regfile.set32(regs.SPRSIZE_A, (99 << 16) | 199)
    regfile.set32(regs.SPRSTRIDE_A, 1024)
    regfile.set32(regs.SPRSURFLIVE_A, 0x10000)
    d = decode_sprite(regfile, 0)
    assert d.format is PixelFormat.XRGB8888 and d.tiling is Tiling.LINEAR
    assert (d.x, d.y, d.width, d.height, d.src_width, d.src_height) == (30, 40, 200, 100, 200, 100)
    regfile.set32(regs.SPRCTL_A, dr.SPRITE_ENABLE | dr.SPRITE_RGB_ORDER_RGBX | dr.SPRITE_TILED
                  | (dr.SPRITE_FORMAT_RGBX101010 << dr.SPRITE_FORMAT_SHIFT))
    regfile.set32(dr.SPRSCALE_A, dr.SPRITE_SCALE_ENABLE | (49 << 16) | 24)
    d = decode_sprite(regfile, 0)
    assert d.format is PixelFormat.XBGR2101010 and d.tiling is Tiling.X
    assert (d.src_width, d.src_height) == (50, 25)
    regfile.set32(regs.SPRCTL_A, dr.SPRITE_ENABLE | (dr.SPRITE_FORMAT_YUV422 << dr.SPRITE_FORMAT_SHIFT))
    assert decode_sprite(regfile, 0).format is None
    assert decode_sprite(regfile, 0).format_name == "packed YUV 4:2:2"


@pytest.mark.parametrize(("mode", "size"), [(0x27, 64), (0x22, 128), (0x23, 256), (0x07, 64),
                                            (0x04, None), (0x02, None)])
def test_cursor_description(regfile: Any, mode: int, size: int | None) -> None:
    regfile.set32(regs.CURCNTR_A, mode)
    regfile.set32(regs.CURBASE_A, 0x8000_0123)
    # x = -5 (sign-magnitude), y = +700
    regfile.set32(regs.CURPOS_A, (700 << 16) | dr.CURSOR_POS_X_SIGN | 5)
    regfile.set32(dr.PVINFO_CURSOR_X_HOT, 3)
    regfile.set32(dr.PVINFO_CURSOR_Y_HOT, 4)
    c = decode_cursor(regfile, 0)
    assert c.enabled and c.size == size and c.base == 0x8000_0000
    assert (c.x, c.y, c.hot_x, c.hot_y) == (-5, 700, 3, 4)
    assert c.format is (PixelFormat.ARGB8888 if size else None)
    regfile.set32(regs.CURPOS_A, dr.CURSOR_POS_Y_SIGN | (2 << 16) | 9)
    assert (decode_cursor(regfile, 0).x, decode_cursor(regfile, 0).y) == (9, -2)
    regfile.set32(regs.CURCNTR_A, 0)
    assert not decode_cursor(regfile, 0).enabled


def test_active_pipe(regfile: Any) -> None:
    assert active_pipe(regfile) is None
    regfile.set32(dr.pipe_reg(regs.PIPECONF_A, 2), regs.PIPECONF_ENABLE)
    assert active_pipe(regfile) == 2
    regfile.set32(regs.PIPECONF_A, regs.PIPECONF_ENABLE)
    assert active_pipe(regfile) == 0
