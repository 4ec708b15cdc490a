"""The submission state of one vGPU: virtual execlists, workload queues, faults, counters.

:meth:`VgpuSubmission.on_elsp` is the ELSP handler's sink (the register
handler collects the four dwords; this takes the submission from there):
it validates the two descriptors as upstream does (element 0 must be
valid; every valid element must have the privilege bit; addressing mode 1
or 3), takes a workload for each valid element (:mod:`.workload`) and
queues them with the host's scheduler. A submission refused for any reason
is a fault of this vGPU's engine: nothing of it is queued, the engine's
queue is dropped, and the engine stays hung (every later ELSP write to it
is dropped, counted) until the guest resets it (GDRST) or the vGPU is
reset, as the guest would see a hung GPU. The guest is never answered with
a host error.

Bounds: at most :data:`MAX_QUEUED_PER_ENGINE` workloads queued or running
per engine (a conforming driver has at most four: two ELSP writes of two
elements; lite restores add a few), at most
:data:`~gvt_core.device.execution.workload.MAX_SHADOW_GM_PER_VGPU` of host
graphics memory in shadow rings, the last :data:`FAULT_LOG_SIZE` faults.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from gvt_core.device.execution.execlist import VirtualExeclist
from gvt_core.device.execution.scanner.audit import DisplayFlip
from gvt_core.device.execution.scanner.scan import CommandScanner
from gvt_core.device.execution.workload import Workload, release, take_workload
from gvt_core.device.registers.handlers import ElspSubmission
from gvt_core.errors import WorkloadRejectedError
from gvt_core.hw import regs
from gvt_core.hw.engine.context import ContextDescriptor

if TYPE_CHECKING:
    from gvt_core.device.execution.policy import SchedVgpu
    from gvt_core.device.execution.scheduler import GpuScheduler

log = logging.getLogger(__name__)

ENGINES = tuple(sorted(regs.ENGINE_IDS.values()))
ENGINE_NAMES = {v: k for k, v in regs.ENGINE_IDS.items()}
#: workloads one engine of one vGPU may have queued or running.
MAX_QUEUED_PER_ENGINE = 16
#: faults kept for inspection (older ones are only counted).
FAULT_LOG_SIZE = 32


@attrs.define(slots=True)
class ExecStats:
    """What one vGPU's submissions did (counters only grow; not reset by a vGPU reset)."""

    elsp_writes: int = 0
    #: ELSP writes dropped: refused submissions, and writes to a hung engine.
    elsp_dropped: int = 0
    workloads_submitted: int = 0
    workloads_completed: int = 0
    #: workloads that faulted, were rejected at dispatch or preempted by the watchdog.
    workloads_failed: int = 0
    #: queued workloads dropped by a fault, a reset or a destroy.
    workloads_dropped: int = 0
    commands: int = 0
    gpu_time_ns: int = 0
    watchdog_resets: int = 0
    engine_resets: int = 0

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


@attrs.frozen
class FaultRecord:
    """One fault of this vGPU: a refused submission or a failed workload."""

    time_ns: int
    engine: str
    context_id: int
    reason: str
    workload: int = 0


