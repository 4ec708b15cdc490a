"""The host's clock: one per GVT host, shared by everything in the device model that
needs time (the display's vblank timers, the GPU scheduler's ticks and GPU time).

Upstream GVT-g drives vblank emulation and its scheduler from kernel hrtimers
and charges GPU time in real time. Here a :class:`HostClock` does that job, in
two flavours chosen per host (``Gvt(clock=...)``):

* :class:`SimulatedClock` (the default; ``deterministic``): time moves only
  when someone moves it: :meth:`SimulatedClock.advance` (a test, the demo, a
  guest model that "sleeps") or :meth:`SimulatedClock.advance_to` (the GPU
  scheduler, when engines executed work by the cost model or when work waits
  for the next tick). Nothing a host thread does, or how fast the host is,
  changes what guests observe: the same inputs give the same vblanks and the
  same schedule.
* :class:`RealClock`: the host's monotonic clock (ns since the clock was
  made), and one daemon thread that runs timer callbacks. For guests that run
  in real time on real CPUs (kvmgt; a backend says so with
  ``Capabilities.realtime_guests``).

Timers (:meth:`HostClock.call_at`) run their callbacks without any
device-model lock held by the clock: on the simulated clock, on the thread
that calls :meth:`~SimulatedClock.advance`, :meth:`~SimulatedClock.run_due`
or :meth:`~SimulatedClock.sleep`, each with the clock reading its own
deadline; on the real clock, on its thread. :meth:`~SimulatedClock.advance_to`
only moves time (the scheduler calls it with its own lock held, and a timer
callback takes a vGPU lock, which must come first); the timers it passed run,
each at its deadline, at the next :meth:`~SimulatedClock.run_due`. A callback
that touches a vGPU takes the vGPU's lock itself and checks that the vGPU is
still alive, so a timer that fires while the vGPU is being destroyed does
nothing.
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

    #: ``simulated`` or ``real``.
    name: str
    #: True when time moves only when it is moved (reproducible runs): a timer is
    #: never late, so periodic work must not skip periods on such a clock.
    deterministic: bool

    def now(self) -> int:
        """Monotonic time in nanoseconds."""
        ...

    def call_at(self, deadline: int, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` once, at (or as soon as possible after) ``deadline`` ns."""
        ...

    def advance_to(self, t: int) -> None:
        """The GPU reached time ``t`` (simulated: time moves, timers wait for
        :meth:`run_due`; real: nothing). Safe to call with any lock held."""
        ...

    def run_due(self) -> int:
        """Run the timers that are due now (simulated: each at its deadline; real:
        the clock's thread does it, so nothing). Call it holding no device-model lock."""
        ...

    def sleep(self, ns: int) -> None:
        """Let ``ns`` of host time pass for the caller (a guest model waiting for
        an interrupt): simulated, time advances and timers fire on this thread;
        real, the thread sleeps."""
        ...

    def charge(self, model_ns: int, real_ns: int) -> int:
        """GPU time to account for a slice that cost ``model_ns`` by the engines'
        cost model and took ``real_ns`` of host time."""
        ...

    def close(self) -> None:
        """No timer runs after this returns. Idempotent."""
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

    def clear(self) -> None:
        self._heap.clear()

    def __len__(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)


class SimulatedClock:
    """Simulated time: starts at ``start`` ns and moves only when it is moved."""

    name = "simulated"
    deterministic = True

    def __init__(self, start: int = 0) -> None:
        self._now = start
        self._timers = _TimerHeap()
        self._lock = threading.RLock()
        self._closed = False
        #: callbacks that raised (they are logged and skipped; time goes on).
        self.callback_errors = 0

    def now(self) -> int:
        return self._now

    def call_at(self, deadline: int, callback: Callable[[], None]) -> Timer:
        timer = Timer(deadline, callback)
        with self._lock:
            if self._closed:
                raise RuntimeError("the host clock was closed; no timer can be scheduled")
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

    def sleep(self, ns: int) -> None:
        self.advance(ns)

    def advance_to(self, t: int) -> None:
        with self._lock:
            if t > self._now:
                self._now = t

    def run_due(self) -> int:
        return self.run_until(self._now)

    def run_until(self, target: int) -> int:
        """Advance to absolute time ``target`` (never backwards), running the timers
        due by then in deadline order. While a timer runs the clock reads its
        deadline, unless :meth:`advance_to` already moved time past it."""
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

    def charge(self, model_ns: int, real_ns: int) -> int:
        return model_ns

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._timers.clear()


class RealClock:
    """Monotonic wall time; callbacks run on one daemon thread started on first use."""

    name = "real"
    deterministic = False

    def __init__(self, name: str = "gvt-clock") -> None:
        self._name = name
        self._epoch = time.monotonic_ns()
        self._timers = _TimerHeap()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.callback_errors = 0

    def now(self) -> int:
        return time.monotonic_ns() - self._epoch

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

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._timers)

    def advance_to(self, t: int) -> None:
        return None

    def run_due(self) -> int:
        return 0

    def sleep(self, ns: int) -> None:
        if ns > 0:
            time.sleep(ns / NSEC_PER_SEC)

    def charge(self, model_ns: int, real_ns: int) -> int:
        return real_ns

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = self.now()
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
            self._timers.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()


#: the clocks by name (``Gvt(clock=NAME)``, ``gvt demo --clock NAME``).
CLOCKS: dict[str, Callable[[], HostClock]] = {"simulated": SimulatedClock, "real": RealClock}


def make_clock(name: str) -> HostClock:
    """A new clock by name (``simulated`` or ``real``)."""
    try:
        return CLOCKS[name]()
    except KeyError:
        raise ValueError(f"unknown clock {name!r}; choose one of {', '.join(CLOCKS)}") from None
