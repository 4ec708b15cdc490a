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

OPAQUE = 0xFF


#: (shift, bits) of one channel in the little-endian pixel word
Channel = tuple[int, int]


class PixelFormat(enum.Enum):
    """(DRM fourcc code, bytes per pixel, R, G, B, A channel or None) per the DRM
    fourcc definitions; a format without alpha has X (don't care) bits instead."""

    XRGB8888 = ("XR24", 4, (16, 8), (8, 8), (0, 8), None)
    ARGB8888 = ("AR24", 4, (16, 8), (8, 8), (0, 8), (24, 8))
    XBGR8888 = ("XB24", 4, (0, 8), (8, 8), (16, 8), None)
    ABGR8888 = ("AB24", 4, (0, 8), (8, 8), (16, 8), (24, 8))
    RGB565 = ("RG16", 2, (11, 5), (5, 6), (0, 5), None)
    XRGB2101010 = ("XR30", 4, (20, 10), (10, 10), (0, 10), None)
    XBGR2101010 = ("XB30", 4, (0, 10), (10, 10), (20, 10), None)

    @property
    def fourcc(self) -> str:
        return self.value[0]

    @property
    def cpp(self) -> int:
        """Bytes per pixel."""
        return self.value[1]

    @property
    def channels(self) -> tuple[Channel, Channel, Channel, Channel | None]:
        return self.value[2], self.value[3], self.value[4], self.value[5]

    @property
    def has_alpha(self) -> bool:
        return self.value[5] is not None

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
    v = np.asarray(v).astype(np.uint32)
    if bits <= 8:
        return v >> (8 - bits)
    return (v << (bits - 8)) | (v >> (16 - bits))


def decode(values: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Pixel words (any shape, little-endian values) -> RGBA8 (shape + (4,))."""
    v = values.astype(np.uint32)
    out = np.empty((*v.shape, 4), dtype=np.uint8)
    for i, channel in enumerate(fmt.channels):
        if channel is None:
            out[..., i] = OPAQUE
        else:
            shift, bits = channel
            out[..., i] = _expand((v >> shift) & ((1 << bits) - 1), bits)
    return out


def encode(rgba: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """RGBA8 (h, w, 4) -> pixel words (h, w) of ``fmt.dtype``; X bits are written as 0."""
    word = np.zeros(rgba.shape[:-1], dtype=np.uint32)
    for i, channel in enumerate(fmt.channels):
        if channel is not None:
            shift, bits = channel
            word |= _widen(rgba[..., i], bits) << shift
    return word.astype(fmt.dtype)
