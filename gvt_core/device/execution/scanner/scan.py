"""The scanning stage: from a taken workload to what the engine may execute.

:func:`scan_workload` walks and audits the workload (:mod:`.walker`), gives
every reached batch buffer host memory, applies the audits' patches and the
relocations to the copies, and writes the shadows. All or nothing: on any
rejection no shadow stays allocated and nothing of the workload may run.

:class:`CommandScanner` is one vGPU's stage: it counts what it scanned and
rejected (per reason) and logs the first rejection of each reason once.
"""

from __future__ import annotations

import logging

import attrs
import numpy as np

from gvt_core.device.execution.scanner.audit import (
    AuditContext,
    DisplayFlip,
    DwordPatch,
    RegisterWrite,
    ScanEvent,
)
from gvt_core.device.execution.scanner.rejection import (
    BufferKind,
    RejectReason,
    ScanRejection,
)
from gvt_core.device.execution.scanner.shadow import (
    HostBuffer,
    Relocation,
    ShadowAllocator,
    ShadowBatch,
    relocate,
)
from gvt_core.device.execution.scanner.walker import (
    RING,
    CommandReader,
    RingSection,
    ScanLimits,
    Walk,
    walk,
)
from gvt_core.errors import ShadowAllocError

log = logging.getLogger(__name__)
_BOUNDED = {"bounded": True}

DEFAULT_LIMITS = ScanLimits()


@attrs.define(eq=False)
class ScanResult:
    """An accepted workload, ready for the engine.

    The engine executes :attr:`ring` (the workload's ring section with patches
    applied and every MI_BATCH_BUFFER_START relocated to a shadow in GGTT
    space) and, through those starts, only the shadows' host memory. Call
    :meth:`release` when the workload has completed (or was dropped).
    """

    engine: int
    ring: np.ndarray
    shadows: tuple[ShadowBatch, ...]
    relocations: tuple[Relocation, ...]
    patches: tuple[DwordPatch, ...]
    #: interrupts the workload asks for (MI_USER_INTERRUPT, PIPE_CONTROL / MI_FLUSH_DW notify).
    events: tuple[ScanEvent, ...]
    #: MI_DISPLAY_FLIPs to emulate on the vGPU's plane registers (the commands were NOOP'd).
    flips: tuple[DisplayFlip, ...]
    #: MOCS values written by LRI, to mirror into the vGPU's vregs.
    register_writes: tuple[RegisterWrite, ...]
    commands: int
    #: bytes copied out of guest batch buffers.
    shadow_bytes: int
    released: bool = False

    def shadow_at(self, host_gma: int) -> ShadowBatch | None:
        """The shadow whose host copy starts at ``host_gma`` (what a relocated start names)."""
        for s in self.shadows:
            if s.host is not None and s.host.gma == host_gma:
                return s
        return None

    def release(self) -> None:
        """Free the shadows' host memory (idempotent)."""
        if self.released:
            return
        self.released = True
        for s in self.shadows:
            if s.host is not None:
                s.host.free()
                s.host = None


def _alloc_failure(w: Walk, ring: RingSection, ctx: AuditContext, shadow: ShadowBatch,
                   err: ShadowAllocError) -> ScanRejection:
    start = next(r for r in w.relocations if r.target == shadow.index)
    if start.parent == RING:
        kind, space, gma, level, base = BufferKind.RING, "ggtt", ring.start + ring.head, 0, None
    else:
        parent = w.shadows[start.parent]
        kind, space, gma, level = (BufferKind.BATCH, parent.space.value, parent.guest_gma,
                                   parent.level)
        base = parent.guest_gma
    return ScanRejection(
        RejectReason.SHADOW_ALLOC_FAILED, ctx.engine, str(err), kind, space, gma, level,
        start.offset, ring.gma(start.offset) if base is None else base + 4 * start.offset,
        "MI_BATCH_BUFFER_START", 0, w.commands,
    )


def scan_workload(ring: RingSection, ctx: AuditContext, reader: CommandReader,
                  allocator: ShadowAllocator,
                  limits: ScanLimits = DEFAULT_LIMITS) -> ScanResult | ScanRejection:
    """Scan one workload; the result to execute, or why it must not run."""
    w = walk(ring, ctx, reader, limits)
    if isinstance(w, ScanRejection):
        return w
    hosts: list[HostBuffer] = []
    for shadow in w.shadows:
        try:
            host = allocator.allocate(max(shadow.nbytes, 4))
        except ShadowAllocError as err:
            for h in hosts:
                h.free()
            return _alloc_failure(w, ring, ctx, shadow, err)
        hosts.append(host)
        shadow.host = host
    buffers = [s.dwords for s in w.shadows]
    for p in w.findings.patches:
        (w.ring if p.buffer == RING else buffers[p.buffer])[p.offset] = p.value
    for r in w.relocations:
        relocate(w.ring if r.parent == RING else buffers[r.parent], r.offset,
                 w.shadows[r.target].host_gma)
    for shadow, host in zip(w.shadows, hosts, strict=True):
        if shadow.dwords.size:
            host.write(0, shadow.dwords)
    f = w.findings
    return ScanResult(ctx.engine, w.ring, tuple(w.shadows), tuple(w.relocations),
                      tuple(f.patches), tuple(f.events), tuple(f.flips),
                      tuple(f.register_writes), w.commands, w.fetched_bytes)


@attrs.define
class ScanCounters:
    """What one vGPU's scanner did since the vGPU was created."""

    workloads_scanned: int = 0
    workloads_rejected: int = 0
    commands_scanned: int = 0
    commands_rejected: int = 0
    batches_shadowed: int = 0
    shadow_bytes: int = 0
    #: rejections per :class:`RejectReason` value.
    rejected_by_reason: dict[str, int] = attrs.Factory(dict)

    def as_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


class CommandScanner:
    """One vGPU's scanning stage: limits, counters, and each reason logged once."""

    def __init__(self, owner: str = "vgpu", limits: ScanLimits = DEFAULT_LIMITS) -> None:
        self.owner = owner
        self.limits = limits
        self.counters = ScanCounters()
        self._logged: set[RejectReason] = set()

    def scan(self, ring: RingSection, ctx: AuditContext, reader: CommandReader,
             allocator: ShadowAllocator) -> ScanResult | ScanRejection:
        out = scan_workload(ring, ctx, reader, allocator, self.limits)
        c = self.counters
        c.workloads_scanned += 1
        c.commands_scanned += out.commands
        if isinstance(out, ScanRejection):
            c.workloads_rejected += 1
            c.commands_rejected += 1
            key = out.reason.value
            c.rejected_by_reason[key] = c.rejected_by_reason.get(key, 0) + 1
            if out.reason not in self._logged:  # bounded here: once per reason
                self._logged.add(out.reason)
                log.warning("%s: %s (further %s rejections are counted, not logged)",
                            self.owner, out, out.reason.value, extra=_BOUNDED)
            return out
        c.batches_shadowed += len(out.shadows)
        c.shadow_bytes += out.shadow_bytes
        return out
