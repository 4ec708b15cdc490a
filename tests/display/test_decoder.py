"""The framebuffer decoder: formats x tilings round-trip against reference images."""

from __future__ import annotations

import itertools

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gvt_core.device.display.formats import PixelFormat, decode, encode
from gvt_core.device.display.framebuffer import Surface, read_pixels, read_rgba
from gvt_core.device.display.tiling import Tiling, byte_offsets, detile, tile
from gvt_core.errors import BadStrideError, SurfaceOutOfRangeError, UnmappedSurfaceError

PAGE = 4096


class PageMemory:
    """Graphics memory for the pure decoder tests: a dict of GM page -> bytes; pages
    outside [lo, hi) are out of range, missing ones unmapped."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.pages_: dict[int, np.ndarray] = {}
        self.served = 0

    def put(self, gm: int, data: np.ndarray) -> None:
        data = np.asarray(data, dtype=np.uint8)
        for i in range(0, len(data), PAGE):
            chunk = np.zeros(PAGE, np.uint8)
            part = data[i : i + PAGE]
            chunk[: len(part)] = part
            self.pages_[(gm + i) // PAGE] = chunk

    def pages(self, gm_pages: np.ndarray, plane: str) -> np.ndarray:
        out = []
        for p in gm_pages.tolist():
            if not self.lo <= p * PAGE < self.hi:
                raise SurfaceOutOfRangeError(plane, f"page {p:#x} out of range")
            if p not in self.pages_:
                raise UnmappedSurfaceError(plane, f"page {p:#x} unmapped")
            out.append(self.pages_[p])
        self.served += len(out)
        return np.stack(out)


def reference_rgba(fmt: PixelFormat, v: int) -> tuple[int, int, int, int]:
    """An independent, per-pixel statement of each format (DRM fourcc definitions)."""
    def ch(bits: int, value: int) -> int:
        return (value << (8 - bits)) | (value >> (2 * bits - 8)) if bits < 8 else value >> (bits - 8)

    if fmt is PixelFormat.RGB565:
        return (ch(5, v >> 11), ch(6, (v >> 5) & 63), ch(5, v & 31), 255)
    if fmt is PixelFormat.XRGB2101010:
        return (ch(10, (v >> 20) & 1023), ch(10, (v >> 10) & 1023), ch(10, v & 1023), 255)
    if fmt is PixelFormat.XBGR2101010:
        return (ch(10, v & 1023), ch(10, (v >> 10) & 1023), ch(10, (v >> 20) & 1023), 255)
    b0, b1, b2, b3 = v & 255, (v >> 8) & 255, (v >> 16) & 255, v >> 24
    if fmt in (PixelFormat.XRGB8888, PixelFormat.ARGB8888):
        return (b2, b1, b0, b3 if fmt.has_alpha else 255)
    return (b0, b1, b2, b3 if fmt.has_alpha else 255)


@pytest.mark.parametrize("fmt", list(PixelFormat))
def test_decode_matches_reference(fmt: PixelFormat) -> None:
    rng = np.random.default_rng(1)
    words = rng.integers(0, 1 << (8 * fmt.cpp), size=(7, 9), dtype=np.uint64).astype(fmt.dtype)
    got = decode(words, fmt)
    for (y, x) in itertools.product(range(7), range(9)):
        assert tuple(got[y, x]) == reference_rgba(fmt, int(words[y, x])), (fmt, y, x)


@pytest.mark.parametrize("fmt", list(PixelFormat))
def test_encode_inverts_decode(fmt: PixelFormat) -> None:
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, size=(16, 16, 4), dtype=np.uint8)
    if not fmt.has_alpha:
        rgba[..., 3] = 255
    back = decode(encode(rgba, fmt), fmt)
    if fmt is PixelFormat.RGB565:  # 5/6-bit channels: the high bits survive
        assert np.array_equal(back[..., 0] >> 3, rgba[..., 0] >> 3)
        assert np.array_equal(back[..., 1] >> 2, rgba[..., 1] >> 2)
        assert np.array_equal(back[..., 2] >> 3, rgba[..., 2] >> 3)
    else:
        assert np.array_equal(back, rgba)


def test_tile_geometry() -> None:
    def off(t: Tiling, stride: int, x: int, y: int) -> int:
        return int(byte_offsets(t, stride, np.array(x), np.array(y)))

    assert off(Tiling.LINEAR, 4096, 12, 3) == 3 * 4096 + 12
    # X: 512 B x 8 rows per 4 KiB tile, rows contiguous
    assert off(Tiling.X, 2048, 1, 0) == 1
    assert off(Tiling.X, 2048, 0, 1) == 512
    assert off(Tiling.X, 2048, 512, 0) == 4096
    assert off(Tiling.X, 2048, 0, 8) == 4 * 4096  # next tile row: 4 tiles across
    assert off(Tiling.X, 2048, 513, 9) == (4 + 1) * 4096 + 512 + 1
    # Y: 128 B x 32 rows per tile, 16-byte OWords in columns of 32 rows
    assert off(Tiling.Y, 512, 15, 0) == 15
    assert off(Tiling.Y, 512, 0, 1) == 16
    assert off(Tiling.Y, 512, 16, 0) == 512
    assert off(Tiling.Y, 512, 17, 2) == 512 + 32 + 1
    assert off(Tiling.Y, 512, 128, 0) == 4096
    assert off(Tiling.Y, 512, 0, 32) == 4 * 4096


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(list(Tiling)), st.integers(1, 4), st.integers(1, 40))
def test_tile_detile_inverse(tiling: Tiling, tiles_across: int, height: int) -> None:
    stride = tiles_across * max(tiling.tile_width, 64)
    rows = np.random.default_rng(height).integers(0, 256, (height, stride), dtype=np.uint8)
    buf = tile(rows, tiling)
    assert len(buf) % PAGE == 0 or tiling is Tiling.LINEAR
    assert np.array_equal(detile(buf, tiling, stride, height), rows)
    # every byte of the image lands in the buffer exactly once
    assert np.array_equal(np.sort(buf[: rows.size] if tiling is Tiling.LINEAR else buf)[-rows.size:],
                          np.sort(rows.ravel()))


def make_surface(fmt: PixelFormat, tiling: Tiling, width: int, height: int, *, base: int,
                 xo: int = 0, yo: int = 0, pad: int = 0) -> tuple[PageMemory, Surface, np.ndarray]:
    """A reference RGBA image at offset (xo, yo) of a bigger surface, encoded, tiled and
    stored: the decoder must give the reference back."""
    rng = np.random.default_rng(width * 131 + height)
    full_w, full_h = xo + width + pad, yo + height + pad
    words = rng.integers(0, 1 << (8 * fmt.cpp), size=(full_h, full_w),
                         dtype=np.uint64).astype(fmt.dtype)
    align = tiling.stride_align
    stride = -(-(full_w * fmt.cpp) // align) * align
    rows = np.zeros((full_h, stride), np.uint8)
    rows[:, : full_w * fmt.cpp] = words.view(np.uint8).reshape(full_h, -1)
    mem = PageMemory(base, base + 64 * 1024 * 1024)
    mem.put(base, tile(rows, tiling))
    ref = decode(words, fmt)[yo : yo + height, xo : xo + width]
    return mem, Surface(base, fmt, tiling, stride, width, height, xo, yo), ref


@pytest.mark.parametrize("fmt", list(PixelFormat))
@pytest.mark.parametrize("tiling", list(Tiling))
def test_round_trip(fmt: PixelFormat, tiling: Tiling) -> None:
    mem, surface, ref = make_surface(fmt, tiling, 150, 70, base=0x40_0000)
    assert np.array_equal(read_rgba(mem, surface), ref)


@pytest.mark.parametrize("tiling", list(Tiling))
def test_round_trip_with_start_offset(tiling: Tiling) -> None:
    mem, surface, ref = make_surface(PixelFormat.XRGB8888, tiling, 64, 33, base=0x10_0000,
                                     xo=37, yo=11, pad=5)
    assert np.array_equal(read_rgba(mem, surface), ref)


def test_only_touched_pages_are_read() -> None:
    # a narrow window of a wide linear surface: rows far apart, one page each
    mem, surface, ref = make_surface(PixelFormat.XRGB8888, Tiling.LINEAR, 8, 4, base=0,
                                     pad=2048)
    assert np.array_equal(read_rgba(mem, surface), ref)
    assert read_pixels(mem, surface).shape == (4, 8)
    assert mem.served <= 2 * 4  # one page per row, twice


def test_typed_errors() -> None:
    mem, surface, _ = make_surface(PixelFormat.XRGB8888, Tiling.X, 100, 10, base=0x10_0000)

    with pytest.raises(BadStrideError, match="too small"):
        read_rgba(mem, attrs.evolve(surface, stride=256))
    with pytest.raises(BadStrideError, match="multiple of 512"):
        read_rgba(mem, attrs.evolve(surface, stride=576))
    with pytest.raises(BadStrideError, match="beyond"):
        read_rgba(mem, attrs.evolve(surface, width=9000))
    with pytest.raises(SurfaceOutOfRangeError):
        read_rgba(mem, attrs.evolve(surface, base=0))  # below the memory's range
    with pytest.raises(SurfaceOutOfRangeError, match="page-aligned"):
        read_rgba(mem, attrs.evolve(surface, base=0x10_0010))
    with pytest.raises(UnmappedSurfaceError):
        read_rgba(mem, attrs.evolve(surface, height=200))  # runs into pages never stored
