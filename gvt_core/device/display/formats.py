"""Pixel formats a BDW plane can scan out, and their numpy conversion to and from RGBA8.

Names are DRM fourcc names (what GVT-g's fb_decoder reports): XRGB8888 is a
little-endian 32-bit word X:R:G:B from the top byte down, so its bytes in
memory are B, G, R, X. Decoding expands 5/6-bit channels by bit replication
and drops the two low bits of 10-bit channels; encoding replicates the high
bits into the low ones, so ``decode(encode(img)) == img`` for every 8-bit
image in the 8888 and 2101010 formats.
"""

from __future__ import annotations

import enum

import numpy as np

from gvt_core.hw import display_regs as dr


class PixelFormat(enum.Enum):
    """(DRM fourcc code, bytes per pixel, has alpha)."""

    XRGB8888 = ("XR24", 4, False)
    ARGB8888 = ("AR24", 4, True)
    XBGR8888 = ("XB24", 4, False)
    ABGR8888 = ("AB24", 4, True)
    RGB565 = ("RG16", 2, False)
    XRGB2101010 = ("XR30", 4, False)
    XBGR2101010 = ("XB30", 4, False)

    @property
    def fourcc(self) -> str:
        return self.value[0]

    @property
    def cpp(self) -> int:
        """Bytes per pixel."""
        return self.value[1]

    @property
    def has_alpha(self) -> bool:
        return self.value[2]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype("<u2") if self.cpp == 2 else np.dtype("<u4")


#: DSPCNTR bits 29:26 -> format (GVT's bdw_pixel_formats, minus 8-bit indexed).
PRIMARY_FORMATS: dict[int, PixelFormat] = {
    dr.DISP_FORMAT_BGRX565: PixelFormat.RGB565,
    dr.DISP_FORMAT_BGRX888: PixelFormat.XRGB8888,
    dr.DISP_FORMAT_RGBX101010: PixelFormat.XBGR2101010,
    dr.DISP_FORMAT_BGRX101010: PixelFormat.XRGB2101010,
    dr.DISP_FORMAT_RGBX888: PixelFormat.XBGR8888,
}
#: primary formats BDW defines but the decoder cannot show (no palette emulation).
PRIMARY_FORMATS_UNSUPPORTED = {dr.DISP_FORMAT_8BPP: "8-bit indexed (C8)"}

#: SPRCTL format field -> (format with BGRX order, with RGBX order); i915's ivb_sprite_ctl.
SPRITE_FORMATS: dict[int, tuple[PixelFormat, PixelFormat]] = {
    dr.SPRITE_FORMAT_RGBX888: (PixelFormat.XRGB8888, PixelFormat.XBGR8888),
    dr.SPRITE_FORMAT_RGBX101010: (PixelFormat.XRGB2101010, PixelFormat.XBGR2101010),
}
SPRITE_FORMATS_UNSUPPORTED = {
    dr.SPRITE_FORMAT_YUV422: "packed YUV 4:2:2",
    dr.SPRITE_FORMAT_RGBX161616: "RGBX 16:16:16:16 float",
    dr.SPRITE_FORMAT_YUV444: "packed YUV 4:4:4",
}


def _expand(v: np.ndarray, bits: int) -> np.ndarray:
    """An n-bit channel to 8 bits by replicating its high bits."""
    if bits >= 8:
        return (v >> (bits - 8)).astype(np.uint8)
    return ((v << (8 - bits)) | (v >> (2 * bits - 8))).astype(np.uint8)


def _widen(v: np.ndarray, bits: int) -> np.ndarray:
    """8-bit channel to n bits (inverse of :func:`_expand` on its image)."""
    v = v.astype(np.uint32)
    if bits <= 8:
        return v >> (8 - bits)
    return (v << (bits - 8)) | (v >> (16 - bits))


def decode(values: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Pixel words (any shape, little-endian values) -> RGBA8 (shape + (4,))."""
    v = values.astype(np.uint32)
    out = np.empty((*v.shape, 4), dtype=np.uint8)
    if fmt is PixelFormat.RGB565:
        out[..., 0] = _expand((v >> 11) & 0x1F, 5)
        out[..., 1] = _expand((v >> 5) & 0x3F, 6)
        out[..., 2] = _expand(v & 0x1F, 5)
        out[..., 3] = 255
        return out
    if fmt in (PixelFormat.XRGB2101010, PixelFormat.XBGR2101010):
        hi, lo = _expand((v >> 20) & 0x3FF, 10), _expand(v & 0x3FF, 10)
        out[..., 0], out[..., 2] = (hi, lo) if fmt is PixelFormat.XRGB2101010 else (lo, hi)
        out[..., 1] = _expand((v >> 10) & 0x3FF, 10)
        out[..., 3] = 255
        return out
    hi, lo = (v >> 16) & 0xFF, v & 0xFF
    bgr_order = fmt in (PixelFormat.XRGB8888, PixelFormat.ARGB8888)
    out[..., 0], out[..., 2] = (hi, lo) if bgr_order else (lo, hi)
    out[..., 1] = (v >> 8) & 0xFF
    out[..., 3] = (v >> 24) if fmt.has_alpha else 255
    return out


def encode(rgba: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """RGBA8 (h, w, 4) -> pixel words (h, w) of ``fmt.dtype``; X bits are written as 1s
    for 8888 formats without alpha (as a GPU writes them) and 0s for 2101010."""
    r, g, b, a = (rgba[..., i].astype(np.uint32) for i in range(4))
    if fmt is PixelFormat.RGB565:
        return ((_widen(r, 5) << 11) | (_widen(g, 6) << 5) | _widen(b, 5)).astype(fmt.dtype)
    if fmt in (PixelFormat.XRGB2101010, PixelFormat.XBGR2101010):
        hi, lo = (r, b) if fmt is PixelFormat.XRGB2101010 else (b, r)
        return ((_widen(hi, 10) << 20) | (_widen(g, 10) << 10) | _widen(lo, 10)).astype(fmt.dtype)
    hi, lo = (r, b) if fmt in (PixelFormat.XRGB8888, PixelFormat.ARGB8888) else (b, r)
    top = a if fmt.has_alpha else np.full_like(r, 0xFF)
    return ((top << 24) | (hi << 16) | (g << 8) | lo).astype(fmt.dtype)
