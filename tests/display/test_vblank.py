"""Vblank timers on the host clock: rate, enable, masking, mode changes, destroy."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from gvt_core.device.display.timing import dp_link_m_n, timing_registers
from gvt_core.device.display.vblank import VblankTimers, period_ns
from gvt_core.device.display.vdisplay import VirtualDisplay
from gvt_core.errors import VgpuStateError
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs
from gvt_core.hw.clock import NSEC_PER_SEC, RealClock, SimulatedClock

SECOND = NSEC_PER_SEC


def test_period() -> None:
    assert period_ns(60000) == 16_666_667
    assert period_ns(59950) == round(1e12 / 59950)


def test_simulated_second_at_60hz() -> None:
    clock, fired = SimulatedClock(), []
    timers = VblankTimers(clock, threading.RLock(), fired.append)
    timers.start(0, 60000)
    clock.advance(SECOND)
    assert abs(len(fired) - 60) <= 1 and set(fired) == {0}
    assert timers.pipes[0].missed == 0


def test_pipes_tick_at_their_own_rates() -> None:
    clock, fired = SimulatedClock(), []
    timers = VblankTimers(clock, threading.RLock(), fired.append)
    timers.start(0, 60000)
    timers.start(2, 30000)
    clock.advance(SECOND)
    assert abs(fired.count(0) - 60) <= 1 and abs(fired.count(2) - 30) <= 1
    timers.stop(0)
    clock.advance(SECOND)
    assert abs(fired.count(0) - 60) <= 1 and abs(fired.count(2) - 60) <= 1


def test_same_rate_keeps_the_phase_new_rate_restarts() -> None:
    clock, fired = SimulatedClock(), []
    timers = VblankTimers(clock, threading.RLock(), fired.append)
    timers.start(0, 50000)  # 20 ms
    clock.advance(15_000_000)
    timers.start(0, 50000)  # unchanged: no restart
    clock.advance(5_000_000)
    assert len(fired) == 1
    timers.start(0, 100000)  # 10 ms from now
    clock.advance(9_000_000)
    assert len(fired) == 1
    clock.advance(1_000_000)
    assert len(fired) == 2 and timers.refresh_mhz(0) == 100000


def test_missed_periods_are_skipped_not_burst() -> None:
    class LaggingClock(SimulatedClock):
        """Timers fire late: when one runs, the host is already 5 periods on."""

        lag = 0
        deterministic = False

        def now(self) -> int:
            return super().now() + self.lag

    clock, fired = LaggingClock(), []
    timers = VblankTimers(clock, threading.RLock(), fired.append)
    timers.start(0, 100000)  # 10 ms
    clock.lag = 50_000_000
    clock.advance(10_000_000)
    assert len(fired) == 1 and timers.pipes[0].missed == 5
    assert timers.pipes[0].next_deadline > clock.now()


def test_scanline_moves() -> None:
    clock = SimulatedClock()
    timers = VblankTimers(clock, threading.RLock(), lambda pipe: None)
    assert timers.scanline(0, 806) == 0
    timers.start(0, 60000)
    clock.advance(period_ns(60000) // 2)
    assert 400 <= timers.scanline(0, 806) <= 406


def test_destroy_stops_for_good() -> None:
    clock, fired = SimulatedClock(), []
    timers = VblankTimers(clock, threading.RLock(), fired.append)
    timers.start(0, 60000)
    clock.advance(SECOND // 2)
    n = len(fired)
    timers.destroy()
    clock.advance(SECOND)
    assert len(fired) == n and clock.pending == 0
    with pytest.raises(VgpuStateError):
        timers.start(0, 60000)


def test_real_clock_destroy_races_a_waiting_callback() -> None:
    """A timer callback already waiting for the vGPU lock when destroy runs does nothing."""
    clock, lock, fired = RealClock(), threading.RLock(), []
    try:
        timers = VblankTimers(clock, lock, fired.append)
        with lock:
            timers.start(0, 240000)
            time.sleep(0.05)  # several deadlines pass; the clock thread blocks on the lock
            timers.destroy()
            n = len(fired)
        time.sleep(0.05)
        assert len(fired) == n == 0
        timers2 = VblankTimers(clock, lock, fired.append)
        timers2.start(1, 240000)
        time.sleep(0.2)
        assert fired and set(fired) == {1}  # a live timer does run on the real clock
        with lock:
            timers2.destroy()
            n = len(fired)
        time.sleep(0.05)
        assert len(fired) == n
    finally:
        clock.close()


def set_mode(guest: Any, width: int, height: int, htotal: int, vtotal: int, pixel_khz: int) -> None:
    """What i915's modeset writes before enabling the pipe (DP SST on port B, RBR)."""
    for off, val in timing_registers(0, width=width, height=height, htotal=htotal,
                                     vtotal=vtotal).items():
        guest.w(off, val)
    guest.w(dr.port_clk_sel(regs.PORT_B), dr.PORT_CLK_SEL_LCPLL_810)
    m, n = dp_link_m_n(pixel_khz, 162000)
    guest.w(dr.PIPE_LINK_M1_A, m)
    guest.w(dr.PIPE_LINK_N1_A, n)


