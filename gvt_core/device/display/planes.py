"""Plane state as descriptions: what each BDW plane of a pipe is set up to show (facts 9.4).

These are the fields upstream's fb_decoder reports (``intel_vgpu_primary_plane_format``
and friends) read from the virtual registers, without judging them: a
description of a plane with a reserved format or an impossible stride is
still a description (``format`` is None, ``format_name`` says what the bits
mean); :mod:`gvt_core.device.display.framebuffer` refuses to read pixels for
it with a typed error.

BDW specifics: the primary plane is as large as the pipe source (PIPESRC),
its start pixel is DSPOFFSET (x, y) for linear and tiled surfaces alike, and
it can only be linear or X-tiled. The surface address is the *live* one
(DSPSURFLIVE / SPRSURFLIVE): what is on screen, which for a synchronous flip
changes at the next vblank. Cursor positions are sign-magnitude.
"""

from __future__ import annotations

import attrs

from gvt_core.device.display.formats import (
    PRIMARY_FORMATS,
    PRIMARY_FORMATS_UNSUPPORTED,
    SPRITE_FORMATS,
    SPRITE_FORMATS_UNSUPPORTED,
    PixelFormat,
)
from gvt_core.device.display.tiling import Tiling
from gvt_core.device.display.vregs import RegisterView
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs


@attrs.frozen
class PrimaryPlane:
    pipe: int
    enabled: bool
    #: DSPCNTR bits 29:26 and what they decode to (None: reserved or unsupported).
    hw_format: int
    format: PixelFormat | None
    format_name: str
    tiling: Tiling
    #: live surface address in graphics memory (4 KiB aligned).
    base: int
    #: the last DSPSURF written (the pending flip target when it differs from ``base``).
    surface: int
    stride: int
    width: int
    height: int
    x_offset: int
    y_offset: int
    async_flip: bool


@attrs.frozen
class SpritePlane:
    pipe: int
    enabled: bool
    hw_format: int
    format: PixelFormat | None
    format_name: str
    tiling: Tiling
    base: int
    stride: int
    #: position on the pipe and destination size
    x: int
    y: int
    width: int
    height: int
    #: source size (differs from width/height when SPRSCALE scales)
    src_width: int
    src_height: int
    x_offset: int
    y_offset: int


@attrs.frozen
class CursorPlane:
    pipe: int
    enabled: bool
    #: CURCNTR mode bits and the square size they select (None: unsupported mode).
    mode: int
    size: int | None
    format: PixelFormat | None
    base: int
    #: top-left position on the pipe (may be negative: partly off screen)
    x: int
    y: int
    #: hot spot the guest driver reported in PVINFO (for a host cursor overlay)
    hot_x: int
    hot_y: int


def _r(view: RegisterView, offset_a: int, pipe: int) -> int:
    return view.get32(dr.pipe_reg(offset_a, pipe))


def pipe_enabled(view: RegisterView, pipe: int) -> bool:
    return bool(_r(view, regs.PIPECONF_A, pipe) & regs.PIPECONF_ENABLE)


def active_pipe(view: RegisterView) -> int | None:
    """The first enabled pipe (upstream ``get_active_pipe``)."""
    for pipe in range(regs.NUM_PIPES):
        if pipe_enabled(view, pipe):
            return pipe
    return None


def decode_primary(view: RegisterView, pipe: int) -> PrimaryPlane:
    ctl = _r(view, regs.DSPCNTR_A, pipe)
    hw = (ctl & dr.DISP_FORMAT_MASK) >> dr.DISP_FORMAT_SHIFT
    fmt = PRIMARY_FORMATS.get(hw)
    name = fmt.name if fmt else PRIMARY_FORMATS_UNSUPPORTED.get(hw, f"reserved ({hw:#x})")
    src = _r(view, regs.PIPESRC_A, pipe)
    off = _r(view, dr.DSPOFFSET_A, pipe)
    return PrimaryPlane(
        pipe=pipe,
        enabled=bool(ctl & dr.DISP_ENABLE),
        hw_format=hw,
        format=fmt,
        format_name=name,
        tiling=Tiling.X if ctl & dr.DISP_TILED else Tiling.LINEAR,
        base=_r(view, regs.DSPSURFLIVE_A, pipe) & dr.DISP_ADDR_MASK,
        surface=_r(view, regs.DSPSURF_A, pipe) & dr.DISP_ADDR_MASK,
        stride=_r(view, regs.DSPSTRIDE_A, pipe) & dr.PRI_STRIDE_MASK,
        width=((src >> dr.PIPESRC_WIDTH_SHIFT) & dr.PIPESRC_WIDTH_MASK) + 1,
        height=(src & dr.PIPESRC_HEIGHT_MASK) + 1,
        x_offset=off & dr.PLANE_OFFSET_X_MASK,
        y_offset=(off >> dr.PLANE_OFFSET_Y_SHIFT) & dr.PLANE_OFFSET_Y_MASK,
        async_flip=bool(ctl & dr.DISP_ASYNC_FLIP),
    )


