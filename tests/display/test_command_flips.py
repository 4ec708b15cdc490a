"""MI_DISPLAY_FLIP as the command scanner hands it over: every vGPU's
``execution.flip_sink`` (``vgpu.route_command_flips``) drives its display's one
flip path (plane registers, synchronous flips latched at vblank, flip-done)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gvt_core.device.execution.scanner.audit import DisplayFlip, DisplayPlane
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs
from gvt_core.hw.clock import NSEC_PER_SEC

FRAME = NSEC_PER_SEC // 60 + 1
PIPE_B_IIR = regs.GEN8_DE_PIPE_ISR_BASE + 0x10 + regs.IRQ_IIR
PIPE_B_IMR = regs.GEN8_DE_PIPE_ISR_BASE + 0x10 + regs.IRQ_IMR


def test_a_synchronous_command_flip_goes_live_at_the_next_vblank(
        make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    sink = guest.vgpu.execution.flip_sink
    assert sink is not None
    guest.dwrite(regs.PIPECONF_A, regs.PIPECONF_ENABLE)  # vblanks on pipe A
    live = guest.dread(regs.DSPSURFLIVE_A)
    frames = guest.dread(regs.PIPE_FRMCOUNT_G4X_A)
    surface = guest.vgpu.resources.low_gm_base + 0x10_0000
    with guest.vgpu.lock:  # as at workload completion
        sink(DisplayFlip(0, DisplayPlane.PRIMARY, surface, 40, 1, False))
    # upstream's gen8_update_plane_mmio_from_mi_display_flip: stride, tiling, surface
    assert guest.dread(regs.DSPSURF_A) == surface
    assert guest.dread(regs.DSPSTRIDE_A) == 40 << dr.MI_FLIP_PITCH_SHIFT
    assert guest.dread(regs.DSPCNTR_A) & dr.DISP_TILED
    assert guest.dread(regs.DSPSURFLIVE_A) == live  # the old frame until the vblank
    guest.clock.advance(FRAME)
    assert guest.dread(regs.PIPE_FRMCOUNT_G4X_A) == frames + 1
    assert guest.dread(regs.DSPSURFLIVE_A) == surface
    assert guest.display.command_flips == 1


def test_an_asynchronous_command_flip_completes_at_once(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    sink = guest.vgpu.execution.flip_sink
    assert sink is not None
    guest.dwrite(regs.PIPECONF_A + regs.PIPE_STRIDE, regs.PIPECONF_ENABLE)  # pipe B
    guest.w(PIPE_B_IMR, ~regs.GEN8_PIPE_SPRITE_FLIP_DONE & 0xFFFF_FFFF)
    guest.dwrite(dr.pipe_reg(regs.SPRCTL_A, 1), dr.SPRITE_TILED)
    surface = guest.vgpu.resources.low_gm_base + 0x20_0000
    with guest.vgpu.lock:
        sink(DisplayFlip(1, DisplayPlane.SPRITE, surface, 16, 0, True))
    assert guest.dread(dr.pipe_reg(regs.SPRSURFLIVE_A, 1)) == surface
    assert guest.dread(dr.pipe_reg(regs.SPRSTRIDE_A, 1)) == 16 << dr.MI_FLIP_PITCH_SHIFT
    assert not guest.dread(dr.pipe_reg(regs.SPRCTL_A, 1)) & dr.SPRITE_TILED
    assert guest.r(PIPE_B_IIR) & regs.GEN8_PIPE_SPRITE_FLIP_DONE


def test_a_destroyed_vgpu_flips_nothing(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    sink = guest.vgpu.execution.flip_sink
    assert sink is not None
    guest.gvt.destroy_vgpu(guest.vgpu)
    sink(DisplayFlip(0, DisplayPlane.PRIMARY, 0x10_0000, 40, 0, True))
    assert guest.display.command_flips == 0
