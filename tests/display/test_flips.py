"""Flips: synchronous ones latch at vblank, asynchronous ones complete at once (facts 9.5)."""

from __future__ import annotations

from typing import Any

import pytest

from gvt_core.device.display.flips import FlipEngine, FlipPlane
from gvt_core.device.interrupt import IrqEvent
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs

B = 1  # pipe B: every offset below is pipe B's


def r(rf: Any, offset_a: int) -> int:
    return rf.get32(dr.pipe_reg(offset_a, B))


@pytest.fixture
def flips(regfile: Any) -> FlipEngine:
    return FlipEngine(regfile)


def test_sync_flip_latches_at_vblank(flips: FlipEngine, regfile: Any) -> None:
    regfile.set32(dr.pipe_reg(regs.DSPSURFLIVE_A, B), 0x1000)
    surf = dr.pipe_reg(regs.DSPSURF_A, B)
    assert flips.surface_written(surf, 0x20_0000, pipe_running=True) == ()
    assert r(regfile, regs.DSPSURF_A) == 0x20_0000
    assert r(regfile, regs.DSPSURFLIVE_A) == 0x1000  # still the old frame on screen
    assert r(regfile, regs.PIPE_FLIPCOUNT_G4X_A) == 1
    events = flips.vblank(B, pipe_enabled=True)
    assert events == (IrqEvent.PRIMARY_B_FLIP_DONE, IrqEvent.PIPE_B_VBLANK)
    assert r(regfile, regs.DSPSURFLIVE_A) == 0x20_0000
    assert r(regfile, regs.PIPE_FRMCOUNT_G4X_A) == 1
    assert flips.vblank(B, pipe_enabled=True) == (IrqEvent.PIPE_B_VBLANK,)  # done once
    assert r(regfile, regs.PIPE_FRMCOUNT_G4X_A) == 2


def test_async_flip_completes_at_once(flips: FlipEngine, regfile: Any) -> None:
    regfile.set32(dr.pipe_reg(regs.DSPCNTR_A, B), dr.DISP_ENABLE | dr.DISP_ASYNC_FLIP)
    events = flips.surface_written(dr.pipe_reg(regs.DSPSURF_A, B), 0x30_0000, pipe_running=True)
    assert events == (IrqEvent.PRIMARY_B_FLIP_DONE,)
    assert r(regfile, regs.DSPSURFLIVE_A) == 0x30_0000
    assert flips.vblank(B, pipe_enabled=True) == (IrqEvent.PIPE_B_VBLANK,)


def test_sprite_flip(flips: FlipEngine, regfile: Any) -> None:
    flips.surface_written(dr.pipe_reg(regs.SPRSURF_A, B), 0x40_0000, pipe_running=True)
    assert r(regfile, regs.PIPE_FLIPCOUNT_G4X_A) == 0  # the flip counter counts primary flips
    flips.surface_written(dr.pipe_reg(regs.DSPSURF_A, B), 0x50_0000, pipe_running=True)
    assert flips.vblank(B, True) == (IrqEvent.PRIMARY_B_FLIP_DONE, IrqEvent.SPRITE_B_FLIP_DONE,
                                     IrqEvent.PIPE_B_VBLANK)
    assert r(regfile, regs.SPRSURFLIVE_A) == 0x40_0000


def test_stopped_pipe(flips: FlipEngine, regfile: Any) -> None:
    # no vblank will come: the surface goes live at once, without an event
    assert flips.surface_written(dr.pipe_reg(regs.DSPSURF_A, B), 0x1000, pipe_running=False) == ()
    assert r(regfile, regs.DSPSURFLIVE_A) == 0x1000
    flips.surface_written(dr.pipe_reg(regs.DSPSURF_A, B), 0x2000, pipe_running=True)
    flips.pipe_stopped(B)
    assert r(regfile, regs.DSPSURFLIVE_A) == 0x2000
    assert flips.vblank(B, pipe_enabled=False) == ()
    assert r(regfile, regs.PIPE_FRMCOUNT_G4X_A) == 0


def test_vblank_of_disabled_pipe_drops_pending(flips: FlipEngine, regfile: Any) -> None:
    flips.surface_written(dr.pipe_reg(regs.DSPSURF_A, B), 0x2000, pipe_running=True)
    assert flips.vblank(B, pipe_enabled=False) == ()
    assert flips.vblank(B, pipe_enabled=True) == (IrqEvent.PIPE_B_VBLANK,)


def test_display_flip_from_the_command_stream(flips: FlipEngine, regfile: Any) -> None:
    assert flips.display_flip(FlipPlane.PRIMARY, B, 0x9000, asynchronous=True,
                              pipe_running=True) == (IrqEvent.PRIMARY_B_FLIP_DONE,)
    assert r(regfile, regs.DSPSURFLIVE_A) == 0x9000
    flips.display_flip(FlipPlane.SPRITE, B, 0xA000, asynchronous=False, pipe_running=True)
    assert flips.vblank(B, True)[0] is IrqEvent.SPRITE_B_FLIP_DONE


def test_surface_offsets() -> None:
    assert FlipPlane.of_surface(regs.DSPSURF_A) == (FlipPlane.PRIMARY, 0)
    assert FlipPlane.of_surface(dr.pipe_reg(regs.SPRSURF_A, 2)) == (FlipPlane.SPRITE, 2)
    assert FlipPlane.of_surface(dr.pipe_reg(regs.DSPSURF_A, 3)) is None
    assert FlipPlane.of_surface(regs.DSPCNTR_A) is None
