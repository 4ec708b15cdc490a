"""The host clock: one per Gvt host, shared by vblank timers and the GPU scheduler."""

from __future__ import annotations

import threading

import pytest

from gvt_core.device.display.vblank import VblankTimers
from gvt_core.device.gvt import Gvt
from gvt_core.hw.clock import NSEC_PER_SEC, RealClock, SimulatedClock, make_clock

SECOND = NSEC_PER_SEC


def test_make_clock_by_name() -> None:
    assert isinstance(make_clock("simulated"), SimulatedClock)
    real = make_clock("real")
    assert isinstance(real, RealClock) and not real.deterministic
    real.close()
    with pytest.raises(ValueError, match="simulated, real"):
        make_clock("sundial")


def test_simulated_advance_runs_timers_at_their_deadlines() -> None:
    clock = SimulatedClock()
    seen: list[int] = []
    for t in (30, 10, 20):
        clock.call_at(t, lambda: seen.append(clock.now()))
    cancelled = clock.call_at(15, lambda: seen.append(-1))
    cancelled.cancel()
    assert clock.advance(25) == 2 and seen == [10, 20] and clock.now() == 25
    with pytest.raises(ValueError):
        clock.advance(-1)
    clock.sleep(5)
    assert seen == [10, 20, 30] and clock.pending == 0


def test_advance_to_moves_time_only_run_due_catches_up() -> None:
    """What the GPU scheduler does under its lock: time moves, no callback runs there;
    the timers it passed run at the next run_due, and a periodic vblank loses none."""
    clock, fired = SimulatedClock(), []
    timers = VblankTimers(clock, threading.RLock(), fired.append)
    timers.start(0, 60000)
    clock.advance_to(SECOND // 2)
    assert fired == [] and clock.now() == SECOND // 2
    clock.advance_to(SECOND // 4)  # never backwards
    assert clock.now() == SECOND // 2
    clock.run_due()
    assert len(fired) == 29 and timers.pipes[0].missed == 0  # 30 x 16.67 ms > 0.5 s
    clock.advance(SECOND // 2)
    assert abs(len(fired) - 60) <= 1


def test_charge_and_close() -> None:
    sim, real = SimulatedClock(), RealClock()
    assert sim.charge(100, 7) == 100 and real.charge(100, 7) == 7
    sim.close()
    with pytest.raises(RuntimeError, match="closed"):
        sim.call_at(1, lambda: None)
    ran = threading.Event()
    real.call_at(real.now(), ran.set)
    assert ran.wait(5)
    real.close()
    real.close()
    with pytest.raises(RuntimeError, match="closed"):
        real.call_at(0, lambda: None)


def test_real_clock_sleep_and_now() -> None:
    clock = RealClock()
    t0 = clock.now()
    clock.sleep(2_000_000)
    assert clock.now() - t0 >= 2_000_000 and clock.run_due() == 0
    clock.advance_to(10**15)  # the GPU scheduler's call does nothing on real time
    assert clock.now() < 10**15
    clock.close()


def test_gvt_clock_follows_the_backends_guests() -> None:
    with Gvt.open("sim") as gvt:
        assert isinstance(gvt.clock, SimulatedClock)
    with Gvt.open("sim", clock="real") as gvt:
        clock = gvt.clock
        assert isinstance(clock, RealClock)
        ran = threading.Event()
        clock.call_at(clock.now(), ran.set)
        assert ran.wait(5)
    with pytest.raises(RuntimeError):  # the host closed the clock it made
        clock.call_at(0, lambda: None)
    mine = SimulatedClock()
    with Gvt.open("sim", clock=mine) as gvt:
        assert gvt.clock is mine
    mine.call_at(1, lambda: None)  # a clock passed in stays the caller's