def decode_sprite(view: RegisterView, pipe: int) -> SpritePlane:
    ctl = _r(view, regs.SPRCTL_A, pipe)
    hw = (ctl & dr.SPRITE_FORMAT_MASK) >> dr.SPRITE_FORMAT_SHIFT
    pair = SPRITE_FORMATS.get(hw)
    fmt = pair[1 if ctl & dr.SPRITE_RGB_ORDER_RGBX else 0] if pair else None
    name = fmt.name if fmt else SPRITE_FORMATS_UNSUPPORTED.get(hw, f"reserved ({hw:#x})")
    pos = _r(view, regs.SPRPOS_A, pipe)
    size = _r(view, regs.SPRSIZE_A, pipe)
    off = _r(view, dr.SPROFFSET_A, pipe)
    scale = _r(view, dr.SPRSCALE_A, pipe)
    width = (size & dr.PLANE_SIZE_W_MASK) + 1
    height = ((size >> dr.PLANE_SIZE_H_SHIFT) & dr.PLANE_SIZE_H_MASK) + 1
    if scale & dr.SPRITE_SCALE_ENABLE:
        src_w = ((scale >> dr.SPRITE_SRC_WIDTH_SHIFT) & dr.SPRITE_SRC_SIZE_MASK) + 1
        src_h = (scale & dr.SPRITE_SRC_SIZE_MASK) + 1
    else:
        src_w, src_h = width, height
    return SpritePlane(
        pipe=pipe,
        enabled=bool(ctl & dr.SPRITE_ENABLE),
        hw_format=hw,
        format=fmt,
        format_name=name,
        tiling=Tiling.X if ctl & dr.SPRITE_TILED else Tiling.LINEAR,
        base=_r(view, regs.SPRSURFLIVE_A, pipe) & dr.DISP_ADDR_MASK,
        stride=_r(view, regs.SPRSTRIDE_A, pipe) & dr.SPR_STRIDE_MASK,
        x=pos & dr.PLANE_POS_X_MASK,
        y=(pos >> dr.PLANE_POS_Y_SHIFT) & dr.PLANE_POS_Y_MASK,
        width=width,
        height=height,
        src_width=src_w,
        src_height=src_h,
        x_offset=off & dr.PLANE_OFFSET_X_MASK,
        y_offset=(off >> dr.PLANE_OFFSET_Y_SHIFT) & dr.PLANE_OFFSET_Y_MASK,
    )


def _signed(value: int, mask: int, sign: int) -> int:
    return -(value & mask) if value & sign else value & mask


def decode_cursor(view: RegisterView, pipe: int) -> CursorPlane:
    ctl = _r(view, regs.CURCNTR_A, pipe)
    mode = ctl & dr.MCURSOR_MODE_MASK
    size = dr.CURSOR_MODE_SIZE.get(mode)
    pos = _r(view, regs.CURPOS_A, pipe)
    return CursorPlane(
        pipe=pipe,
        enabled=mode != dr.MCURSOR_MODE_DISABLE,
        mode=mode,
        size=size,
        format=PixelFormat.ARGB8888 if size else None,
        base=_r(view, regs.CURBASE_A, pipe) & dr.CURSOR_ADDR_MASK,
        x=_signed(pos, dr.CURSOR_POS_X_MASK, dr.CURSOR_POS_X_SIGN),
        y=_signed(pos >> dr.CURSOR_POS_Y_SHIFT, dr.CURSOR_POS_Y_MASK,
                  dr.CURSOR_POS_Y_SIGN >> dr.CURSOR_POS_Y_SHIFT),
        hot_x=view.get32(dr.PVINFO_CURSOR_X_HOT),
        hot_y=view.get32(dr.PVINFO_CURSOR_Y_HOT),
    )
