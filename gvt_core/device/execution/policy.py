"""Scheduling policies: who owns the engines next (the kernel's ``intel_gvt_sched_policy_ops``).

A policy is told about the host (``init``/``clean``), about each vGPU
(``init_vgpu``/``clean_vgpu`` at creation and destruction,
``start_schedule``/``stop_schedule`` at activation and deactivation), and
is asked to decide at every timer tick and after every submission
(``schedule``). It decides by calling :meth:`SchedulerCore.select` with the
vGPU that should own the engines next (or the idle vGPU); the scheduler
switches as soon as no workload of the current owner is running, and asks
:meth:`SchedulerCore.has_pending` for what it needs to know. Everything is
called with the scheduler lock held.

* :class:`TimeBasedPolicy` (``"time-based"``, the default) is upstream's
  ``tbs`` (facts 7.6): 1 ms tick; every 100 ms a balance step, whose stage
  0 (every tenth, about once a second) hands each vGPU ``100 ms x weight /
  sum of weights`` and forgets debts, and whose other stages add that
  allocation to what is left (credit and debt carry over); a change of the
  run queue (activation, deactivation) starts a new cycle at the next tick,
  where upstream waits for the next stage 0; the running vGPU
  is charged the time it owned the engines at every tick; the next owner is
  the first vGPU in LRU order with work queued and time left, moved to the
  tail; with none, the idle vGPU.
* :class:`PriorityPolicy` (``"priority"``) is strict priority by weight:
  the heaviest vGPU with work always wins, LRU among equals. It starves the
  others by design and exists to prove the seam.
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

#: the timer period, ``GVT_DEFAULT_TIME_SLICE``.
TIME_SLICE_NS = 1_000_000
#: ``GVT_TS_BALANCE_PERIOD_MS``
BALANCE_PERIOD_NS = 100_000_000
#: ``GVT_TS_BALANCE_STAGE_NUM``
BALANCE_STAGES = 10


@attrs.define(eq=False)
class SchedVgpu:
    """Per-vGPU scheduling data (``struct vgpu_sched_data``)."""

    vgpu: Any
    weight: int
    #: in the run queue (activated).
    active: bool = False
    sched_in_time: int = 0
    #: total time owned, ns.
    sched_time: int = 0
    #: time left in this balance period (negative: debt).
    left_ts: int = 0
    allocated_ts: int = 0

    @property
    def id(self) -> int:
        return int(self.vgpu.id)


class SchedulerCore(Protocol):
    """What a policy sees of the scheduler."""

    #: the vGPU that owns the engines now (None before the first choice).
    current: SchedVgpu | None
    #: the vGPU a switch is pending to (None: no switch pending).
    next: SchedVgpu | None
    #: the idle vGPU: choosing it leaves the engines idle.
    idle: SchedVgpu

    def has_pending(self, v: SchedVgpu) -> bool:
        """Whether ``v`` has workloads queued or running."""
        ...

    def select(self, v: SchedVgpu, now: int) -> None:
        """Make ``v`` the next owner; the switch happens once the engines drain."""
        ...


class SchedPolicy(Protocol):
    """A scheduling policy (``intel_gvt_sched_policy_ops`` plus the decision itself)."""

    name: str

    def init(self, core: SchedulerCore) -> None:
        ...

    def clean(self) -> None:
        ...

    def init_vgpu(self, v: SchedVgpu) -> None:
        ...

    def clean_vgpu(self, v: SchedVgpu) -> None:
        ...

    def start_schedule(self, v: SchedVgpu) -> None:
        ...

    def stop_schedule(self, v: SchedVgpu) -> None:
        ...

    def schedule(self, now: int, timer: bool) -> None:
        """Decide (``timer``: a tick of the 1 ms timer; else a submission event)."""
        ...


class _LruPolicy:
    """Run queue bookkeeping shared by the policies: an LRU list of active vGPUs."""

    name = "lru"

    def __init__(self) -> None:
        self.core: SchedulerCore | None = None
        self.runq: list[SchedVgpu] = []

    def init(self, core: SchedulerCore) -> None:
        self.core = core

    def clean(self) -> None:
        self.runq.clear()
        self.core = None

    def init_vgpu(self, v: SchedVgpu) -> None:
        v.active = False

    def clean_vgpu(self, v: SchedVgpu) -> None:
        self.stop_schedule(v)

    def start_schedule(self, v: SchedVgpu) -> None:
        if v not in self.runq:
            self.runq.append(v)
        v.active = True

    def stop_schedule(self, v: SchedVgpu) -> None:
        if v in self.runq:
            self.runq.remove(v)
        v.active = False

    def _charge_current(self, now: int) -> None:
        """``vgpu_update_timeslice``: charge the owner the time since it was last charged."""
        core = self.core
        assert core is not None
        cur = core.current
        if cur is None or cur is core.idle:
            return
        delta = now - cur.sched_in_time
        cur.sched_time += delta
        cur.left_ts -= delta
        cur.sched_in_time = now

    def _to_tail(self, v: SchedVgpu) -> None:
        self.runq.remove(v)
        self.runq.append(v)


class TimeBasedPolicy(_LruPolicy):
    """Upstream's time-based weighted policy (see the module docstring)."""

    name = "time-based"

    def __init__(self, time_slice_ns: int = TIME_SLICE_NS,
                 balance_period_ns: int = BALANCE_PERIOD_NS,
                 balance_stages: int = BALANCE_STAGES) -> None:
        super().__init__()
        self.time_slice_ns = time_slice_ns
        self.balance_period_ns = balance_period_ns
        self.balance_stages = balance_stages
        self.expire_time = 0
        self.stage_check = 0

    def balance(self) -> None:
        """``gvt_balance_timeslice``."""
        stage = self.stage_check % self.balance_stages
        self.stage_check += 1
        if stage == 0:
            total = sum(v.weight for v in self.runq)
            for v in self.runq:
                v.allocated_ts = self.balance_period_ns * v.weight // total
                v.left_ts = v.allocated_ts
        else:
            for v in self.runq:
                v.left_ts += v.allocated_ts

    def start_schedule(self, v: SchedVgpu) -> None:
        super().start_schedule(v)
        v.left_ts = v.allocated_ts = 0
        self._restart_balance()

    def stop_schedule(self, v: SchedVgpu) -> None:
        super().stop_schedule(v)
        self._restart_balance()

    def _restart_balance(self) -> None:
        """The run queue changed: the next tick balances as stage 0, so the slices
        follow the new set of weights at once. (Upstream keeps the old allocations
        until the next stage 0, up to a second later, and a vGPU that joined
        meanwhile has no time slice at all until then.)"""
        self.stage_check = 0
        self.expire_time = 0

    def schedule(self, now: int, timer: bool) -> None:
        core = self.core
        assert core is not None
        if timer and now >= self.expire_time and self.runq:
            self.balance()
            self.expire_time = now + self.balance_period_ns
        self._charge_current(now)
        if not self.runq or core.next is not None:
            return
        chosen = next((v for v in self.runq if core.has_pending(v) and v.left_ts > 0), None)
        if chosen is not None:
            self._to_tail(chosen)
            core.select(chosen, now)
        else:
            core.select(core.idle, now)


class PriorityPolicy(_LruPolicy):
    """Strict priority by weight: the heaviest busy vGPU runs (LRU among equals)."""

    name = "priority"

    def schedule(self, now: int, timer: bool) -> None:
        core = self.core
        assert core is not None
        self._charge_current(now)
        if not self.runq or core.next is not None:
            return
        busy = [v for v in self.runq if core.has_pending(v)]
        if not busy:
            core.select(core.idle, now)
            return
        top = max(v.weight for v in busy)
        chosen = next(v for v in busy if v.weight == top)
        self._to_tail(chosen)
        core.select(chosen, now)


POLICIES: dict[str, type[SchedPolicy]] = {
    TimeBasedPolicy.name: TimeBasedPolicy,
    PriorityPolicy.name: PriorityPolicy,
}


def make_policy(name: str) -> SchedPolicy:
    """A policy by name (``time-based`` or ``priority``)."""
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown scheduling policy {name!r}; choose one of "
                         f"{', '.join(POLICIES)}") from None
