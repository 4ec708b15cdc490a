"""The prepare pipeline: what happens to a workload between "taken" and "engine executes".

When the scheduler dispatches a workload (its vGPU owns the engines, its
shadow PPGTT is pinned and synced), the workload goes through the stages of
the host's :class:`WorkloadPipeline` in order, under the vGPU's lock:

1. the **audit** stages (:attr:`WorkloadPipeline.audit`): whatever must
   inspect or rewrite the workload before any of it runs. This is where
   the command scanner (issue 11) plugs in: it walks the shadow ring and
   the batch buffers it starts through :attr:`PrepareJob.ggtt` and
   :attr:`PrepareJob.ppgtt` (the very address spaces the engine will use),
   copies batch buffers into host memory with :meth:`PrepareJob.shadow_block`
   (mapped for command fetch only), patches the shadow ring to start the
   copies, and rejects a workload by raising
   :class:`~gvt_core.errors.WorkloadRejectedError`;
2. the **shadow context** stage (always last): the shadow register-state
   page the engine loads, with the guest's context control and timestamp,
   the shadow ring, and the shadow PPGTT's roots.

A stage that raises rejects the workload: nothing of it runs, the guest's
engine hangs (no completion), and with ``unhealthy`` the vGPU enters
failsafe. Every stage that prepared a workload is told when the workload
is over (completed, failed, or dropped by a reset or a destroy) through
:meth:`PrepareStage.finish`, so it can free what it allocated.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from gvt_core.device.execution import workload as workload_limits
from gvt_core.errors import GvtError, WorkloadRejectedError
from gvt_core.hw import regs
from gvt_core.hw.engine import context as lrc
from gvt_core.hw.engine.engine import Engine
from gvt_core.hw.engine.memory import GgttSpace, PpgttSpace
from gvt_core.hw.gm_heap import GmBlock, HostGm
from gvt_core.hw.sysmem import PAGE_SIZE

if TYPE_CHECKING:
    from gvt_core.device.execution.workload import Workload

_U32 = struct.Struct("<I")


@attrs.define(eq=False)
class PrepareJob:
    """What a stage sees of the workload it prepares."""

    workload: Workload
    vgpu: Any
    engine: Engine
    #: the GGTT as the workload's context may use it (the vGPU's ranges; fetch-only
    #: windows for the shadow ring and for blocks from :meth:`shadow_block`).
    ggtt: GgttSpace
    #: the workload's shadow PPGTT, as the engine will walk it.
    ppgtt: PpgttSpace
    host_gm: HostGm
    #: accounting tag of the vGPU's host graphics memory.
    owner: str
    #: host GM blocks stages allocated for this workload (freed at the end).
    blocks: list[GmBlock] = attrs.field(factory=list)

    @property
    def shadow_ring(self) -> GmBlock:
        """The host copy of the ring section the engine executes (same offsets as the guest's)."""
        return self.workload.shadow_ring

    def shadow_block(self, npages: int) -> GmBlock:
        """Host GM for a shadow batch buffer: backed, mapped for command fetch only
        (no command of the workload can write it), freed with the workload; counted
        against the vGPU's shadow budget (``MAX_SHADOW_GM_PER_VGPU``)."""
        size = npages * PAGE_SIZE
        limit = workload_limits.MAX_SHADOW_GM_PER_VGPU
        if self.host_gm.in_use(self.owner) + size > limit:
            raise WorkloadRejectedError(
                f"shadow copies would hold more than {limit} bytes "
                "of host graphics memory")
        try:
            block = self.host_gm.alloc(npages, owner=self.owner)
        except GvtError as exc:
            raise WorkloadRejectedError(f"no host graphics memory for a shadow copy: {exc}") \
                from None
        self.blocks.append(block)
        self.ggtt.add_fetch_window(block.gm, block.end)
        return block


class PrepareStage(Protocol):
    """One stage of the prepare pipeline."""

    #: shown in rejection reasons and traces.
    name: str

    def prepare(self, job: PrepareJob) -> None:
        """Inspect or rewrite the workload; raise WorkloadRejectedError to refuse it."""
        ...

    def finish(self, workload: Workload) -> None:
        """The workload is over: release what :meth:`prepare` kept for it."""
        ...


class ShadowContextStage:
    """``populate_shadow_context``: the register-state page the engine loads.

    The guest's page is copied (its contents beyond the ring registers are the
    guest's business), then the host takes over what the hardware must see:
    CONTEXT_CONTROL with the masked-write enables set, the ring head and tail
    of the workload, the shadow ring's address, and the shadow PPGTT's roots
    in the PDP slots. The per-context workaround batches a guest names
    (BB_PER_CTX_PTR, INDIRECT_CTX) are not executed by the software engines.
    """

    name = "shadow-context"

    def prepare(self, job: PrepareJob) -> None:
        w = job.workload
        vgpu = job.vgpu
        try:
            guest = vgpu.mpt.read_gpa(vgpu.handle, w.ring_context_gpa, PAGE_SIZE)
        except GvtError as exc:
            raise WorkloadRejectedError(f"guest context page is not readable: {exc}",
                                        unhealthy=True) from None
        frame, page = vgpu.gvt.gpu.pages.alloc(owner=job.owner)
        w.shadow_state = (frame, page)
        page[:] = guest

        def put(index: int, value: int) -> None:
            _U32.pack_into(page, 4 * (index + 1), value & 0xFFFF_FFFF)

        put(lrc.CTX_CONTEXT_CONTROL, w.ctx_ctrl | (0xFFFF << regs.MASKED_WRITE_SHIFT))
        put(lrc.CTX_RING_HEAD, w.rb_head)
        put(lrc.CTX_RING_TAIL, w.rb_tail)
        put(lrc.CTX_RING_BUFFER_START, w.shadow_ring.gm)
        put(lrc.CTX_RING_BUFFER_CONTROL, w.rb_ctl)
        roots = w.mm.shadow_roots
        for i, (lo, hi) in enumerate(lrc.CTX_PDP):
            put(lo, roots[i] & 0xFFFF_FFFF)
            put(hi, roots[i] >> 32)

    def finish(self, workload: Workload) -> None:
        """The shadow page is freed with the workload (:func:`workload.release`)."""


@attrs.define(eq=False)
class WorkloadPipeline:
    """The stages of one host, in order: :attr:`audit` then the shadow context."""

    #: audit stages (the command scanner's place); run in list order.
    audit: list[PrepareStage] = attrs.field(factory=list)
    shadow_context: PrepareStage = attrs.field(factory=ShadowContextStage)

    @property
    def stages(self) -> list[PrepareStage]:
        return [*self.audit, self.shadow_context]

    def prepare(self, job: PrepareJob) -> None:
        """Run every stage; a stage that prepared the workload is recorded in
        ``workload.prepared_by`` (its ``finish`` runs when the workload ends)."""
        for stage in self.stages:
            stage.prepare(job)
            job.workload.prepared_by.append(stage)
