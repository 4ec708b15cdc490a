"""The scanner in the prepare pipeline: every workload, every engine, before anything runs.

:class:`CommandScanStage` is the first audit stage of the host's
:class:`~gvt_core.device.execution.stages.WorkloadPipeline`. For each
dispatched workload it

1. reads the ring section back from the workload's shadow ring (the copy
   taken at the ELSP write, never the guest's ring),
2. scans it with the vGPU's :class:`~.scan.CommandScanner`, reading batch
   buffers through the address spaces the engine will use
   (:class:`SpaceReader`: the vGPU's GGTT partition and the workload's shadow
   PPGTT) and copying each into a block of the host's own graphics memory
   from :meth:`PrepareJob.shadow_block <gvt_core.device.execution.stages.PrepareJob.shadow_block>`
   (:class:`GmShadows`: fetch-only, counted against the vGPU's shadow budget),
3. writes the patched, relocated ring back into the shadow ring, and marks the
   job scanned; the engine then fetches commands from the shadows only.

A rejection raises :class:`~gvt_core.errors.WorkloadRejectedError` with upstream's
error behaviour (facts 7.5): the workload fails, its engine hangs for the vGPU,
and a parser error upstream calls unhealthy (-EBADRQC, -EFAULT) puts the vGPU
in failsafe. Counted per reason by the scanner, logged once per reason.

When the workload completes, the MI_DISPLAY_FLIPs it carried (NOOP'd in the
shadow, never executed by an engine) go to the vGPU's ``execution.flip_sink``,
its display's flip path (``VirtualDisplay.display_flip``: plane registers
updated, a synchronous flip latched at the next vblank, flip-done events), and
MOCS values it wrote are mirrored into its registers; whatever way it ends,
its shadows are freed. A workload that fails or is dropped flips nothing.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import numpy as np

from gvt_core.device.execution.scanner.audit import (
    AuditContext,
    DisplayFlip,
    DisplayPlane,
    GmPartition,
)
from gvt_core.device.execution.scanner.rejection import ScanRejection
from gvt_core.device.execution.scanner.scan import ScanResult
from gvt_core.device.execution.scanner.shadow import AddressSpace
from gvt_core.device.execution.scanner.walker import RingSection
from gvt_core.device.execution.workload import section_pages
from gvt_core.device.registers.handlers import FORCE_NONPRIV_WHITELIST
from gvt_core.device.registers.table import F_CMD_ACCESS, REGISTER_TABLE
from gvt_core.errors import GmaFault, ShadowAllocError, WorkloadRejectedError
from gvt_core.hw import regs
from gvt_core.hw.engine import context as lrc
from gvt_core.hw.engine.memory import Access, Fault
from gvt_core.hw.engine.memory import AddressSpace as EngineSpace
from gvt_core.hw.gm_heap import GmBlock
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE

if TYPE_CHECKING:
    from gvt_core.device.execution.stages import PrepareJob
    from gvt_core.device.execution.workload import Workload

#: register dwords commands may read or write: the table's F_CMD_ACCESS records
#: (upstream's whitelist), every dword of each.
CMD_ACCESS_REGISTERS: frozenset[int] = frozenset(
    d for info in REGISTER_TABLE if info.flags & F_CMD_ACCESS for d in info.dwords
)
#: upstream's ``vgpu_is_vm_unhealthy``: these parser errors put the vGPU in failsafe.
UNHEALTHY_ERRNOS = frozenset({errno.EBADRQC, errno.EFAULT})
_BASES = {regs.ENGINE_IDS[n]: base for n, base in regs.ENGINE_BASES.items()}


def _force_nonpriv_allowed(value: int) -> bool:
    return value & regs.RING_FORCE_TO_NONPRIV_ADDRESS_MASK in FORCE_NONPRIV_WHITELIST


def _owns_plane(pipe: int, plane: DisplayPlane) -> bool:
    """A vGPU's display is its own: every pipe of BDW and its primary and sprite."""
    return 0 <= pipe < regs.NUM_PIPES


def _owns_no_plane(pipe: int, plane: DisplayPlane) -> bool:
    """A vGPU without a display (no flip sink) owns no plane to flip or wait on."""
    return False


def audit_context(vgpu: Any, engine: int) -> AuditContext:
    """What the audits of a workload of ``vgpu`` on ``engine`` check against."""
    res = vgpu.resources
    hws = vgpu.mmio.get32(_BASES[engine] + regs.RING_HWS_PGA) & regs.RING_ADDR_MASK
    return AuditContext(
        engine=engine,
        partition=GmPartition.of((res.low_gm_base, res.low_gm_size),
                                 (res.high_gm_base, res.high_gm_size)),
        register_allowed=CMD_ACCESS_REGISTERS.__contains__,
        owns_plane=_owns_plane if vgpu.execution.flip_sink is not None else _owns_no_plane,
        force_nonpriv_allowed=_force_nonpriv_allowed,
        hws_pga=hws,
    )


