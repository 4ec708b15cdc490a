"""A workload: one guest context descriptor taken from ELSP, until it completes (facts 7.5).

:func:`take_workload` is what happens at the ELSP write (upstream's
``intel_vgpu_create_workload``): the guest's logical ring context is read
through the vGPU's GGTT and the backend (``read_gpa``), the ring registers
are validated (the ring must lie in the vGPU's graphics memory, head and
tail inside it), the PPGTT named by the context's PDPs is found or shadowed
(3 or 4 levels from the descriptor's addressing mode), and the ring section
[head, tail) is copied into host memory. From then on the guest can rewrite
its ring, its context or its page tables: what runs is what was taken
(page-table changes reach the shadow by the page-track path and are synced
before dispatch, as on hardware).

The shadow ring is a block of the host's graphics memory as large as the
guest's ring; only the pages the section covers are backed, holding the
section at the same offsets, so head and tail keep their meaning and the
engine faults if it ever fetches outside the section. It is mapped for
command fetch only: no guest command can write it.
"""

from __future__ import annotations

import itertools
import struct
from typing import TYPE_CHECKING, Any

import attrs

from gvt_core.errors import GvtError, ResourceExhaustedError, WorkloadRejectedError
from gvt_core.hw import regs
from gvt_core.hw.engine import context as lrc
from gvt_core.hw.engine.context import ContextDescriptor
from gvt_core.hw.engine.state import EngineEvent, ExecContext
from gvt_core.hw.gm_heap import GmBlock
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE

if TYPE_CHECKING:
    from gvt_core.device.memory.ppgtt import ShadowMm

_STATE = struct.Struct(f"<{lrc.RING_CTX_DWORDS}I")
_ids = itertools.count(1)

#: host graphics memory one vGPU's queued workloads may hold in shadow rings (bytes).
MAX_SHADOW_GM_PER_VGPU = 32 * regs.MiB


@attrs.define(eq=False)
class Workload:
    """One context descriptor of one ELSP write, and everything it holds."""

    id: int
    vgpu: Any
    engine: int
    desc: ContextDescriptor
    #: guest-physical address of the LRC's register-state page.
    ring_context_gpa: int
    rb_head: int
    rb_tail: int
    rb_start: int
    rb_ctl: int
    ctx_ctrl: int
    levels: int
    mm: ShadowMm
    shadow_ring: GmBlock
    #: the first workload of an ELSP write emulates the schedule-in of both elements.
    elsp: tuple[ContextDescriptor, ContextDescriptor | None] | None = None
    submit_ns: int = 0
    start_ns: int = -1
    end_ns: int = -1
    #: host page of the shadow context's register state, while dispatched.
    shadow_state: tuple[int, memoryview] | None = None
    exec: ExecContext | None = None
    #: GPU time charged so far, ns.
    gpu_time_ns: int = 0
    commands: int = 0
    events: set[EngineEvent] = attrs.field(factory=set)
    pinned: bool = False
    #: stages that prepared this workload (told when it ends), and their job.
    prepared_by: list[Any] = attrs.field(factory=list)
    job: Any = None
    #: dropped by a reset or a destroy: nothing of it may act any more.
    cancelled: bool = False
    released: bool = False

    @property
    def context_id(self) -> int:
        return self.desc.context_id

    @property
    def started(self) -> bool:
        return self.exec is not None


def _reject(reason: str, *, unhealthy: bool = False) -> WorkloadRejectedError:
    return WorkloadRejectedError(reason, unhealthy=unhealthy)


def read_ring_context(vgpu: Any, desc: ContextDescriptor) -> tuple[int, tuple[int, ...]]:
    """(guest-physical address, register-state dwords) of the LRC ``desc`` names."""
    gpa = vgpu.ggtt.gma_to_gpa(desc.lrca + lrc.LRC_STATE_PN * PAGE_SIZE)
    if gpa is None:
        raise _reject(f"invalid guest context LRCA {desc.lrca:#x}: not mapped in the "
                      "vGPU's graphics memory")
    try:
        raw = vgpu.mpt.read_gpa(vgpu.handle, gpa, lrc.RING_CTX_SIZE)
    except GvtError as exc:
        raise _reject(f"guest context at {gpa:#x} is not readable: {exc}") from None
    return gpa, _STATE.unpack(raw)