class VgpuSubmission:
    """Per-vGPU execution state. Methods run with the vGPU lock held."""

    def __init__(self, vgpu: Any, scheduler: GpuScheduler) -> None:
        self.vgpu = vgpu
        self.scheduler = scheduler
        self.execlists = {e: VirtualExeclist(vgpu, e) for e in ENGINES}
        #: queued (not yet running) workloads per engine; guarded by the scheduler's lock.
        self.queues: dict[int, deque[Workload]] = {e: deque() for e in ENGINES}
        self.hung: set[int] = set()
        self.faults: deque[FaultRecord] = deque(maxlen=FAULT_LOG_SIZE)
        self.fault_reasons: Counter[str] = Counter()
        self.stats = ExecStats()
        self.dead = False
        #: the vGPU's command scanner: its counters are the vGPU's (scanned, rejected ...).
        self.scanner = CommandScanner(f"vGPU {vgpu.id}")
        #: where the MI_DISPLAY_FLIPs the scanner took out of a completed workload go:
        #: the vGPU's display (``vgpu.route_command_flips``). None: no display, and the
        #: scanner rejects flips and display waits (the vGPU owns no plane).
        self.flip_sink: Callable[[DisplayFlip], None] | None = None
        self.sched: SchedVgpu = scheduler.add_vgpu(self)

    # --- ELSP --------------------------------------------------------------------------
    def on_elsp(self, sub: ElspSubmission) -> None:
        """The guest wrote the fourth ELSP dword of ``sub.engine``."""
        self.stats.elsp_writes += 1
        engine = sub.engine
        if self.dead or self.vgpu.failsafe:
            self.stats.elsp_dropped += 1
            return
        if engine in self.hung:
            self.stats.elsp_dropped += 1
            return
        d0, d1 = ContextDescriptor(sub.desc0), ContextDescriptor(sub.desc1)
        base = regs.ENGINE_BASES[ENGINE_NAMES[engine]]
        try:
            if not self.vgpu.mmio.handlers.execlist_enabled(base):
                raise WorkloadRejectedError("ELSP written while the engine is not in execlist mode")
            if not d0.valid:
                raise WorkloadRejectedError("invalid ELSP submission: descriptor 0 is not valid")
            descs = [d for d in (d0, d1) if d.valid]
            for d in descs:
                if not d.privileged:
                    raise WorkloadRejectedError("unexpected GGTT ELSP submission (descriptor "
                                                "without the privilege bit)")
            self._take(engine, descs, (d0, d1 if d1.valid else None))
        except WorkloadRejectedError as exc:
            self.stats.elsp_dropped += 1
            self.fault(engine, d0.context_id, exc.reason, unhealthy=exc.unhealthy)

    def _take(self, engine: int, descs: list[ContextDescriptor],
              pair: tuple[ContextDescriptor, ContextDescriptor | None]) -> None:
        sched = self.scheduler
        queued, prev = sched.queued(self, engine)
        if queued + len(descs) > MAX_QUEUED_PER_ENGINE:
            raise WorkloadRejectedError(
                f"{queued} workloads already queued on the engine (limit "
                f"{MAX_QUEUED_PER_ENGINE}): the guest submits faster than its virtual "
                "execlist slots allow")
        taken: list[Workload] = []
        now = sched.clock.now()
        try:
            for d in descs:
                w = take_workload(self.vgpu, engine, d, taken[-1] if taken else prev, now)
                taken.append(w)
        except BaseException:
            for w in taken:
                release(w)
            raise
        taken[0].elsp = pair
        sched.queue(self, engine, taken)
        self.stats.workloads_submitted += len(taken)
        for w in taken:
            sched.emit("gvt_workload_submitted", vgpu=self.vgpu, engine=ENGINE_NAMES[engine],
                       context_id=w.context_id, time_ns=now)

    # --- faults -------------------------------------------------------------------------
    def fault(self, engine: int, context_id: int, reason: str, *, unhealthy: bool = False,
              workload: int = 0) -> None:
        """A fault of ``engine``: record it, drop the engine's queue, hang the engine."""
        record = FaultRecord(self.scheduler.clock.now(), ENGINE_NAMES[engine], context_id,
                             reason, workload)
        self.faults.append(record)
        self.fault_reasons[reason.split(":")[0]] += 1
        log.info("vGPU %d %s: %s", self.vgpu.id, record.engine, reason)
        self.hung.add(engine)
        self.scheduler.clean_workloads(self, 1 << engine)
        if unhealthy:
            self.vgpu.enter_failsafe(f"guest workload error on {record.engine}: {reason}")

    # --- life cycle ---------------------------------------------------------------------------
    def reset(self, engine_mask: int) -> None:
        """GDRST of ``engine_mask``, a GT reset or a DMLR (facts 7.7): the engines'
        queued and running work is dropped, their execlists start over, hung
        engines run again."""
        self.scheduler.clean_workloads(self, engine_mask)
        for e in ENGINES:
            if engine_mask & (1 << e):
                self.execlists[e].reset()
                if e in self.hung:
                    self.hung.discard(e)
                self.stats.engine_resets += 1

    def activate(self) -> None:
        """The vGPU was activated: it is scheduled from now on."""
        self.scheduler.start_schedule(self)

    def deactivate(self) -> None:
        self.scheduler.stop_schedule(self)

    def on_failsafe(self) -> None:
        """The vGPU entered failsafe: nothing more of it runs until a DMLR."""
        self.scheduler.clean_workloads(self, regs.ALL_ENGINES_MASK)

    def release(self) -> None:
        """vGPU destroy: after this returns, no thread acts for the vGPU."""
        if self.dead:
            return
        self.dead = True
        self.scheduler.remove_vgpu(self)

    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())
