"""Vblank timers: one per enabled pipe, at the pipe's refresh rate (facts 6.5).

Upstream runs one hrtimer per vGPU with period 10^12 / vrefresh_k ns and
emulates a vblank on every enabled pipe when it fires. Here each enabled pipe
has its own timer on the host clock (:mod:`gvt_core.hw.clock`), so pipes with
different modes tick at their own rates. Deadlines are absolute (deadline +
period each time), so simulated time gives exactly rate x seconds vblanks
(on a deterministic clock a timer is never late: when the GPU scheduler moved
time past several periods, each period's vblank runs in turn at the next
``run_due``); on a real clock that fell behind, missed periods are skipped
and counted instead of fired in a burst.

Every firing takes the vGPU's lock and checks that the timer is still the
pipe's current one and that the vGPU is alive: after :meth:`VblankTimers.destroy`
returns (vGPU destroy, under the vGPU lock) no timer acts for the vGPU again,
even one that was already waiting for the lock. A timer also checks its
owner's ``alive()`` (the vGPU not destroyed) at every firing and stops for
good when it is not, so a vGPU destroyed without the call gets no vblank
either.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import attrs

from gvt_core.errors import VgpuStateError
from gvt_core.hw.clock import NSEC_PER_SEC, HostClock, Timer

_PERIOD_NUMERATOR = NSEC_PER_SEC * 1000  # ns x mHz


def period_ns(refresh_mhz: int) -> int:
    """Upstream's DIV64_U64_ROUND_CLOSEST(NSEC_PER_SEC * MSEC_PER_SEC, vrefresh_k)."""
    return (_PERIOD_NUMERATOR + refresh_mhz // 2) // refresh_mhz


@attrs.define(eq=False)
class PipeTimer:
    refresh_mhz: int
    period: int
    started: int
    next_deadline: int
    generation: int
    timer: Timer | None = None
    fired: int = 0
    missed: int = 0
    last_vblank: int | None = None


class VblankTimers:
    """The vblank timers of one vGPU."""

    def __init__(self, clock: HostClock, lock: threading.RLock,
                 on_vblank: Callable[[int], None],
                 alive: Callable[[], bool] = lambda: True) -> None:
        self.clock = clock
        self.lock = lock
        self.on_vblank = on_vblank
        #: checked (under the lock) at every firing: a dead owner stops every timer
        self.alive = alive
        self.pipes: dict[int, PipeTimer] = {}
        self._generation = 0
        self.dead = False

    def running(self, pipe: int) -> bool:
        return pipe in self.pipes

    def refresh_mhz(self, pipe: int) -> int | None:
        state = self.pipes.get(pipe)
        return state.refresh_mhz if state else None

    def start(self, pipe: int, refresh_mhz: int) -> None:
        """Run ``pipe``'s timer at ``refresh_mhz``; a running timer at the same rate
        is left alone, one at another rate restarts (upstream semantics)."""
        if self.dead:
            raise VgpuStateError("cannot start a vblank timer of a destroyed vGPU")
        if refresh_mhz <= 0:
            raise ValueError(f"refresh rate must be positive, got {refresh_mhz} mHz")
        state = self.pipes.get(pipe)
        if state is not None and state.refresh_mhz == refresh_mhz:
            return
        self.stop(pipe)
        self._generation += 1
        now = self.clock.now()
        period = period_ns(refresh_mhz)
        state = PipeTimer(refresh_mhz, period, now, now + period, self._generation)
        self.pipes[pipe] = state
        state.timer = self.clock.call_at(state.next_deadline,
                                         functools.partial(self._fire, pipe, state.generation))

    def stop(self, pipe: int) -> None:
        state = self.pipes.pop(pipe, None)
        if state is not None and state.timer is not None:
            state.timer.cancel()

    def stop_all(self) -> None:
        for pipe in list(self.pipes):
            self.stop(pipe)

    def destroy(self) -> None:
        """vGPU destroy (caller holds the vGPU lock): every timer stops for good."""
        self.dead = True
        self.stop_all()

    def scanline(self, pipe: int, vtotal: int) -> int:
        """PIPEDSL: the line being scanned now, from the time since the last vblank
        (0 while the pipe's timer is off)."""
        state = self.pipes.get(pipe)
        if state is None or vtotal <= 0:
            return 0
        since = (self.clock.now() - (state.last_vblank if state.last_vblank is not None
                                     else state.started)) % state.period
        return since * vtotal // state.period

    def _fire(self, pipe: int, generation: int) -> None:
        with self.lock:
            state = self.pipes.get(pipe)
            if self.dead or state is None or state.generation != generation:
                return
            if not self.alive():
                self.destroy()  # the vGPU died without telling us: stop for good
                return
            deadline = state.next_deadline
            nxt = deadline + state.period
            now = self.clock.now()
            if nxt <= now and not self.clock.deterministic:
                skipped = (now - deadline) // state.period
                state.missed += skipped
                nxt = deadline + (skipped + 1) * state.period
            state.next_deadline = nxt
            state.last_vblank = deadline
            state.fired += 1
            state.timer = self.clock.call_at(nxt, functools.partial(self._fire, pipe, generation))
            self.on_vblank(pipe)
