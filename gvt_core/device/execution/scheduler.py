"""The host's GPU scheduler: one vGPU owns the engines at a time (facts 7.5, 7.6).

One thread per host, ``gvt-gpu``, does what upstream's scheduler timer,
service thread and per-engine workload threads do together. It loops:

1. under the scheduler lock: run the policy at each 1 ms tick of the host
   clock (and after each submission), switch the owner when none of the
   current owner's workloads is running, and plan the next slice: for each
   engine the workload it is running, or the next queued workload of the
   owner (none while a switch is pending);
2. under the owner vGPU's lock: dispatch new workloads (pin and sync the
   shadow PPGTT, the prepare pipeline, execlist schedule-in, MMIO context
   switch, context load), run each engine for one slice (500 us of GPU
   time, cut at the next tick), and complete what finished (context write
   back, pending interrupts, execlist schedule-out with CSB and
   context-switch MSI) or failed (fault, watchdog);
3. under the scheduler lock again: move the simulated clock to the end of
   the slice.

Engines run in parallel in GPU time: each starts the slice at the same time
and keeps its own time within it. A workload that has run for more than
:attr:`GpuScheduler.watchdog_ns` of GPU time (a batch that jumps to itself
forever) is preempted and its engine reset for that vGPU only.

Locks: a vGPU lock before the scheduler lock, never the other way; the GPU
thread holds no lock while it waits, and no thread holding a vGPU lock ever
waits for the GPU thread, so destroying a vGPU (under its lock) cannot
deadlock with it. After :meth:`GpuScheduler.remove_vgpu` the thread can at
most find the vGPU dead once it gets its lock, and then leaves it alone.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs

from gvt_core.device.execution.execlist import CONTEXT_SWITCH_EVENT
from gvt_core.device.execution.mmio_context import EngineOwnership
from gvt_core.device.execution.policy import TIME_SLICE_NS, SchedPolicy, SchedVgpu
from gvt_core.device.execution.stages import PrepareJob, WorkloadPipeline
from gvt_core.device.execution.submission import ENGINE_NAMES, ENGINES
from gvt_core.device.execution.workload import Workload, release, shadow_owner, write_back
from gvt_core.device.interrupt import IrqEvent
from gvt_core.errors import GvtError, VgpuStateError, WorkloadRejectedError
from gvt_core.hw import regs
from gvt_core.hw.clock import HostClock
from gvt_core.hw.engine.cost import TIMESTAMP_NS_PER_TICK
from gvt_core.hw.engine.memory import GgttSpace
from gvt_core.hw.engine.state import EngineEvent, RunState

if TYPE_CHECKING:
    from gvt_core.device.execution.submission import VgpuSubmission

log = logging.getLogger(__name__)

#: GPU time an engine runs before the scheduler looks again (cut at the next tick).
SLICE_NS = 500_000
#: GPU time one workload may take before the watchdog resets its engine.
DEFAULT_WATCHDOG_NS = 50_000_000

#: interrupt events of what a context raised while running, per engine.
_EVENTS: dict[int, dict[EngineEvent, IrqEvent]] = {
    regs.ENGINE_RCS: {EngineEvent.USER_INTERRUPT: IrqEvent.RCS_MI_USER_INTERRUPT,
                      EngineEvent.PIPE_CONTROL_NOTIFY: IrqEvent.RCS_PIPE_CONTROL},
    regs.ENGINE_BCS: {EngineEvent.USER_INTERRUPT: IrqEvent.BCS_MI_USER_INTERRUPT,
                      EngineEvent.FLUSH_DW_NOTIFY: IrqEvent.BCS_MI_FLUSH_DW},
    regs.ENGINE_VCS: {EngineEvent.USER_INTERRUPT: IrqEvent.VCS_MI_USER_INTERRUPT,
                      EngineEvent.FLUSH_DW_NOTIFY: IrqEvent.VCS_MI_FLUSH_DW},
    regs.ENGINE_VCS2: {EngineEvent.USER_INTERRUPT: IrqEvent.VCS2_MI_USER_INTERRUPT,
                       EngineEvent.FLUSH_DW_NOTIFY: IrqEvent.VCS2_MI_FLUSH_DW},
    regs.ENGINE_VECS: {EngineEvent.USER_INTERRUPT: IrqEvent.VECS_MI_USER_INTERRUPT,
                       EngineEvent.FLUSH_DW_NOTIFY: IrqEvent.VECS_MI_FLUSH_DW},
}
assert set(_EVENTS) == set(CONTEXT_SWITCH_EVENT)


@attrs.define(slots=True)
class SchedulerStats:
    ticks: int = 0
    #: owner changes (including to and from the idle vGPU).
    switches: int = 0
    slices: int = 0
    #: GPU time some engine was busy / the policy held every engine idle with work queued.
    busy_ns: int = 0
    idle_ns: int = 0
    #: host exceptions caught in the GPU thread (a bug if ever > 0; the workload fails).
    internal_errors: int = 0
    #: exceptions raised by observers of the execution events (logged, ignored).
    observer_errors: int = 0


@attrs.define(eq=False)
class _Plan:
    now: int
    end: int
    work: dict[int, Workload]


class GpuScheduler:
    """The scheduler of one host (see the module docstring)."""

    def __init__(self, gvt: Any, clock: HostClock, policy: SchedPolicy, *,
                 watchdog_ns: int = DEFAULT_WATCHDOG_NS, slice_ns: int = SLICE_NS,
                 tick_ns: int = TIME_SLICE_NS) -> None:
        self.gvt = gvt
        self.gpu = gvt.gpu
        self.clock = clock
        self.watchdog_ns = watchdog_ns
        self.slice_ns = slice_ns
        self.tick_ns = tick_ns
        self.pipeline = WorkloadPipeline()
        self.lock = threading.Condition(threading.Lock())
        self.idle = SchedVgpu(vgpu=gvt.idle_vgpu, weight=0)
        self.current: SchedVgpu | None = None
        self.next: SchedVgpu | None = None
        self.need_reschedule = False
        #: the workload each engine is running (dispatched, not complete).
        self.running: dict[int, Workload] = {}
        self.ownership = {e: EngineOwnership(self.gpu.engines[e]) for e in ENGINES}
        self.subs: dict[int, VgpuSubmission] = {}
        self.stats = SchedulerStats()
        self.last_error = ""
        self._next_tick = 0
        self._kick = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self.policy = policy
        policy.init(self)

    def emit(self, hook: str, **kwargs: Any) -> None:
        """Call an execution event hook; an observer that raises is logged and counted,
        never allowed to break the GPU thread or a guest's trap."""
        try:
            getattr(self.gvt.mpt.events, hook)(**kwargs)
        except Exception:
            self.stats.observer_errors += 1
            log.exception("an observer of %s raised", hook)

    # --- the GPU clock as the CPU reads it -------------------------------------------------
    def timestamp_ticks(self) -> int:
        """RING_TIMESTAMP as a CPU reads it: the host clock in 80 ns ticks, the counter
        the engines' PIPE_CONTROL and MI_STORE_REGISTER_MEM timestamps come from, so a
        guest comparing the two sees one GPU clock (on the simulated clock it moves
        only when the clock does)."""
        return self.clock.now() // TIMESTAMP_NS_PER_TICK

    # --- the policy's view (SchedulerCore) ---------------------------------------------
    def has_pending(self, v: SchedVgpu) -> bool:
        sub = self.subs.get(v.id) if v is not self.idle else None
        if sub is None:
            return False
        return any(sub.queues[e] for e in ENGINES) or any(
            w.vgpu is sub.vgpu for w in self.running.values())

    def select(self, v: SchedVgpu, now: int) -> None:
        self.next = v
        self._try_switch(now)

    def _try_switch(self, now: int) -> None:
        """``try_to_schedule_next_vgpu`` (scheduler lock held)."""
        nxt = self.next
        if nxt is None:
            return
        if nxt is self.current:
            self.next = None
            return
        self.need_reschedule = True
        if self.running:
            return
        cur = self.current
        if cur is not None and cur is not self.idle:
            delta = now - cur.sched_in_time
            cur.sched_time += delta
            cur.left_ts -= delta
        nxt.sched_in_time = now
        self.current, self.next, self.need_reschedule = nxt, None, False
        self.stats.switches += 1
        self.emit("gvt_vgpu_scheduled",
                  prev_id=cur.id if cur is not None else 0, next_id=nxt.id, time_ns=now)
        self.lock.notify_all()

    # --- vGPUs ----------------------------------------------------------------------------
    def add_vgpu(self, sub: VgpuSubmission) -> SchedVgpu:
        v = SchedVgpu(vgpu=sub.vgpu, weight=sub.vgpu.type.weight)
        with self.lock:
            self.subs[v.id] = sub
            self.policy.init_vgpu(v)
        return v

    def start_schedule(self, sub: VgpuSubmission) -> None:
        """The vGPU was activated: it joins the run queue (the GPU thread starts)."""
        with self.lock:
            self.policy.start_schedule(sub.sched)
            self._kick = True
            self.lock.notify_all()
        self._ensure_thread()

    def stop_schedule(self, sub: VgpuSubmission) -> None:
        """``intel_vgpu_stop_schedule``: out of the run queue; its running workloads
        finish, nothing new of it is dispatched until it is activated again."""
        with self.lock:
            v = sub.sched
            self.policy.stop_schedule(v)
            if self.next is v:
                self.next = None
            if self.current is v:
                self.need_reschedule = True
                self.current = None
            self._kick = True
            self.lock.notify_all()

    def remove_vgpu(self, sub: VgpuSubmission) -> None:
        """The vGPU is destroyed (caller holds its lock): drop all its work, forget it."""
        self.clean_workloads(sub, regs.ALL_ENGINES_MASK)
        with self.lock:
            v = sub.sched
            self.policy.clean_vgpu(v)
            self.subs.pop(v.id, None)
            if self.next is v:
                self.next = None
            if self.current is v:
                self.current = None
                self.need_reschedule = False
            for own in self.ownership.values():
                own.forget(sub.vgpu)
            self._kick = True
            self.lock.notify_all()

    # --- queues -----------------------------------------------------------------------------
    def queued(self, sub: VgpuSubmission, engine: int) -> tuple[int, Workload | None]:
        """(workloads queued or running on ``engine``, the last of them) for ``sub``."""
        with self.lock:
            q = sub.queues[engine]
            run = self.running.get(engine)
            mine = run if run is not None and run.vgpu is sub.vgpu else None
            last = q[-1] if q else mine
            return len(q) + (1 if mine is not None else 0), last

    def queue(self, sub: VgpuSubmission, engine: int, workloads: list[Workload]) -> None:
        with self.lock:
            sub.queues[engine].extend(workloads)
            self._kick = True
            self.lock.notify_all()
        self._ensure_thread()

    def clean_workloads(self, sub: VgpuSubmission, engine_mask: int) -> None:
        """Drop ``sub``'s queued and running workloads of ``engine_mask`` (caller holds
        the vGPU lock): they never act again, their resources go back."""
        dropped: list[Workload] = []
        with self.lock:
            for e in ENGINES:
                if not engine_mask & (1 << e):
                    continue
                dropped.extend(sub.queues[e])
                sub.queues[e].clear()
                run = self.running.get(e)
                if run is not None and run.vgpu is sub.vgpu:
                    dropped.append(self.running.pop(e))
            if self.need_reschedule:
                self._try_switch(self.clock.now())
            self.lock.notify_all()
        for w in dropped:
            w.cancelled = True
            release(w)
            sub.stats.workloads_dropped += 1
            self._completed_event(w, "dropped")

    # --- the GPU thread -------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self.lock:
            if self._thread is not None or self._stop:
                return
            self._thread = threading.Thread(target=self._main, name=f"gvt-gpu-{self.gvt.name}",
                                            daemon=True)
            self._thread.start()

    def shutdown(self) -> None:
        """Stop the GPU thread (host close; every vGPU is gone already)."""
        with self.lock:
            self._stop = True
            self.lock.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.policy.clean()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def kick(self) -> None:
        with self.lock:
            self._kick = True
            self.lock.notify_all()

    def _main(self) -> None:
        while True:
            try:
                with self.lock:
                    plan = self._plan()
            except Exception as exc:  # a host bug in a policy: count it, keep serving
                self.stats.internal_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("GPU thread: unexpected error while scheduling")
                time.sleep(0.01)
                continue
            if plan is None:
                return
            try:
                self._execute(plan)
            except Exception as exc:  # a host bug: keep the other vGPUs running
                self.stats.internal_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("GPU thread: unexpected error")
                self._fail_plan(plan, f"internal error: {self.last_error}")
            # host timers the slice's GPU time passed (vblanks on the simulated
            # clock) run here, with no lock held: each takes its vGPU's lock
            self.clock.run_due()
            time.sleep(0)  # let guest threads woken by MSIs take the GIL

    def _pending_anywhere(self) -> bool:
        if self.running:
            return True
        for sub in self.subs.values():
            if sub.sched.active and any(sub.queues[e] for e in ENGINES):
                return True
        return False

    def _plan(self) -> _Plan | None:
        """Scheduler lock held: timer, policy, and the work of the next slice."""
        clock = self.clock
        while True:
            if self._stop:
                return None
            now = clock.now()
            if now >= self._next_tick:
                self._next_tick = now - now % self.tick_ns + self.tick_ns
                self.stats.ticks += 1
                self._kick = False
                self.policy.schedule(now, True)
            elif self._kick:
                self._kick = False
                self.policy.schedule(now, False)
            self._try_switch(now)
            work = self._pick()
            if work:
                return _Plan(now, min(now + self.slice_ns, self._next_tick), work)
            if self._pending_anywhere():
                # work is queued but the policy keeps the engines idle: time passes
                if clock.deterministic:
                    self.stats.idle_ns += self._next_tick - now
                    clock.advance_to(self._next_tick)
                else:
                    self.lock.wait((self._next_tick - now) / 1e9)
                continue
            self.lock.wait()

    def _pick(self) -> dict[int, Workload]:
        work = dict(self.running)
        cur = self.current
        if self.need_reschedule or cur is None or cur is self.idle or not cur.active:
            return work
        sub = self.subs.get(cur.id)
        if sub is None:
            return work
        for e in ENGINES:
            if e not in work and e not in sub.hung and sub.queues[e]:
                w = sub.queues[e].popleft()
                self.running[e] = w
                work[e] = w
        return work

    def _next_for(self, sub: VgpuSubmission, engine: int) -> Workload | None:
        """The next workload ``engine`` runs within this slice (scheduler lock taken)."""
        with self.lock:
            if engine in self.running:
                return None
            cur = self.current
            if (self.need_reschedule or cur is not sub.sched or not cur.active
                    or engine in sub.hung or not sub.queues[engine]):
                return None
            w = sub.queues[engine].popleft()
            self.running[engine] = w
            return w

    def _execute(self, plan: _Plan) -> None:
        vgpus = {id(w.vgpu): w.vgpu for w in plan.work.values()}
        vgpu = next(iter(vgpus.values()))
        busy = False
        ends = [plan.now]
        with vgpu.lock:
            sub = vgpu.execution
            if not sub.dead:
                for engine, w in sorted(plan.work.items()):
                    if w.vgpu is not vgpu:
                        continue  # (never: one owner at a time) left for the next slice
                    t, more = self._run_engine(sub, engine, w, plan.now, plan.end)
                    ends.append(t)
                    busy = busy or more
        with self.lock:
            # a command longer than the slice (a big blit) ends it late: the GPU is there
            end = max(max(ends), plan.end) if busy else max(ends)
            self.stats.slices += 1
            self.stats.busy_ns += max(0, end - plan.now)
            self.clock.advance_to(end)

    def _run_engine(self, sub: VgpuSubmission, engine: int, w: Workload | None,
                    now: int, end: int) -> tuple[int, bool]:
        """Run ``engine`` from ``now`` to ``end`` (vGPU lock held); (time reached,
        whether work is left at the end)."""
        eng = self.gpu.engines[engine]
        t = now
        while w is not None:
            if w.cancelled:
                return t, False
            if not w.started and not self._dispatch(sub, w, t):
                w = self._next_for(sub, engine)
                continue
            ctx = w.exec
            assert ctx is not None
            if t >= end:
                return t, True
            ctx.forget_tables()
            before = ctx.cost_ns
            r0 = time.perf_counter_ns()
            state = eng.run(ctx, end - t, t)
            charged = self.clock.charge(ctx.cost_ns - before, time.perf_counter_ns() - r0)
            w.gpu_time_ns += charged
            sub.stats.gpu_time_ns += charged
            t += charged
            if state is RunState.DONE:
                self._complete(sub, w, t)
                w = self._next_for(sub, engine)
                continue
            if state is RunState.FAULT:
                assert ctx.fault is not None
                self._fail(sub, w, t, f"engine fault: {ctx.fault}")
                return t, False
            if w.gpu_time_ns > self.watchdog_ns:
                sub.stats.watchdog_resets += 1
                self._fail(sub, w, t, f"watchdog: workload ran {w.gpu_time_ns} ns of GPU "
                                      f"time (budget {self.watchdog_ns} ns); engine reset")
                return t, False
            return max(t, end), True
        return t, False

    def _dispatch(self, sub: VgpuSubmission, w: Workload, t: int) -> bool:
        """Prepare ``w`` and load it on its engine (vGPU lock held); False if it failed."""
        vgpu = sub.vgpu
        engine = self.gpu.engines[w.engine]
        try:
            try:
                vgpu.ppgtt.pin(w.mm)
            except VgpuStateError as exc:
                raise WorkloadRejectedError(f"shadow PPGTT is gone: {exc}") from None
            w.pinned = True
            vgpu.ppgtt.sync()
            res = vgpu.resources
            ggtt_faults, fault_frames = self._fault_frames(vgpu)
            ggtt = GgttSpace(self.gpu.ggtt, self.gpu.sysmem, ggtt_faults,
                             windows=((res.low_gm_base, res.low_gm_end),
                                      (res.high_gm_base, res.high_gm_end)),
                             fetch_windows=((w.shadow_ring.gm, w.shadow_ring.end),),
                             fetch_from_windows=False)
            job = PrepareJob(w, vgpu, engine, ggtt, self._ppgtt_space(w, fault_frames),
                             self.gpu.host_gm, shadow_owner(vgpu))
            w.job = job
            self.pipeline.prepare(job)
            if not job.scanned:
                raise WorkloadRejectedError("no command scanner in the prepare pipeline: "
                                            "an unscanned workload never runs")
            if w.elsp is not None and not sub.execlists[w.engine].schedule_in(*w.elsp):
                raise WorkloadRejectedError("no available virtual execlist slot")
            self._switch_owner(w.engine, vgpu)
            assert w.shadow_state is not None
            w.exec = engine.load_context(w.shadow_state[1], levels=w.levels, ggtt=ggtt,
                                         pphwsp=w.desc.lrca, fault_frames=fault_frames,
                                         shadow_fetch=True,
                                         unprivileged_batches=job.unprivileged_batches)
        except WorkloadRejectedError as exc:
            self._fail(sub, w, t, exc.reason, unhealthy=exc.unhealthy)
            return False
        w.start_ns = t
        w.exec.cost_ns += engine.cost.context_switch_ns
        if w.exec.fault is not None:
            self._fail(sub, w, t, f"engine fault: {w.exec.fault}")
            return False
        return True

    def _fault_frames(self, vgpu: Any) -> tuple[frozenset[int], frozenset[int]]:
        """Frames the engines treat as unmapped for ``vgpu``: the scratch page its GGTT
        entries fall back to, and the scratch data page of its shadow PPGTTs."""
        return frozenset({self.gpu.scratch_frame}), frozenset({vgpu.ppgtt.scratch.data_frame})

    def _ppgtt_space(self, w: Workload, fault_frames: frozenset[int]) -> Any:
        from gvt_core.hw.engine.memory import PpgttSpace

        roots = w.mm.shadow_roots[: 1 if w.levels == 4 else 4]
        return PpgttSpace(self.gpu.sysmem, w.levels, tuple(roots), fault_frames)

    def _switch_owner(self, engine: int, vgpu: Any) -> None:
        own = self.ownership[engine]
        pre = own.owner
        if pre is None or pre is vgpu:
            own.switch_to(vgpu)
            return
        with pre.lock:  # its virtual registers receive its engine values
            own.switch_to(vgpu)

    def _complete(self, sub: VgpuSubmission, w: Workload, t: int) -> None:
        """``complete_current_workload`` for a context that ran to its tail."""
        vgpu = sub.vgpu
        ctx = w.exec
        assert ctx is not None and w.shadow_state is not None
        self.gpu.engines[w.engine].save_context(ctx, w.shadow_state[1])
        w.end_ns = t
        w.commands = ctx.commands
        w.events = set(ctx.events)
        try:
            write_back(w)
        except GvtError as exc:
            log.info("vGPU %d: context write-back failed: %s", vgpu.id, exc)
        events = _EVENTS[w.engine]
        for ev in sorted(w.events, key=lambda e: e.value):
            irq = events.get(ev)
            if irq is not None:
                vgpu.irq.raise_event(irq)
        with self.lock:
            if self.running.get(w.engine) is w:
                del self.running[w.engine]
            q = sub.queues[w.engine]
            lite = bool(q) and q[0].desc.same_context(w.desc)
        if not lite:
            sub.execlists[w.engine].schedule_out(w.desc)
        w.completed = True
        release(w)
        sub.stats.workloads_completed += 1
        sub.stats.commands += w.commands
        self._completed_event(w, "completed")
        with self.lock:
            if self.need_reschedule:
                self._try_switch(t)

    def _fail(self, sub: VgpuSubmission, w: Workload, t: int, reason: str, *,
              unhealthy: bool = False) -> None:
        """The workload failed: no completion for the guest, its engine hangs."""
        with self.lock:
            if self.running.get(w.engine) is w:
                del self.running[w.engine]
        w.end_ns = t
        if w.exec is not None:
            w.commands = w.exec.commands
        release(w)
        sub.stats.workloads_failed += 1
        sub.stats.commands += w.commands
        self._completed_event(w, "failed", reason)
        sub.fault(w.engine, w.context_id, reason, unhealthy=unhealthy, workload=w.id)

    def _fail_plan(self, plan: _Plan, reason: str) -> None:
        for w in plan.work.values():
            vgpu = w.vgpu
            with vgpu.lock:
                sub = vgpu.execution
                if not (w.cancelled or w.released or sub.dead):
                    self._fail(sub, w, plan.now, reason)

    def _completed_event(self, w: Workload, result: str, reason: str = "") -> None:
        self.emit(
            "gvt_workload_completed",
            vgpu=w.vgpu, engine=ENGINE_NAMES[w.engine], context_id=w.context_id,
            start_ns=w.start_ns, end_ns=w.end_ns, commands=w.commands, result=result,
            reason=reason)

