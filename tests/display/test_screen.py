"""Screens of real vGPUs: planes composed through the GGTT, hostile planes, PNG, mosaic."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gvt_core.device.display.formats import PixelFormat, encode
from gvt_core.device.display.mosaic import build_mosaic, mosaic_of, mosaic_png, vgpu_tile
from gvt_core.device.display.screen import capture, screen_array, screen_png
from gvt_core.device.display.tiling import Tiling, tile
from gvt_core.errors import (
    BadStrideError,
    PlaneDisabledError,
    SurfaceOutOfRangeError,
    UnmappedSurfaceError,
    UnsupportedFormatError,
    VgpuStateError,
)
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs

FB_GPA = 8 * regs.MiB
FORMAT_BITS = {PixelFormat.XRGB8888: dr.DISP_FORMAT_BGRX888,
               PixelFormat.XBGR8888: dr.DISP_FORMAT_RGBX888,
               PixelFormat.RGB565: dr.DISP_FORMAT_BGRX565,
               PixelFormat.XRGB2101010: dr.DISP_FORMAT_BGRX101010}


def picture(width: int, height: int, seed: int) -> np.ndarray:
    """A recognisable RGBA test picture: gradients plus a seed-coloured block."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.zeros((height, width, 4), np.uint8)
    img[..., 0] = (x * 255 // max(width - 1, 1)).astype(np.uint8)
    img[..., 1] = (y * 255 // max(height - 1, 1)).astype(np.uint8)
    img[..., 2] = (seed * 53) & 0xFF
    img[height // 4 : height // 2, width // 4 : width // 2, :3] = ((seed * 97) & 0xFF, 40, 200)
    img[..., 3] = 255
    return img


def put_surface(guest: Any, gm: int, gpa: int, img: np.ndarray, fmt: PixelFormat,
                tiling: Tiling = Tiling.LINEAR, stride: int | None = None) -> int:
    """Encode, tile and write ``img`` into guest RAM at ``gpa`` and map it at ``gm``."""
    h, w = img.shape[:2]
    align = tiling.stride_align
    stride = stride or -(-(w * fmt.cpp) // align) * align
    rows = np.zeros((h, stride), np.uint8)
    rows[:, : w * fmt.cpp] = encode(img, fmt).view(np.uint8).reshape(h, -1)
    data = tile(rows, tiling)
    guest.port.mem_write(gpa, data.tobytes())
    guest.map_gm(gm, gpa, -(-len(data) // 4096))
    return stride


def show(guest: Any, gm: int, fmt: PixelFormat, width: int, height: int, stride: int,
         tiling: Tiling = Tiling.LINEAR, pipe: int = 0) -> None:
    """The guest's modeset of a primary plane, then the pipe on."""
    guest.w(dr.pipe_reg(regs.PIPESRC_A, pipe), ((width - 1) << 16) | (height - 1))
    guest.w(dr.pipe_reg(regs.DSPCNTR_A, pipe), dr.DISP_ENABLE | (FORMAT_BITS[fmt] << 26)
            | (dr.DISP_TILED if tiling is Tiling.X else 0))
    guest.w(dr.pipe_reg(regs.DSPSTRIDE_A, pipe), stride)
    guest.w(dr.pipe_reg(dr.DSPOFFSET_A, pipe), 0)
    guest.dwrite(dr.pipe_reg(regs.DSPSURF_A, pipe), gm)
    guest.dwrite(dr.pipe_reg(regs.PIPECONF_A, pipe), regs.PIPECONF_ENABLE)


def fb_gm(guest: Any) -> int:
    """A framebuffer address in the vGPU's own (mappable) graphics memory."""
    return guest.vgpu.resources.low_gm_base + 16 * regs.MiB


@pytest.mark.parametrize(("fmt", "tiling"), [(PixelFormat.XRGB8888, Tiling.LINEAR),
                                             (PixelFormat.RGB565, Tiling.X),
                                             (PixelFormat.XBGR8888, Tiling.X),
                                             (PixelFormat.XRGB2101010, Tiling.LINEAR)])
def test_primary_plane_screen(make_guest: Callable[..., Any], fmt: PixelFormat,
                              tiling: Tiling) -> None:
    guest = make_guest()
    img = picture(320, 200, 3)
    if fmt is PixelFormat.RGB565:
        img[..., 0] &= 0xF8
        img[..., 1] &= 0xFC
        img[..., 2] &= 0xF8
        img[..., :3] |= img[..., :3] >> np.array([5, 6, 5], np.uint8)
    stride = put_surface(guest, fb_gm(guest), FB_GPA, img, fmt, tiling)
    show(guest, fb_gm(guest), fmt, 320, 200, stride, tiling)
    screen = capture(guest.vgpu)
    assert (screen.width, screen.height, screen.format) == (320, 200, fmt.name)
    assert np.array_equal(screen.rgb, img[..., :3])
    assert np.array_equal(screen_array(guest.vgpu), img[..., :3])


def test_full_size_1024x768(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    img = picture(1024, 768, 5)
    stride = put_surface(guest, fb_gm(guest), FB_GPA, img, PixelFormat.XRGB8888)
    show(guest, fb_gm(guest), PixelFormat.XRGB8888, 1024, 768, stride)
    png = screen_png(guest.vgpu)
    back = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert np.array_equal(back, img[..., :3])


def test_sync_flip_shows_at_vblank(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    a, b = picture(64, 32, 1), picture(64, 32, 2)
    gm = fb_gm(guest)
    stride = put_surface(guest, gm, FB_GPA, a, PixelFormat.XRGB8888)
    put_surface(guest, gm + regs.MiB, FB_GPA + regs.MiB, b, PixelFormat.XRGB8888)
    show(guest, gm, PixelFormat.XRGB8888, 64, 32, stride)
    guest.dwrite(regs.DSPSURF_A, gm + regs.MiB)  # a synchronous flip
    assert np.array_equal(screen_array(guest.vgpu), a[..., :3])  # not yet
    guest.clock.advance(20_000_000)
    assert np.array_equal(screen_array(guest.vgpu), b[..., :3])


def test_sprite_and_cursor_on_top(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    gm = fb_gm(guest)
    base = picture(200, 120, 7)
    stride = put_surface(guest, gm, FB_GPA, base, PixelFormat.XRGB8888)
    sprite = picture(40, 30, 9)
    sprite_stride = put_surface(guest, gm + regs.MiB, FB_GPA + regs.MiB, sprite,
                                PixelFormat.XBGR8888)
    cursor = np.zeros((64, 64, 4), np.uint8)
    cursor[..., 0] = 255
    cursor[..., 3] = 128  # half-transparent red
    cursor[:8, :8, 3] = 0  # a transparent corner
    put_surface(guest, gm + 2 * regs.MiB, FB_GPA + 2 * regs.MiB, cursor, PixelFormat.ARGB8888)
    show(guest, gm, PixelFormat.XRGB8888, 200, 120, stride)
    guest.w(regs.SPRCTL_A, dr.SPRITE_ENABLE | dr.SPRITE_RGB_ORDER_RGBX
            | (dr.SPRITE_FORMAT_RGBX888 << dr.SPRITE_FORMAT_SHIFT))
    guest.w(regs.SPRSTRIDE_A, sprite_stride)
    guest.w(regs.SPRPOS_A, (50 << 16) | 100)
    guest.w(regs.SPRSIZE_A, (29 << 16) | 39)
    guest.dwrite(regs.SPRSURF_A, gm + regs.MiB)
    guest.clock.advance(20_000_000)  # the sprite flip latches at the next vblank
    guest.w(regs.CURBASE_A, gm + 2 * regs.MiB)
    guest.w(regs.CURPOS_A, (90 << 16) | 170)  # partly off the right and bottom edges
    guest.w(regs.CURCNTR_A, dr.MCURSOR_MODE_64_ARGB_AX)
    expected = base[..., :3].astype(np.uint32)
    expected[50:80, 100:140] = sprite[..., :3]
    part = cursor[:30, :30]
    a = part[..., 3:4].astype(np.uint32)
    expected[90:120, 170:200] = (part[..., :3] * a + expected[90:120, 170:200] * (255 - a)
                                 + 127) // 255
    screen = capture(guest.vgpu)
    assert screen.sprite.enabled and screen.cursor.enabled
    assert np.array_equal(screen.rgb, expected.astype(np.uint8))


# --- hostile planes -------------------------------------------------------------------------


@pytest.fixture
def ready(make_guest: Callable[..., Any]) -> Any:
    """A guest showing a 64x16 XRGB8888 linear surface."""
    guest = make_guest()
    stride = put_surface(guest, fb_gm(guest), FB_GPA, picture(64, 16, 1), PixelFormat.XRGB8888)
    show(guest, fb_gm(guest), PixelFormat.XRGB8888, 64, 16, stride)
    capture(guest.vgpu)
    return guest


def test_surface_outside_its_memory(ready: Any, make_guest: Callable[..., Any]) -> None:
    res = ready.vgpu.resources
    for gm in (res.high_gm_base - 4096, 0, res.low_gm_base + res.low_gm_size):
        ready.dwrite(regs.DSPSURF_A, gm)
        ready.clock.advance(20_000_000)
        with pytest.raises(SurfaceOutOfRangeError):
            capture(ready.vgpu)
    # the last pages of its memory, with rows running past its end
    ready.map_gm(res.low_gm_base + res.low_gm_size - 4096, FB_GPA, 1)
    ready.dwrite(regs.DSPSURF_A, res.low_gm_base + res.low_gm_size - 4096)
    ready.clock.advance(20_000_000)
    capture(ready.vgpu)  # 16 rows of 256 bytes: exactly its last page
    ready.w(regs.PIPESRC_A, (63 << 16) | 16)  # one row more
    with pytest.raises(SurfaceOutOfRangeError):
        capture(ready.vgpu)


def test_never_another_vgpus_memory(ready: Any, make_guest: Callable[..., Any]) -> None:
    other = make_guest()
    gm = fb_gm(other)
    stride = put_surface(other, gm, FB_GPA, picture(64, 16, 2), PixelFormat.XRGB8888)
    show(other, gm, PixelFormat.XRGB8888, 64, 16, stride)
    assert capture(other.vgpu).rgb.any()  # the other guest's screen is there
    ready.dwrite(regs.DSPSURF_A, gm)  # point at it
    ready.clock.advance(20_000_000)
    with pytest.raises(SurfaceOutOfRangeError, match=f"vGPU {ready.vgpu.id}"):
        capture(ready.vgpu)


def test_huge_stride(ready: Any) -> None:
    ready.w(regs.DSPSTRIDE_A, 0xFFC0)  # 65472 bytes: rows run far beyond the mapped pages
    with pytest.raises(UnmappedSurfaceError):
        capture(ready.vgpu)
    ready.w(regs.PIPESRC_A, (63 << 16) | 4095)  # and past the end of its 64 MiB
    with pytest.raises(SurfaceOutOfRangeError):
        capture(ready.vgpu)


def test_stride_too_small(ready: Any) -> None:
    ready.w(regs.DSPSTRIDE_A, 128)
    with pytest.raises(BadStrideError, match="too small"):
        capture(ready.vgpu)
    ready.w(regs.DSPSTRIDE_A, 0)
    with pytest.raises(BadStrideError):
        capture(ready.vgpu)


@pytest.mark.parametrize("bits", [0x0, 0x1, 0x2, 0x7, 0x9, 0xB, 0xC, 0xF])
def test_reserved_format_bits(ready: Any, bits: int) -> None:
    ready.w(regs.DSPCNTR_A, dr.DISP_ENABLE | (bits << dr.DISP_FORMAT_SHIFT))
    with pytest.raises(UnsupportedFormatError):
        capture(ready.vgpu)


def test_unmapped_page(ready: Any) -> None:
    ready.w(regs.GTT_START_OFFSET + (fb_gm(ready) >> 12) * 8, 0, 8)  # the guest unmaps page 0
    with pytest.raises(UnmappedSurfaceError):
        capture(ready.vgpu)


def test_bad_cursor_and_sprite(ready: Any) -> None:
    ready.w(regs.CURCNTR_A, 0x04)  # a 2-bpp mode the decoder does not do
    with pytest.raises(UnsupportedFormatError, match="cursor"):
        capture(ready.vgpu)
    ready.w(regs.CURCNTR_A, 0)
    ready.w(regs.SPRCTL_A, dr.SPRITE_ENABLE | (dr.SPRITE_FORMAT_YUV422 << dr.SPRITE_FORMAT_SHIFT))
    with pytest.raises(UnsupportedFormatError, match="sprite"):
        capture(ready.vgpu)


def test_nothing_to_show(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    with pytest.raises(PlaneDisabledError, match="primary"):  # boot: pipe A on, planes off
        capture(guest.vgpu)
    guest.dwrite(regs.PIPECONF_A, 0)
    with pytest.raises(PlaneDisabledError, match="no pipe"):
        capture(guest.vgpu)


def test_destroyed_vgpu(ready: Any) -> None:
    vgpu = ready.vgpu
    ready.gvt.destroy_vgpu(vgpu)
    with pytest.raises(VgpuStateError):
        capture(vgpu)


# --- mosaic -------------------------------------------------------------------------------------


def test_mosaic_of_guests(make_guest: Callable[..., Any]) -> None:
    guests = [make_guest(), make_guest("GVTg_V4_4"), make_guest()]
    for seed, (guest, size) in enumerate(zip(guests[:2], [(256, 192), (480, 300)], strict=True)):
        img = picture(*size, seed + 1)
        stride = put_surface(guest, fb_gm(guest), FB_GPA, img, PixelFormat.XRGB8888)
        show(guest, fb_gm(guest), PixelFormat.XRGB8888, *size, stride)
    tiles = [vgpu_tile(g.vgpu) for g in guests]
    assert tiles[0].image is not None and tiles[1].image is not None
    assert tiles[2].image is None and "disabled" in tiles[2].note
    assert tiles[0].label == f"vGPU {guests[0].vgpu.id}  GVTg_V4_8  256x192"
    assert tiles[1].label.startswith(f"vGPU {guests[1].vgpu.id}  GVTg_V4_4")
    mosaic = mosaic_of([g.vgpu for g in guests], tile_height=150)
    assert mosaic.ndim == 3 and mosaic.shape[0] == 8 + 150 + 22 + 8
    # each screen appears scaled in its tile: compare the tile's mean colour
    x = 8
    for guest in guests[:2]:
        src = capture(guest.vgpu).rgb
        w = round(src.shape[1] * 150 / src.shape[0])
        region = mosaic[8 : 8 + 150, x : x + w].reshape(-1, 3).mean(axis=0)
        assert np.allclose(region, src.reshape(-1, 3).mean(axis=0), atol=4)
        x += w + 8
    png = mosaic_png([g.vgpu for g in guests], tile_height=100, columns=2)
    assert Image.open(io.BytesIO(png)).size[0] > 0


def test_build_mosaic_limits() -> None:
    with pytest.raises(ValueError):
        build_mosaic([])