def test_vblank_interrupts_over_a_simulated_second(make_guest: Callable[..., Any]) -> None:
    guest = make_guest("GVTg_V4_4")
    guest.enable_msi()
    pipe_a = regs.GEN8_DE_PIPE_ISR_BASE
    guest.w(pipe_a + regs.IRQ_IMR, ~regs.GEN8_PIPE_VBLANK & 0xFFFF_FFFF)
    guest.w(pipe_a + regs.IRQ_IER, regs.GEN8_PIPE_VBLANK)
    set_mode(guest, 1920, 1200, 2080, 1235, 154000)
    guest.dwrite(regs.PIPECONF_A, regs.PIPECONF_ENABLE)
    assert guest.r(regs.PIPECONF_A) & regs.PIPECONF_STATE
    assert abs(guest.display.vblank.refresh_mhz(0) - 59950) <= 1
    seen = 0
    for _ in range(100):  # 100 slices of 10 ms; the guest acks each vblank
        guest.clock.advance(SECOND // 100)
        iir = guest.r(pipe_a + regs.IRQ_IIR)
        if iir & regs.GEN8_PIPE_VBLANK:
            seen += 1
            guest.w(pipe_a + regs.IRQ_IIR, regs.GEN8_PIPE_VBLANK)
    frames = guest.r(regs.PIPE_FRMCOUNT_G4X_A)
    assert abs(frames - 60) <= 1
    assert abs(seen - 60) <= 1
    assert guest.vgpu.irq.counters.injected >= 59
    # the scanline counter moves with time
    assert 0 <= guest.dread(dr.PIPEDSL_A) < 1235


def test_no_vblank_when_pipe_disabled_or_masked(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    pipe_a = regs.GEN8_DE_PIPE_ISR_BASE
    guest.dwrite(regs.PIPECONF_A, regs.PIPECONF_ENABLE)
    guest.clock.advance(SECOND // 10)
    # masked in IMR (the golden state): counted, not latched
    assert not guest.r(pipe_a + regs.IRQ_IIR) & regs.GEN8_PIPE_VBLANK
    assert guest.vgpu.irq.counters.masked >= 5
    guest.dwrite(regs.PIPECONF_A, 0)
    assert not guest.r(regs.PIPECONF_A) & regs.PIPECONF_STATE
    frames = guest.r(regs.PIPE_FRMCOUNT_G4X_A)
    guest.clock.advance(SECOND)
    assert guest.r(regs.PIPE_FRMCOUNT_G4X_A) == frames
    assert not guest.display.vblank.running(0)


def test_mode_change_changes_the_rate(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    set_mode(guest, 1024, 768, 1344, 806, 65000)
    guest.dwrite(regs.PIPECONF_A, regs.PIPECONF_ENABLE)
    assert round(guest.display.vblank.refresh_mhz(0) / 1000) == 60
    guest.dwrite(regs.PIPECONF_A, 0)
    set_mode(guest, 1024, 768, 1344, 806, 32500)  # half the clock: 30 Hz
    guest.dwrite(regs.PIPECONF_A, regs.PIPECONF_ENABLE)
    before = guest.r(regs.PIPE_FRMCOUNT_G4X_A)
    guest.clock.advance(SECOND)
    assert abs(guest.r(regs.PIPE_FRMCOUNT_G4X_A) - before - 30) <= 1


def test_destroyed_vgpu_gets_no_more_vblanks(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    guest.dwrite(regs.PIPECONF_A, regs.PIPECONF_ENABLE)
    guest.clock.advance(SECOND // 10)
    events = guest.vgpu.irq.counters.events
    vgpu = guest.vgpu
    guest.gvt.destroy_vgpu(vgpu)  # teardown destroys the display first
    assert guest.display.destroyed and guest.display.vblank.dead
    guest.clock.advance(SECOND)
    assert vgpu.irq.counters.events == events
    assert guest.clock.pending == 0


def test_vgpu_destroyed_without_display_destroy(make_guest: Callable[..., Any]) -> None:
    """A display nobody destroyed (here a second one, not wired into the vGPU) stops
    acting at its next firing once its vGPU is gone."""
    guest = make_guest()
    vgpu = guest.vgpu
    stray = VirtualDisplay.for_vgpu(vgpu, guest.clock)
    with vgpu.lock:
        stray.vblank.start(1, 60000)
    guest.clock.advance(SECOND // 10)
    assert stray.vblank.pipes[1].fired >= 5
    events = vgpu.irq.counters.events
    guest.gvt.destroy_vgpu(vgpu)
    guest.clock.advance(SECOND)
    assert vgpu.irq.counters.events == events
    assert guest.clock.pending == 0 and stray.vblank.dead
