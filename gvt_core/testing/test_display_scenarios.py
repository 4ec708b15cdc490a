"""Display scenarios: the guest i915's display bring-up on a real vGPU, on every backend.

The guest-driver model probes the virtual DisplayPort, reads the EDID over DP
AUX and over GMBUS byte for byte, sets the mode it picks, counts vblank
interrupts over a simulated second, flips between buffers and sees the
flip-done interrupt, handles a hotplug; the host decodes what it shows. Hosts
here run on the simulated clock on every backend (a kvmgt host would default to
real time), so "one second of vblanks" is exact and fast everywhere. Run on a
backend with::

    pytest --pyargs gvt_core.testing --gvt-backend NAME
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np
import pytest

from gvt_core.device.display.edid import builtin_edid
from gvt_core.device.display.formats import PRIMARY_FORMATS, decode, encode
from gvt_core.device.display.screen import capture
from gvt_core.device.display.tiling import Tiling, tile
from gvt_core.device.gvt import Gvt
from gvt_core.device.vgpu import Vgpu
from gvt_core.errors import (
    BadStrideError,
    FramebufferError,
    PlaneDisabledError,
    SurfaceOutOfRangeError,
    UnsupportedFormatError,
)
from gvt_core.guest import commands as cmd
from gvt_core.guest.display import PIPE, Framebuffer, GuestDisplay, ModeTiming, Rect
from gvt_core.guest.driver import GuestDriver
from gvt_core.guest.gpu import GuestGpu
from gvt_core.guest.port import GuestPort, GuestVm
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs
from gvt_core.hw.clock import NSEC_PER_SEC, SimulatedClock
from gvt_core.testing.guests import guest_host, release_guests, wait_faults

GUEST_MEM = 64 << 20
#: seconds a guest waits for its GPU work.
TIMEOUT = 30.0
#: the boot framebuffer stays small (kvmgt: one exit per GGTT entry written).
FB_W, FB_H = 128, 64


@attrs.define(eq=False)
class Screen:
    vm: GuestVm
    vgpu: Vgpu
    port: GuestPort
    driver: GuestDriver
    display: GuestDisplay


@pytest.fixture
def screen_host(gvt_backend_name: str, gvt_backend_options: dict[str, Any]) -> Iterator[Gvt]:
    with guest_host(gvt_backend_name, gvt_backend_options, clock="simulated") as gvt:
        yield gvt


@pytest.fixture
def new_screen(screen_host: Gvt) -> Iterator[Any]:
    """Factory: a guest with a vGPU, its driver loaded, its display not yet probed."""
    vms: list[GuestVm] = []

    def make(type_name: str | None = None) -> Screen:
        vm = screen_host.create_vm(GUEST_MEM, name=f"screen{len(vms) + 1}")
        vms.append(vm)
        vgpu = screen_host.create_vgpu(type_name or screen_host.smallest_type, vm)
        driver = GuestDriver(vm.port(), fb_width=FB_W, fb_height=FB_H)
        driver.load()
        return Screen(vm, vgpu, vm.port(), driver, GuestDisplay(driver, screen_host.clock.sleep))

    yield make
    release_guests(screen_host, vms)


def _rgb(colour: int) -> tuple[int, int, int]:
    return ((colour >> 16) & 0xFF, (colour >> 8) & 0xFF, colour & 0xFF)


def _marks(colour: int) -> list[Rect]:
    """A small, cheap-to-draw mark (kvmgt: every aperture store is an exit)."""
    return [Rect(8, 8, 32, 8, colour), Rect(100, 40, 16, 4, colour ^ 0xFFFFFF)]


def _shows(vgpu: Vgpu, rects: list[Rect]) -> bool:
    rgb = capture(vgpu).rgb
    return all((rgb[r.y : r.y + r.height, r.x : r.x + r.width] == _rgb(r.colour)).all()
               for r in rects)


# --- probe and EDID ---------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", [None, "GVTg_V4_4"], ids=["smallest", "V4_4"])
def test_guest_probes_the_port_and_reads_the_edid_byte_for_byte(
        new_screen: Any, type_name: str | None) -> None:
    s: Screen = new_screen(type_name)
    assert s.display.probe() and s.display.connected
    want = builtin_edid(s.vgpu.type.resolution).data
    assert s.display.read_edid_aux() == want
    assert s.display.read_edid_gmbus() == want
    assert s.display.dpcd_read(dr.DP_DPCD_REV, 3) == dr.DPCD_FIXED_HEADER[:3]
    # the VBT names a DP connector on port B with AUX B, where the backend placed an
    # OpRegion the guest can read (the others leave ASLS to the guest's firmware)
    if s.port.cfg_read(regs.PCI_ASLS, 4):
        vbt = s.display.vbt
        assert vbt is not None
        assert (vbt.dvo_port, vbt.aux_channel) == (regs.DVO_PORT_DP[regs.PORT_B],
                                                  regs.DP_AUX_CHANNEL[regs.PORT_B])
        assert vbt.device_type & dr.DEVICE_TYPE_DISPLAYPORT_OUTPUT
    else:
        assert s.display.vbt is None and s.vgpu.opregion.placed_gpa is None
    s.display.read_edid()
    assert s.display.best_mode().size == s.vgpu.type.resolution


# --- mode, vblank, flips ----------------------------------------------------------------------


def test_mode_set_and_a_simulated_second_of_vblank_interrupts(new_screen: Any,
                                                              screen_host: Gvt) -> None:
    s: Screen = new_screen()
    mode = s.display.bring_up()
    assert mode is not None and mode.size == (1024, 768) and round(mode.refresh_mhz / 1000) == 60
    screen = capture(s.vgpu)
    assert (screen.width, screen.height, screen.format) == (1024, 768, "XRGB8888")
    assert s.vgpu.display is not None and s.vgpu.display.vblank.running(PIPE)
    frames = s.driver.mmio_read(regs.PIPE_FRMCOUNT_G4X_A)
    assert 59 <= s.display.count_vblanks(NSEC_PER_SEC) <= 61
    assert 59 <= s.driver.mmio_read(regs.PIPE_FRMCOUNT_G4X_A) - frames <= 61
    assert isinstance(screen_host.clock, SimulatedClock)
    # vblank interrupts off again: the pipe keeps counting frames, the guest hears nothing
    before = s.display.counters.vblanks[PIPE]
    s.display.wait(NSEC_PER_SEC // 10)
    assert s.display.counters.vblanks[PIPE] == before


def test_flip_between_two_buffers(new_screen: Any) -> None:
    s: Screen = new_screen()
    mode = s.display.bring_up()
    assert mode is not None
    a = s.display.scanout
    assert a is not None
    b = s.display.alloc_framebuffer(*mode.size)
    marks_a, marks_b = _marks(0x3060C0), _marks(0xC06030)
    s.display.fill_rects(a, marks_a)
    s.display.fill_rects(b, marks_b)
    assert _shows(s.vgpu, marks_a)
    flips = s.driver.mmio_read(regs.PIPE_FLIPCOUNT_G4X_A)
    done = s.display.counters.flips_done[PIPE]
    s.display.flip(b, wait=False)
    assert _shows(s.vgpu, marks_a)  # synchronous: the old buffer until the vblank
    s.display.flip(b)  # (the same surface again) and wait for flip-done
    assert s.display.counters.flips_done[PIPE] > done
    assert _shows(s.vgpu, marks_b) and capture(s.vgpu).primary.base == b.gm
    s.display.flip(a)
    assert _shows(s.vgpu, marks_a)
    assert s.driver.mmio_read(regs.PIPE_FLIPCOUNT_G4X_A) == flips + 3


def test_two_guests_show_their_own_screens(new_screen: Any) -> None:
    one: Screen = new_screen()
    two: Screen = new_screen()
    for s, colour in ((one, 0x10E010), (two, 0xE01010)):
        assert s.display.bring_up() is not None
        assert s.display.scanout is not None
        s.display.fill_rects(s.display.scanout, _marks(colour))
    assert _shows(one.vgpu, _marks(0x10E010)) and _shows(two.vgpu, _marks(0xE01010))
    assert not _shows(one.vgpu, _marks(0xE01010))


def test_gpu_draws_and_mi_display_flip_shows_it(new_screen: Any, screen_host: Gvt) -> None:
    """Blits through the vGPU fill a buffer, an MI_DISPLAY_FLIP in the same ring shows
    it (flip-done at the next vblank); a flip the guest may not make (a reserved plane,
    the host's memory) is rejected by the command scanner before anything of its
    workload runs: upstream's error behaviour (failsafe), the screen as it was."""
    s: Screen = new_screen()
    screen_host.activate_vgpu(s.vgpu)
    mode = s.display.bring_up()
    assert mode is not None and s.vgpu.display is not None
    gpu = GuestGpu(s.driver)
    s.display.attach_gpu(gpu)
    fb = s.display.alloc_framebuffer(*mode.size)
    marks = _marks(0x20A0F0)
    assert s.display.draw_with_gpu(fb, marks, background=0x202020) == 3
    screen = capture(s.vgpu)
    assert screen.primary.base == fb.gm and _shows(s.vgpu, marks)
    assert tuple(screen.rgb[600, 900]) == (0x20, 0x20, 0x20)
    assert s.vgpu.display.command_flips == 1 and s.display.counters.flips_done[PIPE] >= 1
    assert s.vgpu.execution.scanner.counters.commands_rejected == 0
    # hostile flips from the command stream, one guest each (the first puts its vGPU in
    # failsafe): a reserved plane select, the host's memory
    hostile = [(s, gpu, regs.ENGINE_RCS, 7, fb.gm, "malformed-command")]
    t: Screen = new_screen()
    screen_host.activate_vgpu(t.vgpu)
    assert t.display.bring_up() is not None and t.display.scanout is not None
    t.display.fill_rects(t.display.scanout, _marks(0xE01010))
    hostile.append((t, GuestGpu(t.driver), regs.ENGINE_BCS, 0, 0, "ggtt-out-of-partition"))
    for guest, ggpu, engine, code, surface, reason in hostile:
        assert guest.vgpu.display is not None
        flips = guest.vgpu.display.command_flips
        base = capture(guest.vgpu).primary.base
        ctx = ggpu.context(engine)
        ctx.emit(cmd.display_flip(code, surface, fb.stride))
        ggpu.submit(ctx)
        wait_faults(guest.vgpu, 1)
        fault = guest.vgpu.execution.faults[-1].reason
        assert fault.startswith(reason) and "MI_DISPLAY_FLIP" in fault
        assert guest.vgpu.failsafe
        assert guest.vgpu.display.command_flips == flips
        guest.display.wait(2 * mode.frame_ns)
        assert capture(guest.vgpu).primary.base == base
    assert _shows(s.vgpu, marks) and _shows(t.vgpu, _marks(0xE01010))


def test_a_flip_from_the_command_stream_takes_effect_when_its_workload_completes(
        new_screen: Any, screen_host: Gvt) -> None:
    """The scanner NOOPs MI_DISPLAY_FLIP in the shadow; the display applies it when the
    workload has completed (after the blits before it in the ring): the surface register
    at once, the new surface live with flip-done at the next vblank if synchronous, both
    at once if asynchronous."""
    s: Screen = new_screen()
    screen_host.activate_vgpu(s.vgpu)
    mode = s.display.bring_up()
    assert mode is not None and s.display.scanout is not None and s.vgpu.display is not None
    gpu = GuestGpu(s.driver)
    s.display.attach_gpu(gpu)
    first = s.display.scanout.gm
    b, c = (s.display.alloc_framebuffer(*mode.size) for _ in range(2))
    marks_b, marks_c = _marks(0x2080F0), _marks(0xF08020)
    s.display.draw_with_gpu(b, marks_b, flip=False)
    s.display.draw_with_gpu(c, marks_c, flip=False)
    assert capture(s.vgpu).primary.base == first
    ctx = gpu.context(regs.ENGINE_RCS)
    # synchronous; the workload takes microseconds of GPU time, far less than a frame
    s.display.handle_interrupts()
    done = s.display.counters.flips_done[PIPE]
    frames = s.driver.mmio_read(regs.PIPE_FRMCOUNT_G4X_A)
    gpu.run(ctx, cmd.display_flip(0, b.gm, b.stride), TIMEOUT)
    assert s.driver.mmio_read(regs.DSPSURF_A) == b.gm  # (an MMIO read: after the flip)
    assert s.driver.mmio_read(regs.PIPE_FRMCOUNT_G4X_A) == frames
    assert capture(s.vgpu).primary.base == first  # still the old frame on screen
    s.display.handle_interrupts()
    assert s.display.counters.flips_done[PIPE] == done
    s.display.wait_flip_done(done)
    assert s.driver.mmio_read(regs.PIPE_FRMCOUNT_G4X_A) > frames
    assert capture(s.vgpu).primary.base == b.gm and _shows(s.vgpu, marks_b)
    # asynchronous: on screen, and flip-done, as soon as the workload completed
    done = s.display.counters.flips_done[PIPE]
    frames = s.driver.mmio_read(regs.PIPE_FRMCOUNT_G4X_A)
    gpu.run(ctx, cmd.display_flip(0, c.gm, c.stride, asynchronous=True), TIMEOUT)
    assert s.driver.mmio_read(regs.DSPSURFLIVE_A) == c.gm
    assert s.driver.mmio_read(regs.PIPE_FRMCOUNT_G4X_A) == frames
    assert capture(s.vgpu).primary.base == c.gm and _shows(s.vgpu, marks_c)
    s.display.handle_interrupts()
    assert s.display.counters.flips_done[PIPE] == done + 1
    assert s.vgpu.display.command_flips == 2 and not s.vgpu.execution.faults


# --- hotplug ------------------------------------------------------------------------------------


def test_hotplug_of_a_second_edid_changes_the_mode_the_guest_picks(new_screen: Any,
                                                                   screen_host: Gvt) -> None:
    s: Screen = new_screen()
    assert s.display.bring_up() == ModeTiming.for_mode(builtin_edid((1024, 768)).best_mode())
    plugs = s.vgpu.display.port.counters.plugs  # type: ignore[union-attr]
    big = builtin_edid((1920, 1200))
    screen_host.plug_monitor(s.vgpu, big.data)
    assert s.vgpu.display.port.counters.plugs == plugs + 1  # type: ignore[union-attr]
    s.display.handle_interrupts(1.0)
    assert s.display.counters.hotplugs == 1
    assert s.display.service_hotplug()
    assert s.display.edid is not None and s.display.edid.data == big.data
    assert s.display.mode is not None and s.display.mode.size == (1920, 1200)
    screen = capture(s.vgpu)
    assert (screen.width, screen.height) == (1920, 1200)
    # the monitor goes away: the guest turns its pipe off
    screen_host.unplug_monitor(s.vgpu)
    s.display.handle_interrupts(1.0)
    assert s.display.service_hotplug() and not s.display.connected
    with pytest.raises(PlaneDisabledError):
        capture(s.vgpu)
    with pytest.raises(Exception, match="timeout"):
        s.display.read_edid_aux()
    # and the type's own monitor comes back
    screen_host.plug_monitor(s.vgpu)
    s.display.handle_interrupts(1.0)
    assert s.display.service_hotplug() and s.display.connected
    assert s.display.mode is not None and s.display.mode.size == (1024, 768)
    assert capture(s.vgpu).width == 1024


# --- what the host decodes ------------------------------------------------------------------------


def _surface(s: Screen, fb: Framebuffer, fmt_bits: int, tiling: Tiling, w: int,
             h: int) -> np.ndarray:
    """Write a reference image into ``fb``'s guest pages as the GPU would lay it out;
    return the RGB the host should decode."""
    fmt = PRIMARY_FORMATS[fmt_bits]
    rng = np.random.default_rng(fmt_bits * 7 + len(tiling.value[0]))
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    words = encode(rgba, fmt)
    stride = fb.stride
    rows = np.zeros((h, stride), dtype=np.uint8)
    rows[:, : w * fmt.cpp] = words.view(np.uint8).reshape(h, w * fmt.cpp)
    data = tile(rows, tiling)
    s.port.mem_write(fb.gpa, data.tobytes())
    return decode(words, fmt)[..., :3]


def test_every_primary_format_and_tiling_decodes_as_drawn(new_screen: Any) -> None:
    s: Screen = new_screen()
    d = s.display
    assert d.bring_up() is not None
    w, h = 64, 16
    fb = d.alloc_framebuffer(w * 2, h, tiled=True)  # 512-byte stride: X tiles and 8888 fit
    d.w(regs.PIPESRC_A, ((w - 1) << dr.PIPESRC_WIDTH_SHIFT) | (h - 1))
    d.w(regs.DSPSTRIDE_A, fb.stride)
    for fmt_bits in sorted(PRIMARY_FORMATS):
        for tiling in (Tiling.LINEAR, Tiling.X):
            want = _surface(s, fb, fmt_bits, tiling, w, h)
            # a flip to the surface in this format and tiling, until its flip-done
            d.flip(attrs.evolve(fb, format_bits=fmt_bits, tiled=tiling is Tiling.X))
            screen = capture(s.vgpu)
            assert screen.format == PRIMARY_FORMATS[fmt_bits].name
            assert (screen.rgb == want).all(), (PRIMARY_FORMATS[fmt_bits], tiling)
    # an ARGB cursor blends over the primary plane
    cursor = d.alloc_framebuffer(64, 64)
    argb = np.zeros((64, 64), dtype="<u4")
    argb[:8, :8] = 0x80FF_FFFF  # half-transparent white
    s.port.mem_write(cursor.gpa, argb.tobytes())
    base = capture(s.vgpu).rgb.astype(int)
    d.w(regs.CURCNTR_A, dr.MCURSOR_MODE_64_ARGB_AX)
    d.w(regs.CURPOS_A, (2 << dr.CURSOR_POS_Y_SHIFT) | 3)
    d.w(regs.CURBASE_A, cursor.gm)
    rgb = capture(s.vgpu).rgb.astype(int)
    expect = (255 * 0x80 + base[2:10, 3:11] * (255 - 0x80) + 127) // 255
    assert (rgb[2:10, 3:11] == expect).all()
    assert (rgb[12:, :] == base[12:, :]).all()


def test_hostile_planes_give_typed_errors_never_another_guests_pixels(new_screen: Any,
                                                                     screen_host: Gvt) -> None:
    s: Screen = new_screen()
    other: Screen = new_screen()
    d = s.display
    assert d.bring_up() is not None and other.display.bring_up() is not None
    assert other.display.scanout is not None
    frame = 2 * (d.mode.frame_ns if d.mode else NSEC_PER_SEC // 60)  # past the next vblank
    good = capture(s.vgpu)

    def after(reg: int, value: int) -> None:
        d.w(reg, value)
        d.wait(frame)

    # the surface outside its own memory: the host's GM, then the other guest's screen
    for gm in (0, other.display.scanout.gm):
        after(regs.DSPSURF_A, gm)
        with pytest.raises(SurfaceOutOfRangeError):
            capture(s.vgpu)
    assert d.scanout is not None
    after(regs.DSPSURF_A, d.scanout.gm)
    assert (capture(s.vgpu).rgb == good.rgb).all()
    # a stride too small for the width, then the largest stride the field holds
    after(regs.DSPSTRIDE_A, 64)
    with pytest.raises(BadStrideError):
        capture(s.vgpu)
    after(regs.DSPSTRIDE_A, dr.PRI_STRIDE_MASK)
    with pytest.raises(FramebufferError):  # runs off its memory (or its mapping)
        capture(s.vgpu)
    after(regs.DSPSTRIDE_A, d.scanout.stride)
    # reserved and unsupported format bits
    for bits in (0x0, 0xF, dr.DISP_FORMAT_8BPP):
        after(regs.DSPCNTR_A, dr.DISP_ENABLE | (bits << dr.DISP_FORMAT_SHIFT))
        with pytest.raises(UnsupportedFormatError):
            capture(s.vgpu)
    after(regs.DSPCNTR_A, dr.DISP_ENABLE | (dr.DISP_FORMAT_BGRX888 << dr.DISP_FORMAT_SHIFT))
    assert (capture(s.vgpu).rgb == good.rgb).all()
    assert other.vgpu.stats.bad_accesses == 0


# --- reset and destroy --------------------------------------------------------------------------


def test_dmlr_reset_turns_the_display_off_until_the_guest_sets_a_mode(new_screen: Any,
                                                                      screen_host: Gvt) -> None:
    s: Screen = new_screen()
    assert s.display.bring_up() is not None
    screen_host.reset_vgpu(s.vgpu, dmlr=True)
    assert s.vgpu.display is not None and not s.vgpu.display.vblank.pipes
    with pytest.raises(PlaneDisabledError):
        capture(s.vgpu)
    driver = GuestDriver(s.port, fb_width=FB_W, fb_height=FB_H)
    driver.load()
    again = GuestDisplay(driver, screen_host.clock.sleep)
    assert again.bring_up() is not None
    assert capture(s.vgpu).width == 1024
    assert 59 <= again.count_vblanks(NSEC_PER_SEC) <= 61


def test_destroyed_vgpu_gets_no_vblank_the_others_go_on(new_screen: Any,
                                                        screen_host: Gvt) -> None:
    gone: Screen = new_screen()
    stays: Screen = new_screen()
    assert gone.display.bring_up() is not None and stays.display.bring_up() is not None
    clock = screen_host.clock
    assert isinstance(clock, SimulatedClock)
    assert clock.pending == 2
    events = gone.vgpu.irq.counters.events
    screen_host.destroy_vgpu(gone.vgpu)
    assert clock.pending == 1
    clock.advance(NSEC_PER_SEC // 2)
    assert gone.vgpu.irq.counters.events == events
    assert 29 <= stays.display.count_vblanks(NSEC_PER_SEC // 2) <= 31
