"""The host clock the scheduler and the engines share.

Two clocks, chosen per host (``Gvt(..., clock=...)``):

* :class:`SimulatedClock` (default): time is GPU time. It moves only when
  an engine executes (by the cost model, :mod:`gvt_core.hw.engine.cost`) or
  when work is queued but the policy keeps the engines idle (then it jumps
  to the next scheduler tick). When no vGPU has work the clock stands still,
  so nothing a host thread does (or how fast the host is) changes what the
  guests observe: the same submissions give the same schedule.
* :class:`RealClock`: the host's monotonic clock. GPU time charged to a
  vGPU is the host time the software engines took; ticks are real
  milliseconds. Useful with kvmgt guests, whose own timers run in real time.
"""

from __future__ import annotations

import time
from typing import Protocol

import attrs


class HostClock(Protocol):
    """Time in nanoseconds since the host came up."""

    name: str
    #: True when time only moves with executed work (reproducible schedules).
    deterministic: bool

    def now(self) -> int:
        ...

    def advance_to(self, t: int) -> None:
        """The GPU reached time ``t`` (simulated: the clock moves; real: nothing)."""
        ...

    def charge(self, model_ns: int, real_ns: int) -> int:
        """GPU time to account for a slice that cost ``model_ns`` by the cost
        model and took ``real_ns`` of host time."""
        ...


@attrs.define(eq=False)
class SimulatedClock:
    name: str = "simulated"
    deterministic: bool = True
    _t: int = 0

    def now(self) -> int:
        return self._t

    def advance_to(self, t: int) -> None:
        if t > self._t:
            self._t = t

    def charge(self, model_ns: int, real_ns: int) -> int:
        return model_ns


@attrs.define(eq=False)
class RealClock:
    name: str = "real"
    deterministic: bool = False
    _epoch: int = attrs.field(factory=time.monotonic_ns)

    def now(self) -> int:
        return time.monotonic_ns() - self._epoch

    def advance_to(self, t: int) -> None:
        return None

    def charge(self, model_ns: int, real_ns: int) -> int:
        return real_ns


CLOCKS = {"simulated": SimulatedClock, "real": RealClock}


def make_clock(name: str) -> HostClock:
    """A clock by name (``simulated`` or ``real``)."""
    try:
        return CLOCKS[name]()
    except KeyError:
        raise ValueError(f"unknown clock {name!r}; choose one of {', '.join(CLOCKS)}") from None
