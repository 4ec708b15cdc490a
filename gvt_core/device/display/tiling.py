"""Surface memory layouts of GEN8: linear, X-tiled and (legacy) Y-tiled.

A tile is 4 KiB. X tiles are 512 bytes wide and 8 rows tall, rows stored one
after another. Y tiles are 128 bytes wide and 32 rows tall, stored as 8
columns of 16-byte OWords, each column's 32 rows contiguous (512 bytes).
Tiles follow each other left to right across the stride, then down. Gen8 does
no bit-6 address swizzling (i915 reports swizzle "none" for BDW), so the
mapping is exactly that. Everything here is vectorised: a whole surface's
byte offsets are computed in one numpy expression.

BDW's display planes scan out linear and X-tiled surfaces (DSPCNTR/SPRCTL
have one "tiled" bit); Y-tiling is what the render and blit engines (and
fences) also use, and what SKL planes can scan, so the decoder handles it for
surfaces described directly.
"""

from __future__ import annotations

import enum

import numpy as np

from gvt_core.hw import display_regs as dr


class Tiling(enum.Enum):
    """(tile width in bytes, tile height in rows); linear is one row of one byte."""

    LINEAR = ("linear", 1, 1)
    X = ("x", dr.X_TILE_WIDTH, dr.X_TILE_HEIGHT)
    Y = ("y", dr.Y_TILE_WIDTH, dr.Y_TILE_HEIGHT)

    @property
    def tile_width(self) -> int:
        return self.value[1]

    @property
    def tile_height(self) -> int:
        return self.value[2]

    @property
    def stride_align(self) -> int:
        """A stride must be a multiple of this (the plane's 64 bytes for linear)."""
        return dr.PLANE_STRIDE_ALIGN if self is Tiling.LINEAR else self.tile_width


def byte_offsets(tiling: Tiling, stride: int, x_bytes: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Offset from the surface base of byte column ``x_bytes`` in row ``y`` (broadcast)."""
    xb = np.asarray(x_bytes, dtype=np.int64)
    yy = np.asarray(y, dtype=np.int64)
    if tiling is Tiling.LINEAR:
        return yy * stride + xb
    tw, th = tiling.tile_width, tiling.tile_height
    tiles_per_row = stride // tw
    tile = (yy // th) * tiles_per_row + xb // tw
    ox, oy = xb % tw, yy % th
    if tiling is Tiling.X:
        within = oy * tw + ox
    else:
        within = (ox // dr.Y_TILE_OWORD) * (th * dr.Y_TILE_OWORD) + oy * dr.Y_TILE_OWORD \
            + ox % dr.Y_TILE_OWORD
    return tile * dr.TILE_SIZE + within


def surface_size(tiling: Tiling, stride: int, rows: int) -> int:
    """Bytes a surface of ``rows`` rows occupies (whole tile rows for tiled layouts)."""
    th = tiling.tile_height
    return -(-rows // th) * th * stride


def tile(rows: np.ndarray, tiling: Tiling) -> np.ndarray:
    """A linear image (rows, stride) of bytes laid out in ``tiling``: the flat uint8
    buffer the surface occupies in memory (padded to whole tile rows)."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    height, stride = rows.shape
    if stride % tiling.stride_align and tiling is not Tiling.LINEAR:
        raise ValueError(f"a {tiling.value[0]}-tiled stride must be a multiple of "
                         f"{tiling.stride_align} bytes, got {stride}")
    out = np.zeros(surface_size(tiling, stride, height), dtype=np.uint8)
    offs = byte_offsets(tiling, stride, np.arange(stride)[None, :], np.arange(height)[:, None])
    out[offs.ravel()] = rows.ravel()
    return out


def detile(buffer: np.ndarray, tiling: Tiling, stride: int, height: int) -> np.ndarray:
    """Inverse of :func:`tile`: the (height, stride) linear view of a tiled buffer."""
    offs = byte_offsets(tiling, stride, np.arange(stride)[None, :], np.arange(height)[:, None])
    return np.asarray(buffer, dtype=np.uint8)[offs]
