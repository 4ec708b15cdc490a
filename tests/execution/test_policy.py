"""The scheduling policies on their own, against a model of the scheduler core."""

from __future__ import annotations

import attrs
import pytest

from gvt_core.device.execution.policy import (
    BALANCE_PERIOD_NS,
    TIME_SLICE_NS,
    PriorityPolicy,
    SchedPolicy,
    SchedVgpu,
    TimeBasedPolicy,
    make_policy,
)


@attrs.define(eq=False)
class _Vgpu:
    id: int


@attrs.define(eq=False)
class FakeCore:
    """Switches at once (no workload ever runs past a tick) and charges like the scheduler."""

    idle: SchedVgpu = attrs.field(factory=lambda: SchedVgpu(_Vgpu(0), 0))
    current: SchedVgpu | None = None
    next: SchedVgpu | None = None
    busy: set[int] = attrs.field(factory=set)
    owned: dict[int, int] = attrs.field(factory=dict)

    def has_pending(self, v: SchedVgpu) -> bool:
        return v.id in self.busy

    def select(self, v: SchedVgpu, now: int) -> None:
        if v is self.current:
            return
        cur = self.current
        if cur is not None and cur is not self.idle:
            delta = now - cur.sched_in_time
            cur.sched_time += delta
            cur.left_ts -= delta
        v.sched_in_time = now
        self.current = v


def _run(policy: SchedPolicy, weights: list[int], ticks: int,
         busy: set[int] | None = None) -> tuple[FakeCore, list[SchedVgpu]]:
    core = FakeCore()
    policy.init(core)
    vs = [SchedVgpu(_Vgpu(i + 1), w) for i, w in enumerate(weights)]
    for v in vs:
        policy.init_vgpu(v)
        policy.start_schedule(v)
    core.busy = {v.id for v in vs} if busy is None else busy
    for t in range(ticks):
        now = t * TIME_SLICE_NS
        owner = core.current
        if owner is not None:
            core.owned[owner.id] = core.owned.get(owner.id, 0) + (1 if t else 0)
        policy.schedule(now, True)
    return core, vs


def test_time_based_policy_shares_follow_weights() -> None:
    core, vs = _run(TimeBasedPolicy(), [2, 4, 8], 1000)
    total = sum(core.owned.get(v.id, 0) for v in vs)
    shares = [core.owned.get(v.id, 0) / total for v in vs]
    assert shares == pytest.approx([2 / 14, 4 / 14, 8 / 14], abs=0.01)


def test_time_based_policy_round_robins_equal_weights_by_lru() -> None:
    policy = TimeBasedPolicy()
    core, _ = _run(policy, [4, 4, 4], 0)
    seq = []
    for t in range(6):
        policy.schedule(t * TIME_SLICE_NS, True)
        assert core.current is not None
        seq.append(core.current.id)
    assert seq == [1, 2, 3, 1, 2, 3]


def test_a_vgpu_without_time_left_waits_and_the_idle_vgpu_runs() -> None:
    policy = TimeBasedPolicy(balance_period_ns=10 * TIME_SLICE_NS)
    core, _ = _run(policy, [4, 4], 0, busy={1})
    owners = []
    for t in range(20):
        policy.schedule(t * TIME_SLICE_NS, True)
        assert core.current is not None
        owners.append(core.current.id)
    # half the period is its share: it runs 5 ms, the idle vGPU (0) the other 5
    assert owners == ([1] * 5 + [0] * 5) * 2


def test_debt_carries_over_but_stage_zero_forgets_it() -> None:
    policy = TimeBasedPolicy()
    _, (a, b) = _run(policy, [4, 12], 0)
    policy.balance()  # stage 0
    assert (a.allocated_ts, b.allocated_ts) == (BALANCE_PERIOD_NS // 4, 3 * BALANCE_PERIOD_NS // 4)
    a.left_ts = -30 * TIME_SLICE_NS  # overran by 30 ms: a debt
    b.left_ts = 10 * TIME_SLICE_NS  # 10 ms unused: a credit
    for _ in range(9):  # stages 1..9 carry both over
        policy.balance()
    assert a.left_ts == -30 * TIME_SLICE_NS + 9 * a.allocated_ts
    assert b.left_ts == 10 * TIME_SLICE_NS + 9 * b.allocated_ts
    policy.balance()  # stage 0 again: forgotten
    assert (a.left_ts, b.left_ts) == (a.allocated_ts, b.allocated_ts)


def test_only_vgpus_with_work_are_chosen() -> None:
    core, _vs = _run(TimeBasedPolicy(), [2, 16], 50, busy={1})
    assert core.owned.get(2, 0) == 0 and core.owned.get(1, 0) > 0


def test_stopped_vgpus_leave_the_run_queue() -> None:
    policy = TimeBasedPolicy()
    _core, vs = _run(policy, [4, 4], 5)
    policy.stop_schedule(vs[0])
    assert vs[0] not in policy.runq and not vs[0].active
    policy.clean_vgpu(vs[1])
    assert not policy.runq


def test_priority_policy_runs_the_heaviest_busy_vgpu() -> None:
    core, _ = _run(PriorityPolicy(), [2, 8, 8], 40)
    assert core.owned.get(1, 0) == 0  # starved while heavier vGPUs have work
    assert abs(core.owned.get(2, 0) - core.owned.get(3, 0)) <= 1  # LRU among equals
    alone, _ = _run(PriorityPolicy(), [2, 8], 5, busy={1})
    assert alone.current is not None and alone.current.id == 1


def test_policies_by_name() -> None:
    assert isinstance(make_policy("time-based"), TimeBasedPolicy)
    assert isinstance(make_policy("priority"), PriorityPolicy)
    with pytest.raises(ValueError, match="unknown scheduling policy"):
        make_policy("fifo")
