"""Virtual execlists of one engine of one vGPU (facts 7.2, 7.3; upstream execlist.c).

Two virtual execlist slots, each holding the two context descriptors of one
ELSP write; a running slot, a pending slot and the running context.
Schedule-in (when the first workload of an ELSP write is dispatched) and
schedule-out (when a workload completes) emulate what the hardware reports:
context-status-buffer entries (idle-to-active, lite restore + preempted,
element switch, context complete, active-to-idle) with context ids, the
EXECLIST_STATUS register, and the context-switch interrupt, exactly in
upstream's order.

The CSB lives in the vGPU's virtual registers (six 8-byte entries and the
CSB pointer register, whose write pointer only we move) and is mirrored
into the guest's hardware status page (RING_HWS_PGA, translated through the
vGPU's GGTT and written with the backend's ``write_gpa``) when the guest
has programmed one: entry n at dword 0x10 + 2n, the write pointer at dword
0x1F. The CSB is a ring the guest consumes; it cannot grow.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import attrs

from gvt_core.device.interrupt import IrqEvent
from gvt_core.errors import GvtError
from gvt_core.hw import regs
from gvt_core.hw.engine import context as lrc
from gvt_core.hw.engine.context import ContextDescriptor

log = logging.getLogger(__name__)

# --- CSB status bits (facts 7.2) -----------------------------------------------------------
CSB_IDLE_TO_ACTIVE = 1 << 0
CSB_PREEMPTED = 1 << 1
CSB_ELEMENT_SWITCH = 1 << 2
CSB_ACTIVE_TO_IDLE = 1 << 3
CSB_CONTEXT_COMPLETE = 1 << 4
CSB_LITE_RESTORE = 1 << 15

# --- EXECLIST_STATUS low dword (facts 7.2) --------------------------------------------------
EL_CURRENT_POINTER = 1 << 0
EL_WRITE_POINTER = 1 << 1
EL_QUEUE_FULL = 1 << 2
EL_1_VALID = 1 << 3
EL_0_VALID = 1 << 4
EL_ARBITRATION_ENABLE = 1 << 16
EL_1_ACTIVE = 1 << 17
EL_0_ACTIVE = 1 << 18

CONTEXT_SWITCH_EVENT = {
    regs.ENGINE_RCS: IrqEvent.RCS_AS_CONTEXT_SWITCH,
    regs.ENGINE_BCS: IrqEvent.BCS_AS_CONTEXT_SWITCH,
    regs.ENGINE_VCS: IrqEvent.VCS_AS_CONTEXT_SWITCH,
    regs.ENGINE_VCS2: IrqEvent.VCS2_AS_CONTEXT_SWITCH,
    regs.ENGINE_VECS: IrqEvent.VECS_AS_CONTEXT_SWITCH,
}
_NAMES = {v: k for k, v in regs.ENGINE_IDS.items()}


@attrs.define(eq=False)
class ExeclistSlot:
    index: int
    ctx: list[ContextDescriptor | None] = attrs.field(factory=lambda: [None, None])

    def valid(self, i: int) -> bool:
        d = self.ctx[i]
        return d is not None and d.valid


def _same(a: ContextDescriptor | None, b: ContextDescriptor | None) -> bool:
    return a is not None and b is not None and a.same_context(b)


@attrs.define(eq=False)
class CsbCounters:
    events: int = 0
    hwsp_mirrored: int = 0
    #: mirror writes that failed (the status page is not in guest RAM): counted, not fatal.
    hwsp_errors: int = 0
    schedule_in_refused: int = 0


class VirtualExeclist:
    """The execlist state of one engine of one vGPU. Callers hold the vGPU lock."""

    def __init__(self, vgpu: Any, engine: int) -> None:
        self.vgpu = vgpu
        self.engine = engine
        base = regs.ENGINE_BASES[_NAMES[engine]]
        self.status_reg = base + regs.RING_EXECLIST_STATUS
        self.csb_reg = base + regs.RING_CONTEXT_STATUS_BUF
        self.csb_ptr_reg = base + regs.RING_CONTEXT_STATUS_PTR
        self.hws_reg = base + regs.RING_HWS_PGA
        self.slots = (ExeclistSlot(0), ExeclistSlot(1))
        self.running_slot: ExeclistSlot | None = None
        self.pending_slot: ExeclistSlot | None = None
        self.running_context: ContextDescriptor | None = None
        self.counters = CsbCounters()
        self.reset()

    # --- life cycle ------------------------------------------------------------------
    def reset(self) -> None:
        """``init_vgpu_execlist``: empty slots, CSB pointers to their reset values."""
        for s in self.slots:
            s.ctx = [None, None]
        self.running_slot = self.pending_slot = None
        self.running_context = None
        mmio = self.vgpu.mmio
        mmio.set32(self.csb_ptr_reg, regs.CSB_PTR_RESET)
        mmio.set32(self.status_reg, 0)
        mmio.set32(self.status_reg + 4, 0)

    # --- status emulation ------------------------------------------------------------
    def _emulate_status(self) -> None:
        mmio = self.vgpu.mmio
        ldw = mmio.get32(self.status_reg)
        running, desc = self.running_slot, self.running_context
        clear = (EL_CURRENT_POINTER | EL_WRITE_POINTER | EL_QUEUE_FULL | EL_0_VALID | EL_1_VALID
                 | EL_0_ACTIVE | EL_1_ACTIVE)
        ldw &= ~clear & 0xFFFF_FFFF
        if running is not None:
            if running.index:
                ldw |= EL_CURRENT_POINTER | EL_1_VALID | EL_1_ACTIVE
            else:
                ldw |= EL_WRITE_POINTER | EL_0_VALID | EL_0_ACTIVE
        if self.pending_slot is not None:
            ldw |= EL_QUEUE_FULL
        ldw |= EL_ARBITRATION_ENABLE
        mmio.set32(self.status_reg, ldw)
        mmio.set32(self.status_reg + 4, desc.context_id if desc is not None else 0)

    def _csb_update(self, status: int, context_id: int, interrupt: bool = True) -> None:
        """``emulate_csb_update``: the next CSB entry, its HWSP mirror, and the interrupt."""
        mmio = self.vgpu.mmio
        ptr = mmio.get32(self.csb_ptr_reg)
        write = ptr & regs.CSB_WRITE_PTR_MASK
        write = 0 if write == regs.CSB_PTR_RESET else (write + 1) % regs.GEN8_CSB_ENTRIES
        mmio.set32(self.csb_reg + 8 * write, status)
        mmio.set32(self.csb_reg + 8 * write + 4, context_id)
        mmio.set32(self.csb_ptr_reg, (ptr & ~regs.CSB_WRITE_PTR_MASK & 0xFFFF_FFFF) | write)
        self.counters.events += 1
        self._mirror(write, status, context_id)
        if interrupt:
            self.vgpu.irq.raise_event(CONTEXT_SWITCH_EVENT[self.engine])

    def _mirror(self, write: int, status: int, context_id: int) -> None:
        hws = self.vgpu.mmio.get32(self.hws_reg) & regs.RING_ADDR_MASK
        if not hws:
            return
        gpa = self.vgpu.ggtt.gma_to_gpa(hws)
        if gpa is None:
            self.counters.hwsp_errors += 1
            return
        try:
            mpt, handle = self.vgpu.mpt, self.vgpu.handle
            mpt.write_gpa(handle, gpa + 4 * (lrc.HWS_CSB_BUF0_INDEX + 2 * write),
                          struct.pack("<II", status, context_id))
            mpt.write_gpa(handle, gpa + 4 * lrc.HWS_CSB_WRITE_INDEX, struct.pack("<I", write))
        except GvtError as exc:
            self.counters.hwsp_errors += 1
            log.debug("vGPU %d: CSB mirror to %#x failed: %s", self.vgpu.id, gpa, exc)
            return
        self.counters.hwsp_mirrored += 1

    # --- schedule in / out ----------------------------------------------------------------
    def schedule_in(self, ctx0: ContextDescriptor, ctx1: ContextDescriptor | None) -> bool:
        """``emulate_execlist_schedule_in`` for one ELSP write; False when both
        virtual slots are taken (upstream: "no available execlist slot")."""
        mmio = self.vgpu.mmio
        if mmio.get32(self.status_reg) & EL_QUEUE_FULL:
            self.counters.schedule_in_refused += 1
            return False
        slot = self.slots[1 if mmio.get32(self.status_reg) & EL_WRITE_POINTER else 0]
        slot.ctx = [ctx0, ctx1]
        running = self.running_slot
        if running is None:
            self.running_slot = slot
            self.pending_slot = None
            self.running_context = slot.ctx[0]
            self._emulate_status()
            self._csb_update(CSB_IDLE_TO_ACTIVE, 0)
            return True
        r0, r1 = running.ctx
        lite = (running.valid(1) and _same(r1, ctx0) and not _same(r0, self.running_context)) or (
            not running.valid(1) and _same(r0, ctx0))
        self.pending_slot = slot
        if lite:
            self._switch_slot()
            self._emulate_status()
            self._csb_update(CSB_LITE_RESTORE | CSB_PREEMPTED, ctx0.context_id)
        else:
            self._emulate_status()
        return True

    def _switch_slot(self) -> None:
        self.running_slot = self.pending_slot
        self.pending_slot = None
        self.running_context = (self.running_slot.ctx[0]
                                if self.running_context is not None and self.running_slot
                                else None)

    def schedule_out(self, ctx: ContextDescriptor) -> bool:
        """``emulate_execlist_ctx_schedule_out`` when the workload of ``ctx`` completed;
        False when ``ctx`` is not the running context (nothing is emulated)."""
        running, pending = self.running_slot, self.pending_slot
        if running is None or not _same(ctx, self.running_context):
            log.warning("vGPU %d engine %d: schedule-out of context %#x that is not running",
                        self.vgpu.id, self.engine, ctx.context_id)
            return False
        c0, c1 = running.ctx
        if running.valid(1) and _same(c0, ctx):
            self.running_context = c1
            self._emulate_status()
            self._csb_update(CSB_CONTEXT_COMPLETE | CSB_ELEMENT_SWITCH, ctx.context_id)
            return True
        if (not running.valid(1) and _same(c0, ctx)) or (running.valid(1) and _same(c1, ctx)):
            self._switch_slot()
            self._emulate_status()
            status = CSB_CONTEXT_COMPLETE | CSB_ACTIVE_TO_IDLE
            if pending is None:
                self._csb_update(status, ctx.context_id)
            else:
                self._csb_update(status, ctx.context_id, interrupt=False)
                self._csb_update(CSB_IDLE_TO_ACTIVE, 0)
            return True
        return False