def _section_pages(head: int, tail: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) pieces of [head, tail) in a ring of ``size``, split at pages."""
    out = []
    pos, left = head, (tail - head) % size
    while left:
        n = min(left, PAGE_SIZE - (pos & PAGE_MASK), size - pos)
        out.append((pos, n))
        pos = (pos + n) % size
        left -= n
    return out


def copy_ring_section(vgpu: Any, start: int, size: int, head: int, tail: int,
                      owner: str) -> GmBlock:
    """The guest ring's [head, tail) in a host GM block of the ring's size (see the module)."""
    pieces = _section_pages(head, tail, size)
    backed = {off >> PAGE_SHIFT for off, _ in pieces} or {head >> PAGE_SHIFT}
    host_gm = vgpu.gvt.gpu.host_gm
    in_use = host_gm.in_use(owner)
    if in_use + size > MAX_SHADOW_GM_PER_VGPU:
        raise _reject(f"shadow rings would hold {in_use + size} bytes of host graphics "
                      f"memory, over the vGPU's {MAX_SHADOW_GM_PER_VGPU}")
    data = []
    for off, n in pieces:
        gpa = vgpu.ggtt.gma_to_gpa(start + off)
        if gpa is None:
            raise _reject(f"ring page at {start + off:#x} is not mapped")
        try:
            data.append((off, vgpu.mpt.read_gpa(vgpu.handle, gpa, n)))
        except GvtError as exc:
            raise _reject(f"ring page at {start + off:#x} is not readable: {exc}") from None
    try:
        block = host_gm.alloc(size >> PAGE_SHIFT, owner=owner, backed=backed)
    except ResourceExhaustedError as exc:
        raise _reject(f"no host graphics memory for the shadow ring: {exc}") from None
    for off, chunk in data:
        block.write(off, chunk)
    return block


def take_workload(vgpu: Any, engine: int, desc: ContextDescriptor,
                  prev: Workload | None, now: int) -> Workload:
    """Create the workload of ``desc`` (see the module docstring).

    ``prev`` is the last workload queued for this engine: if it is the same
    context, the ring section starts at its tail (the context image's head
    is not written back yet). Raises :class:`WorkloadRejectedError`.
    """
    levels = desc.levels
    if levels is None:
        raise _reject(f"addressing mode {desc.addressing_mode} is not supported "
                      "(only legacy 32-bit and 64-bit contexts)")
    gpa, state = read_ring_context(vgpu, desc)
    head = state[lrc.CTX_RING_HEAD + 1] & lrc.RB_HEAD_OFF_MASK
    tail = state[lrc.CTX_RING_TAIL + 1] & lrc.RB_TAIL_OFF_MASK
    start = state[lrc.CTX_RING_BUFFER_START + 1] & regs.RING_ADDR_MASK
    ctl = state[lrc.CTX_RING_BUFFER_CONTROL + 1]
    if prev is not None and prev.desc.same_context(desc):
        head = prev.rb_tail
    size = lrc.ring_size(ctl)
    if not vgpu.resources.gm_valid(start, size):
        raise _reject(f"context contains an invalid ring at {start:#x} ({size:#x} bytes "
                      "outside the vGPU's graphics memory)")
    if head >= size or tail >= size:
        raise _reject(f"ring head {head:#x} / tail {tail:#x} beyond the {size:#x}-byte ring")
    roots = tuple(
        (state[lo + 1] | (state[hi + 1] << 32)) for lo, hi in lrc.CTX_PDP
    )
    try:
        mm = vgpu.ppgtt.find_or_create(levels, roots)  # type: ignore[arg-type]
    except (ResourceExhaustedError, ValueError, GvtError) as exc:
        raise _reject(f"cannot shadow the context's PPGTT: {exc}") from None
    try:
        block = copy_ring_section(vgpu, start, size, head, tail, shadow_owner(vgpu))
    except BaseException:
        vgpu.ppgtt.put(mm)
        raise
    return Workload(
        id=next(_ids), vgpu=vgpu, engine=engine, desc=desc, ring_context_gpa=gpa,
        rb_head=head, rb_tail=tail, rb_start=start, rb_ctl=ctl,
        ctx_ctrl=state[lrc.CTX_CONTEXT_CONTROL + 1], levels=levels, mm=mm,
        shadow_ring=block, submit_ns=now,
    )


def shadow_owner(vgpu: Any) -> str:
    """Accounting tag of a vGPU's shadow-ring host memory."""
    return f"vgpu{vgpu.id}-shadow"


def write_back(w: Workload) -> None:
    """``update_guest_context``: what the hardware writes back into the guest's image
    (ring head := where the engine stopped, CONTEXT_CONTROL, CTX_TIMESTAMP)."""
    assert w.shadow_state is not None
    state = _STATE.unpack_from(w.shadow_state[1], 0)
    vgpu = w.vgpu
    for index in (lrc.CTX_RING_HEAD, lrc.CTX_CONTEXT_CONTROL, lrc.CTX_CTX_TIMESTAMP):
        vgpu.mpt.write_gpa(vgpu.handle, w.ring_context_gpa + 4 * (index + 1),
                           struct.pack("<I", state[index + 1]))


def release(w: Workload) -> None:
    """Give back everything ``w`` holds (idempotent): shadow ring, shadow context,
    the PPGTT pin and reference. The caller holds the vGPU lock."""
    if w.released:
        return
    w.released = True
    vgpu = w.vgpu
    for stage in reversed(w.prepared_by):
        stage.finish(w)
    w.prepared_by.clear()
    gpu = vgpu.gvt.gpu
    if w.job is not None:
        for block in w.job.blocks:
            gpu.host_gm.free(block)
        w.job = None
    gpu.host_gm.free(w.shadow_ring)
    if w.shadow_state is not None:
        gpu.pages.free(*w.shadow_state)
        w.shadow_state = None
    if w.pinned:
        vgpu.ppgtt.unpin(w.mm)
        w.pinned = False
    vgpu.ppgtt.put(w.mm)
    w.exec = None
