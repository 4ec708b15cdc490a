"""The guest display model's own pieces: mode timings, pictures, CPU drawing."""

from __future__ import annotations

import numpy as np
import pytest

from gvt_core.device.display.edid import DisplayMode, builtin_edid
from gvt_core.device.display.screen import capture
from gvt_core.device.gvt import Gvt
from gvt_core.errors import GuestDriverError
from gvt_core.guest.display import DMT_MODES, GuestDisplay, ModeTiming, Rect, cvt_reduced_blanking
from gvt_core.guest.driver import GuestDriver
from gvt_core.guest.picture import PALETTE, colour_of, picture, pixel_count, render


def test_modes_of_the_builtin_edids() -> None:
    small = ModeTiming.for_mode(builtin_edid((1024, 768)).best_mode())
    assert (small.size, small.pixel_khz, small.htotal, small.vtotal) == ((1024, 768), 65000,
                                                                       1344, 806)
    assert round(small.refresh_mhz / 1000) == 60
    big = ModeTiming.for_mode(builtin_edid((1920, 1200)).best_mode())
    assert (big.size, big.pixel_khz, big.htotal, big.vtotal) == ((1920, 1200), 154000, 2080, 1235)
    assert big.refresh_mhz == 59950
    for edid in (builtin_edid((1024, 768)), builtin_edid((1920, 1200))):
        for mode in edid.modes():  # every mode they list has timings
            t = ModeTiming.for_mode(mode)
            assert t.size == mode.size and abs(t.refresh_mhz - mode.refresh_mhz) < 1500


def test_cvt_for_what_dmt_does_not_list() -> None:
    assert (1366, 768, 60) not in DMT_MODES
    t = ModeTiming.for_mode(DisplayMode(1366, 768, 60000, None, "standard"))
    assert t == cvt_reduced_blanking(1366, 768, 60)
    assert t.htotal == 1366 + 160 and t.vtotal > 768 and abs(t.refresh_mhz - 60000) < 500
    assert t.pixel_khz % 250 == 0


def test_pictures_differ_per_guest_and_render_what_they_say() -> None:
    images = [render(picture(n, 320, 240), 320, 240) for n in range(1, 8)]
    for i, a in enumerate(images):
        for b in images[i + 1 :]:
            assert (a != b).any()
    colours = {tuple(int(c) for c in img.reshape(-1, 3).max(axis=0)) for img in images}
    assert len(colours) == 7
    assert colour_of(1) == PALETTE[0] and colour_of(len(PALETTE) + 1) == PALETTE[0]
    rects = picture(12, 1024, 768)  # two digits, twelve tally squares
    assert sum(1 for r in rects if r.width == r.height == 768 // 24) == 12
    assert pixel_count(rects) < 60_000  # CPU drawing: one store per two pixels
    with pytest.raises(ValueError):
        picture(0, 100, 100)


def test_cpu_drawing_through_the_aperture_lands_pixel_exact() -> None:
    with Gvt.open("sim") as gvt:
        vm = gvt.create_vm(64 << 20, "draw")
        vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
        driver = GuestDriver(vm.port(), fb_width=128, fb_height=64)
        driver.load()
        display = GuestDisplay(driver, gvt.clock.sleep)
        with pytest.raises(GuestDriverError, match="no mode"):
            display.flip(display.boot_framebuffer())
        mode = display.bring_up()
        assert mode is not None and display.scanout is not None
        rects = [Rect(3, 1, 5, 2, 0x123456), Rect(-4, 700, 9, 100, 0xABCDEF),
                 Rect(1020, 0, 10, 3, 0x00FF00), Rect(10, 10, 0, 5, 0xFFFFFF)]
        stores = display.fill_rects(display.scanout, rects)
        assert stores == 2 * 3 + 68 * 3 + 3 * 2  # odd start, pairs, odd end; clipped
        want = render(rects, *mode.size)
        assert (capture(vgpu).rgb == want).all()
        assert not np.any(capture(vgpu).rgb[20:600, 20:1000])
        tiled = display.alloc_framebuffer(64, 8, tiled=True)
        with pytest.raises(GuestDriverError, match="linear"):
            display.fill_rects(tiled, rects)
        with pytest.raises(GuestDriverError, match="does not fit"):
            display.alloc_framebuffer(8192, 8192)
        gvt.destroy_vgpu(vgpu)
        vm.close()


def test_an_edid_with_an_extension_block_over_aux_and_gmbus() -> None:
    from gvt_core.device.display.edid import Edid, fix_checksum

    base = bytearray(builtin_edid((1920, 1200)).data)
    base[126] = 1  # one extension follows
    ext = fix_checksum(bytes([0x02, 0x03]) + bytes(range(126)))
    edid = Edid.from_bytes(fix_checksum(bytes(base)) + ext)
    with Gvt.open("sim") as gvt:
        vm = gvt.create_vm(64 << 20, "ext")
        vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
        driver = GuestDriver(vm.port(), fb_width=64, fb_height=32)
        driver.load()
        display = GuestDisplay(driver, gvt.clock.sleep)
        assert display.probe()
        gvt.plug_monitor(vgpu, edid)
        display.handle_interrupts()
        assert display.service_hotplug() and display.mode is not None
        assert display.read_edid_aux() == edid.data == display.read_edid_gmbus()
        assert display.mode.size == (1920, 1200)
        gvt.destroy_vgpu(vgpu)
        vm.close()