@attrs.define(eq=False)
class SpaceReader:
    """The scanner's :class:`~.walker.CommandReader` over the engine's own address spaces.

    GGTT reads go through the job's GGTT space (for a vGPU: its partition only),
    PPGTT reads through the workload's (shadow) PPGTT; anything those refuse
    (unmapped, scratch, outside the partition) is a :class:`GmaFault`. Reads
    return copies.
    """

    ggtt: EngineSpace
    ppgtt: EngineSpace

    def read(self, space: AddressSpace, gma: int, nbytes: int) -> np.ndarray:
        sp = self.ggtt if space is AddressSpace.GGTT else self.ppgtt
        off = gma & PAGE_MASK
        if nbytes <= 0 or nbytes % 4 or gma % 4 or off + nbytes > PAGE_SIZE:
            raise ValueError(f"a command read is dword-aligned within one page, not "
                             f"{nbytes} bytes at {gma:#x}")
        try:
            page = sp.page(gma >> PAGE_SHIFT, Access.READ)
        except Fault as exc:
            raise GmaFault(space.value, gma, nbytes, exc.detail or exc.kind.value) from None
        return np.frombuffer(page, dtype="<u4", count=nbytes // 4, offset=off).copy()


class ShadowSource(Protocol):
    """Where shadow blocks come from: :class:`~gvt_core.device.execution.stages.PrepareJob`
    (fetch-only host GM blocks, counted against the vGPU's budget)."""

    def shadow_block(self, npages: int) -> GmBlock: ...

    def free_block(self, block: GmBlock) -> None: ...

    def shadow_budget_left(self) -> int: ...


@attrs.define(eq=False)
class GmShadow:
    """One shadow batch in a block of host graphics memory (a :class:`~.shadow.HostBuffer`)."""

    job: ShadowSource
    block: GmBlock

    @property
    def gma(self) -> int:
        return self.block.gm

    @property
    def nbytes(self) -> int:
        return self.block.size

    def write(self, offset: int, dwords: np.ndarray) -> None:
        self.block.write(offset, np.asarray(dwords, dtype="<u4").tobytes())

    def read(self, offset: int, nbytes: int) -> np.ndarray:
        return np.frombuffer(self.block.read(offset, nbytes), dtype="<u4").copy()

    def free(self) -> None:
        self.job.free_block(self.block)


@attrs.define(eq=False)
class GmShadows:
    """The scanner's :class:`~.shadow.ShadowAllocator`: fetch-only host GM blocks from a
    :class:`ShadowSource` (the workload's job)."""

    job: ShadowSource

    def allocate(self, nbytes: int) -> GmShadow:
        npages = max(1, -(-nbytes // PAGE_SIZE))
        try:
            block = self.job.shadow_block(npages)
        except WorkloadRejectedError:
            raise ShadowAllocError(nbytes, self.job.shadow_budget_left()) from None
        return GmShadow(self.job, block)


def ring_section(w: Workload) -> RingSection:
    """The workload's ring section ``[head, tail)`` as the shadow ring holds it."""
    size = lrc.ring_size(w.rb_ctl)
    data = b"".join(w.shadow_ring.read(off, n) for off, n in section_pages(w.rb_head,
                                                                             w.rb_tail, size))
    return RingSection(np.frombuffer(data, dtype="<u4").copy(), w.rb_start, size, w.rb_head)


def write_ring_section(w: Workload, dwords: np.ndarray) -> None:
    """Put the scanned (patched, relocated) ring section back into the shadow ring."""
    raw = np.asarray(dwords, dtype="<u4").tobytes()
    pos = 0
    for off, n in section_pages(w.rb_head, w.rb_tail, lrc.ring_size(w.rb_ctl)):
        w.shadow_ring.write(off, raw[pos:pos + n])
        pos += n


class CommandScanStage:
    """The prepare stage that scans (see the module docstring)."""

    name = "command-scanner"

    def prepare(self, job: PrepareJob) -> None:
        w = job.workload
        vgpu = job.vgpu
        out = vgpu.execution.scanner.scan(ring_section(w), audit_context(vgpu, w.engine),
                                          SpaceReader(job.ggtt, job.ppgtt), GmShadows(job))
        if isinstance(out, ScanRejection):
            raise WorkloadRejectedError(f"{out.reason.value}: {out}",
                                        unhealthy=out.reason.errno in UNHEALTHY_ERRNOS)
        write_ring_section(w, out.ring)
        job.scan = out
        job.unprivileged_batches = frozenset(
            s.host_gma for s in out.shadows if not s.privileged)
        job.scanned = True

    def finish(self, workload: Workload) -> None:
        job = workload.job
        out: ScanResult | None = job.scan if job is not None else None
        if out is None:
            return
        job.scan = None
        vgpu = workload.vgpu
        if workload.completed and not vgpu.destroyed:
            sink: Callable[[DisplayFlip], None] | None = vgpu.execution.flip_sink
            if out.flips:
                # the audit accepts flips only for a vGPU with a sink (audit_context)
                assert sink is not None, "MI_DISPLAY_FLIP accepted for a vGPU with no display"
                for flip in out.flips:
                    sink(flip)
            for rw in out.register_writes:
                vgpu.mmio.set32(rw.offset, rw.value)
        out.release()
