"""The host's clock: time and one-shot timers for the device model's periodic work.

Upstream GVT-g drives vblank emulation (and its scheduler) from kernel
hrtimers. Here a :class:`HostClock` does that job, in two flavours:

* :class:`SimulatedClock` (the default): time moves only when the owner calls
  :meth:`SimulatedClock.advance`, which runs every timer that falls due, in
  deadline order, on the calling thread. Tests and the sim backend get exact,
  repeatable timing ("60 vblanks in one simulated second").
* :class:`RealClock`: monotonic wall time and one daemon thread that runs the
  callbacks, for guests that run in real time (kvmgt).

Callbacks run without any device-model lock held; a callback that touches a
vGPU takes the vGPU's lock itself and checks that the vGPU is still alive, so
a timer that fires while the vGPU is being destroyed does nothing.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import attrs

log = logging.getLogger(__name__)

NSEC_PER_SEC = 1_000_000_000


@attrs.define(eq=False)
class Timer:
    """A scheduled callback; :meth:`cancel` makes sure it will not run (if it has not
    started already)."""

    deadline: int
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class HostClock(Protocol):
    """What the device model needs of the host's time source."""

    def now(self) -> int:
        """Monotonic time in nanoseconds."""
        ...

    def call_at(self, deadline: int, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` once, at (or as soon as possible after) ``deadline`` ns."""
        ...


class _TimerHeap:
    """Timers ordered by (deadline, submission order)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Timer]] = []
        self._seq = itertools.count()

    def push(self, timer: Timer) -> None:
        heapq.heappush(self._heap, (timer.deadline, next(self._seq), timer))

    def pop_due(self, now: int) -> Timer | None:
        """The earliest live timer due at ``now``; cancelled ones are dropped."""
        while self._heap and self._heap[0][0] <= now:
            timer = heapq.heappop(self._heap)[2]
            if not timer.cancelled:
                return timer
        return None

    def next_deadline(self) -> int | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)


class SimulatedClock:
    """Simulated time: starts at ``start`` ns and moves only through :meth:`advance`."""

    def __init__(self, start: int = 0) -> None:
        self._now = start
        self._timers = _TimerHeap()
        self._lock = threading.RLock()
        #: callbacks that raised (they are logged and skipped; time goes on).
        self.callback_errors = 0

    def now(self) -> int:
        return self._now

    def call_at(self, deadline: int, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline, callback)
        with self._lock:
            self._timers.push(timer)
        return timer

    @property
    def pending(self) -> int:
        """Timers scheduled and not cancelled."""
        with self._lock:
            return len(self._timers)

    def advance(self, ns: int) -> int:
        """Move time forward by ``ns``, running every timer that falls due on the
        way, each at its own deadline; returns how many ran."""
        if ns < 0:
            raise ValueError(f"a clock cannot go backwards ({ns} ns)")
        return self.run_until(self._now + ns)

    def run_until(self, target: int) -> int:
        """Advance to absolute time ``target`` (never backwards)."""
        ran = 0
        while True:
            with self._lock:
                timer = self._timers.pop_due(target)
                if timer is None:
                    self._now = max(self._now, target)
                    return ran
                self._now = max(self._now, timer.deadline)
            ran += 1
            try:
                timer.callback()
            except Exception:
                self.callback_errors += 1
                log.exception("simulated clock: timer callback failed")


class RealClock:
    """Monotonic wall time; callbacks run on one daemon thread started on first use."""

    def __init__(self, name: str = "gvt-clock") -> None:
        self._name = name
        self._timers = _TimerHeap()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.callback_errors = 0

    def now(self) -> int:
        return time.monotonic_ns()

    def call_at(self, deadline: int, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline, callback)
        with self._cond:
            if self._closed:
                raise RuntimeError("the host clock was closed; no timer can be scheduled")
            self._timers.push(timer)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return timer

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic_ns()
                    timer = self._timers.pop_due(now)
                    if timer is not None:
                        break
                    nxt = self._timers.next_deadline()
                    self._cond.wait(None if nxt is None else (nxt - now) / NSEC_PER_SEC)
            try:
                timer.callback()
            except Exception:
                self.callback_errors += 1
                log.exception("host clock: timer callback failed")

    def close(self) -> None:
        """Stop the thread; pending timers never run. Idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
