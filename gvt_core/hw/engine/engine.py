"""One GEN8 engine: its register file, context load/save, and the command streamer.

The streamer walks the ring of the loaded context from head to tail and
follows batch buffers (first and second level, GGTT or PPGTT, chained),
executing each command it decodes with :mod:`gvt_core.hw.engine.commands`:

* every engine: MI_NOOP, MI_BATCH_BUFFER_START/END, MI_STORE_DATA_IMM,
  MI_STORE_DATA_INDEX, MI_LOAD_REGISTER_IMM/MEM/REG, MI_STORE_REGISTER_MEM,
  MI_USER_INTERRUPT, MI_ARB_CHECK, MI_ARB_ON_OFF, MI_SEMAPHORE_WAIT,
  MI_CONDITIONAL_BATCH_BUFFER_END, MI_REPORT_HEAD; MI_FLUSH_DW (post-sync
  write) on all but RCS;
* RCS: PIPE_CONTROL (post-sync immediate, depth count, timestamp, LRI);
* BCS: XY_SETUP_BLT, XY_SETUP_CLIP_BLT, XY_COLOR_BLT, XY_SRC_COPY_BLT.

Commands the table marks as having no modelled effect are skipped by
length; unknown opcodes, commands of another engine and commands the model
does not implement stop the context with an engine fault, as does any
memory access the address spaces refuse. A fault is reported in the
context (:attr:`ExecContext.fault`), never raised to the caller.
MI_DISPLAY_FLIP is not executed here: the command scanner takes every flip
out of a vGPU's workload (NOOP'd in the shadow) and the vGPU's display
applies it when the workload completes; one reaching an engine faults.

Which address space a memory operand uses: a command with a "use global
GTT" bit uses the GGTT when the bit is set *and* the command comes from the
ring or a privileged batch; everything else uses the context's PPGTT (the
GGTT for a context without one). Indexed stores go to the engine's status
page (RING_HWS_PGA) or the context's per-process status page, both in the
GGTT.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from gvt_core.hw import regs
from gvt_core.hw.engine import blitter
from gvt_core.hw.engine import commands as c
from gvt_core.hw.engine import context as lrc
from gvt_core.hw.engine.cost import DEFAULT_COST_MODEL, TIMESTAMP_NS_PER_TICK, CostModel
from gvt_core.hw.engine.memory import (
    Access,
    AddressSpace,
    EngineFault,
    Fault,
    FaultKind,
    PpgttSpace,
    read,
    read_u32,
    write_u32,
    write_u64,
)
from gvt_core.hw.engine.state import (
    MAX_BATCH_DEPTH,
    BatchFrame,
    EngineEvent,
    ExecContext,
    RingBuffer,
    RunState,
)
from gvt_core.hw.sysmem import PAGE_SIZE, SystemMemory

ENGINE_NAMES = {v: k for k, v in regs.ENGINE_IDS.items()}
_MMIO_DWORDS = regs.MMIO_SIZE // 4

#: registers with masked-write semantics (bits 31:16 select bits 15:0), engine-relative ...
MASKED_RING_REGISTERS = (regs.RING_MI_MODE, regs.RING_INSTPM, regs.RING_MODE_GEN7,
                         regs.RING_CONTEXT_CONTROL)
#: ... and global ones the MMIO context switch handles (i915 names in mmio_context).
CACHE_MODE_0_GEN7 = 0x7000
CACHE_MODE_1 = 0x7004
GEN7_GT_MODE = 0x7008
GEN7_COMMON_SLICE_CHICKEN1 = 0x7010
HDC_CHICKEN0 = 0x7300
VF_GUARDBAND = 0x83A4
MASKED_GLOBAL_REGISTERS = (CACHE_MODE_0_GEN7, CACHE_MODE_1, GEN7_GT_MODE,
                           GEN7_COMMON_SLICE_CHICKEN1, HDC_CHICKEN0, VF_GUARDBAND)

_STATE = struct.Struct(f"<{lrc.RING_CTX_DWORDS}I")
_Decoded = tuple[c.CommandSpec, Callable[..., None] | None, int, int, int, int]


class _Wait(Exception):
    """An unsatisfied MI_SEMAPHORE_WAIT: the command is retried in the next slice."""


def _u64(lo: int, hi: int) -> int:
    return lo | (hi << 32)


_COMPARE: dict[int, Callable[[int, int], bool]] = {
    c.SAD_GREATER_THAN_SDD: lambda sad, sdd: sad > sdd,
    c.SAD_GREATER_THAN_OR_EQUAL_SDD: lambda sad, sdd: sad >= sdd,
    c.SAD_LESS_THAN_SDD: lambda sad, sdd: sad < sdd,
    c.SAD_LESS_THAN_OR_EQUAL_SDD: lambda sad, sdd: sad <= sdd,
    c.SAD_EQUAL_SDD: lambda sad, sdd: sad == sdd,
    c.SAD_NOT_EQUAL_SDD: lambda sad, sdd: sad != sdd,
}


class Engine:
    """A software GEN8 engine (RCS, BCS, VCS, VCS2 or VECS)."""

    def __init__(self, engine_id: int, sysmem: SystemMemory,
                 cost: CostModel = DEFAULT_COST_MODEL) -> None:
        self.id = engine_id
        self.name = ENGINE_NAMES[engine_id]
        self.base = regs.ENGINE_BASES[self.name]
        self.sysmem = sysmem
        self.cost = cost
        #: the engine's register file, by dword (what LRI/SRM and the MMIO switch touch).
        self.regs = np.zeros(_MMIO_DWORDS, np.uint32)
        self._dirty = np.zeros(_MMIO_DWORDS, bool)
        self._dirty_count = 0
        self._masked = frozenset(
            [self.base + r for r in MASKED_RING_REGISTERS] + list(MASKED_GLOBAL_REGISTERS))
        handlers = self._handlers()
        #: key -> (command, its executor or None, fixed length or 0, length mask, min, max)
        self._decode: dict[int, _Decoded] = {}
        for key, spec in c.for_engine(engine_id).items():
            handler = handlers.get(spec.name)
            if (handler is not None) != (spec.execution is c.Execution.EXECUTED):
                raise AssertionError(f"{spec.name} on {self.name}: the command table says "
                                     f"{spec.execution.value}, the engine "
                                     f"{'has' if handler else 'has no'} executor")
            self._decode[key] = (spec, handler, spec.fixed_length or 0, spec.length_mask,
                                 spec.min_length, spec.max_length)
        #: host ns of the current slice's start minus the context's cost at that point.
        self._origin = 0
        self._ctx: ExecContext | None = None
        #: commands executed and faults raised by this engine, all contexts.
        self.commands = 0
        self.faults = 0

    # --- registers ---------------------------------------------------------------------
    def _handlers(self) -> dict[str, Callable[..., None]]:
        return {
            "MI_NOOP": self._mi_noop,
            "MI_USER_INTERRUPT": self._mi_user_interrupt,
            "MI_ARB_CHECK": self._mi_arb_check,
            "MI_REPORT_HEAD": self._mi_report_head,
            "MI_ARB_ON_OFF": self._mi_arb_on_off,
            "MI_BATCH_BUFFER_END": self._mi_bb_end,
            "MI_BATCH_BUFFER_START": self._mi_bb_start,
            "MI_CONDITIONAL_BATCH_BUFFER_END": self._mi_cond_bb_end,
            "MI_SEMAPHORE_WAIT": self._mi_semaphore_wait,
            "MI_STORE_DATA_IMM": self._mi_store_data_imm,
            "MI_STORE_DATA_INDEX": self._mi_store_data_index,
            "MI_LOAD_REGISTER_IMM": self._mi_lri,
            "MI_STORE_REGISTER_MEM": self._mi_srm,
            "MI_LOAD_REGISTER_MEM": self._mi_lrm,
            "MI_LOAD_REGISTER_REG": self._mi_lrr,
            "MI_FLUSH_DW": self._mi_flush_dw,
            "PIPE_CONTROL": self._pipe_control,
            "XY_SETUP_BLT": self._xy_setup_blt,
            "XY_SETUP_CLIP_BLT": self._xy_setup_clip_blt,
            "XY_COLOR_BLT": self._xy_color_blt,
            "XY_SRC_COPY_BLT": self._xy_src_copy_blt,
        }

    def timestamp_ticks(self) -> int:
        ctx = self._ctx
        ns = self._origin + (ctx.cost_ns if ctx is not None else 0)
        return ns // TIMESTAMP_NS_PER_TICK

    def read_reg(self, offset: int) -> int:
        """A register as a command sees it (live ring and timestamp registers included)."""
        offset &= c.MI_REG_OFFSET_MASK
        rel = offset - self.base
        ctx = self._ctx
        if ctx is not None:
            ring = ctx.ring
            if rel == regs.RING_HEAD:
                return ring.head | ring.wrap
            if rel == regs.RING_TAIL:
                return ring.tail
            if rel == regs.RING_START:
                return ring.start & 0xFFFF_FFFF
            if rel == regs.RING_CTL:
                return lrc.ring_ctl(ring.size)
            if rel == regs.RING_CTX_TIMESTAMP:
                return (ctx.ctx_timestamp + ctx.cost_ns // TIMESTAMP_NS_PER_TICK) & 0xFFFF_FFFF
        if rel == regs.RING_TIMESTAMP:
            return self.timestamp_ticks() & 0xFFFF_FFFF
        if rel == regs.RING_TIMESTAMP_UDW:
            return (self.timestamp_ticks() >> 32) & 0xFFFF_FFFF
        if offset >= regs.MMIO_SIZE:
            return 0
        return int(self.regs[offset >> 2])

    def write_reg(self, offset: int, value: int, byte_disable: int = 0) -> None:
        """A register write by LRI/LRM/LRR, by a PIPE_CONTROL LRI post-sync, or by the
        MMIO context switch; offsets beyond the MMIO range are ignored, as the
        hardware ignores writes to registers that do not exist."""
        offset &= c.MI_REG_OFFSET_MASK
        if offset >= regs.MMIO_SIZE:
            return
        i = offset >> 2
        old = int(self.regs[i])
        value &= 0xFFFF_FFFF
        if byte_disable:
            keep = 0
            for b in range(4):
                if byte_disable >> b & 1:
                    keep |= 0xFF << (8 * b)
            value = (old & keep) | (value & ~keep & 0xFFFF_FFFF)
        if offset in self._masked:
            m = value >> regs.MASKED_WRITE_SHIFT
            value = (old & ~m | value & m) & 0xFFFF
        self.regs[i] = value
        if not self._dirty[i]:
            self._dirty[i] = True
            self._dirty_count += 1

    def restore_registers(self, saved: np.ndarray) -> None:
        """Every register written since the last restore goes back to its value in
        ``saved`` (the MMIO context switch, on an owner change)."""
        if self._dirty_count:
            idx = np.flatnonzero(self._dirty)
            self.regs[idx] = saved[idx]
            self._dirty[idx] = False
            self._dirty_count = 0

    def snapshot_registers(self) -> np.ndarray:
        return self.regs.copy()

    @property
    def status_page(self) -> int:
        """Graphics address of the engine's hardware status page (RING_HWS_PGA)."""
        return int(self.regs[(self.base + regs.RING_HWS_PGA) >> 2]) & regs.RING_ADDR_MASK

    # --- contexts ---------------------------------------------------------------------------
    def load_context(
        self,
        image: memoryview,
        *,
        levels: int | None,
        ggtt: AddressSpace,
        ring_space: AddressSpace | None = None,
        pphwsp: int | None = None,
        fault_frames: frozenset[int] = frozenset(),
        shadow_fetch: bool = False,
        unprivileged_batches: frozenset[int] = frozenset(),
    ) -> ExecContext:
        """Load a ring-context register-state page (facts 7.4) onto this engine.

        ``levels`` (3 or 4) builds the context's PPGTT from the image's PDPs,
        None runs it without one; ``ring_space`` (default ``ggtt``) is where the
        ring is fetched from. A ring the image describes badly (head or tail
        beyond its size, an unaligned start) comes back as a faulted context.
        ``shadow_fetch``: the context's commands were scanned, so batches run
        only from the scanner's shadow copies (GGTT addresses in ``ggtt``'s
        fetch windows, the non-privileged ones listed in
        ``unprivileged_batches``); a PPGTT batch start is a fault.
        """
        state = _STATE.unpack_from(image, 0)
        start = state[lrc.CTX_RING_BUFFER_START + 1] & regs.RING_ADDR_MASK
        size = lrc.ring_size(state[lrc.CTX_RING_BUFFER_CONTROL + 1])
        head_raw = state[lrc.CTX_RING_HEAD + 1]
        head = head_raw & lrc.RB_HEAD_OFF_MASK
        tail = state[lrc.CTX_RING_TAIL + 1] & lrc.RB_TAIL_OFF_MASK
        ring = RingBuffer(ring_space or ggtt, start, size, head, tail,
                          head_raw & lrc.RB_HEAD_WRAP_MASK)
        ppgtt = None
        if levels is not None:
            pdps = []
            for lo_i, hi_i in lrc.CTX_PDP[: 1 if levels == 4 else 4]:
                pdps.append(_u64(state[lo_i + 1], state[hi_i + 1]) & regs.GTT_ADDR_MASK)
            ppgtt = PpgttSpace(self.sysmem, levels, tuple(pdps), fault_frames)
        ctx = ExecContext(ring, ggtt, ppgtt, pphwsp,
                          context_control=state[lrc.CTX_CONTEXT_CONTROL + 1],
                          ctx_timestamp=state[lrc.CTX_CTX_TIMESTAMP + 1],
                          shadow_fetch=shadow_fetch,
                          unprivileged_batches=unprivileged_batches)
        if head >= size or tail >= size:
            ctx.fault = EngineFault(FaultKind.BAD_RING, start,
                                    f"head {head:#x} / tail {tail:#x} beyond a {size:#x}-byte ring")
        return ctx

    def save_context(self, ctx: ExecContext, image: memoryview) -> None:
        """Write back what the hardware saves: ring head (with wrap), CTX_TIMESTAMP."""
        ticks = (ctx.ctx_timestamp + ctx.cost_ns // TIMESTAMP_NS_PER_TICK) & 0xFFFF_FFFF
        struct.pack_into("<I", image, 4 * (lrc.CTX_RING_HEAD + 1), ctx.ring.head | ctx.ring.wrap)
        struct.pack_into("<I", image, 4 * (lrc.CTX_CTX_TIMESTAMP + 1), ticks)

    # --- the command streamer ---------------------------------------------------------------
    def run(self, ctx: ExecContext, budget_ns: int, now_ns: int) -> RunState:
        """Execute ``ctx`` for about ``budget_ns`` of GPU time (checked between
        commands) starting at host time ``now_ns``."""
        if ctx.fault is not None:
            return RunState.FAULT
        if ctx.done:
            return RunState.DONE
        self._ctx = ctx
        self._origin = now_ns - ctx.cost_ns
        deadline = ctx.cost_ns + budget_ns
        decode = self._decode
        cost = self.cost
        spec: c.CommandSpec | None = None
        ring = ctx.ring
        batches = ctx.batches
        try:
            while True:
                if not batches and ring.head == ring.tail:
                    ctx.done = True  # even with the budget spent: nothing is left to run
                    return RunState.DONE
                if ctx.cost_ns >= deadline:
                    break
                if batches:
                    frame = batches[-1]
                    addr = frame.addr
                    header = read_u32(frame.space, addr, Access.FETCH)
                    privileged = frame.privileged
                else:
                    frame = None
                    addr = ring.start + ring.head
                    header = read_u32(ring.space, addr, Access.FETCH)
                    privileged = True
                entry = decode.get(c.key_of(header))
                if entry is None:
                    raise self._unknown(header, addr)
                spec, handler, n, mask, lo, hi = entry
                if not n:
                    n = (header & mask) + c.LENGTH_BIAS
                    if not lo <= n <= hi:
                        raise Fault(FaultKind.BAD_COMMAND, addr,
                                    f"{n} dwords; the command takes {lo}..{hi}")
                if n == 1:
                    dw: tuple[int, ...] = (header,)
                elif frame is not None:
                    dw = struct.unpack(f"<{n}I", read(frame.space, addr, 4 * n, Access.FETCH))
                else:
                    dw = self._ring_fetch(ring, n, addr)
                # advance first: a batch start or end replaces the frame
                if frame is not None:
                    frame.addr = addr + 4 * n
                else:
                    ring.head = (ring.head + 4 * n) % ring.size
                ctx.commands += 1
                self.commands += 1
                ctx.cost_ns += cost.command_ns + cost.dword_ns * n
                if handler is not None:
                    try:
                        handler(ctx, dw, privileged)
                    except _Wait:
                        # spin until the slice ends; the command runs again next slice
                        if frame is not None:
                            frame.addr = addr
                        else:
                            ring.head = (addr - ring.start) % ring.size
                        ctx.commands -= 1
                        self.commands -= 1
                        ctx.cost_ns = max(ctx.cost_ns, deadline)
                        return RunState.WAITING
                elif spec.execution is c.Execution.NOT_MODELLED:
                    raise Fault(FaultKind.NOT_MODELLED, addr, spec.name)
                spec = None
        except Fault as exc:
            self.faults += 1
            ctx.fault = EngineFault(exc.kind, exc.address, exc.detail,
                                    spec.name if spec is not None else "")
            return RunState.FAULT
        finally:
            self._ctx = None
        return RunState.RUNNING

    def _unknown(self, header: int, addr: int) -> Fault:
        for other in c.ENGINES:
            known = c.lookup(other, header)
            if known is not None:
                return Fault(FaultKind.WRONG_ENGINE, addr, f"{known.name} on {self.name}")
        return Fault(FaultKind.UNKNOWN_COMMAND, addr, f"header {header:#010x}")

    def _ring_fetch(self, ring: RingBuffer, n: int, addr: int) -> tuple[int, ...]:
        if 4 * n > ring.pending():
            raise Fault(FaultKind.BAD_RING, addr, "command runs past the ring tail")
        off = ring.head
        first = min(4 * n, ring.size - off)
        raw = read(ring.space, ring.start + off, first, Access.FETCH)
        if first < 4 * n:
            raw += read(ring.space, ring.start, 4 * n - first, Access.FETCH)
        return struct.unpack(f"<{n}I", raw)

    # --- helpers of the executors ---------------------------------------------------------------
    def _space(self, ctx: ExecContext, ggtt: bool, privileged: bool) -> AddressSpace:
        if ggtt and privileged:
            return ctx.ggtt
        return ctx.default_space

    def _store(self, ctx: ExecContext, space: AddressSpace, addr: int, data: tuple[int, ...]) -> None:
        if len(data) == 1:
            write_u32(space, addr, data[0])
        else:
            write_u64(space, addr, _u64(data[0], data[1]))
        ctx.cost_ns += self.cost.memory(4 * len(data))
        ctx.bytes_written += 4 * len(data)

    def _load(self, ctx: ExecContext, space: AddressSpace, addr: int) -> int:
        value = read_u32(space, addr)
        ctx.cost_ns += self.cost.memory(4)
        ctx.bytes_read += 4
        return value

    def _post_sync(self, ctx: ExecContext, op: int, space: AddressSpace, addr: int,
                   data: tuple[int, ...]) -> None:
        if op == c.POST_SYNC_IMMEDIATE:
            self._store(ctx, space, addr, data)
        elif op == c.POST_SYNC_TIMESTAMP:
            ts = self.timestamp_ticks()
            self._store(ctx, space, addr, (ts & 0xFFFF_FFFF, ts >> 32))
        elif op == c.POST_SYNC_DEPTH_COUNT:
            self._store(ctx, space, addr, (0, 0))  # nothing is rendered: no pixels passed

    @staticmethod
    def _bad(dw: tuple[int, ...], want: str) -> Fault:
        return Fault(FaultKind.BAD_COMMAND, 0, f"{len(dw)} dwords; {want}")

    # --- MI ---------------------------------------------------------------------------------------
    def _mi_noop(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if dw[0] & c.MI_NOOP_WRITE_ID:
            self.write_reg(self.base + regs.RING_NOPID, dw[0] & c.MI_NOOP_ID_MASK)

    def _mi_user_interrupt(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        ctx.events.add(EngineEvent.USER_INTERRUPT)

    def _mi_arb_check(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        """A preemption point; preemption is the scheduler's (between slices)."""

    def _mi_arb_on_off(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        ctx.arbitration = bool(dw[0] & c.MI_ARB_ENABLE)

    def _mi_report_head(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        hws = self.status_page + 4 * lrc.HWS_RING_HEAD_INDEX
        self._store(ctx, ctx.ggtt, hws, (ctx.ring.head | ctx.ring.wrap,))

    def _mi_bb_end(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if ctx.batches:
            ctx.batches.pop()

    def _mi_bb_start(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if len(dw) < 2:
            raise self._bad(dw, "MI_BATCH_BUFFER_START carries an address")
        addr = _u64(dw[1], dw[2] if len(dw) > 2 else 0) & c.GM_ADDR_MASK
        if dw[0] & c.MI_BB_PPGTT:
            if ctx.ppgtt is None:
                raise Fault(FaultKind.NO_PPGTT, addr, "PPGTT batch buffer")
            if ctx.shadow_fetch:  # the scanner relocates every start to a shadow
                raise Fault(FaultKind.UNSHADOWED_FETCH, addr, "PPGTT batch buffer")
            space, priv = ctx.ppgtt, False
        else:
            space, priv = ctx.ggtt, privileged and addr not in ctx.unprivileged_batches
        ctx.cost_ns += self.cost.batch_start_ns
        batches = ctx.batches
        if not batches:
            batches.append(BatchFrame(space, addr, priv, 1))
        elif batches[-1].level == 1 and dw[0] & c.MI_BB_SECOND_LEVEL:
            if len(batches) >= MAX_BATCH_DEPTH:
                raise Fault(FaultKind.BATCH_NESTING, addr)
            batches.append(BatchFrame(space, addr, priv and batches[-1].privileged, 2))
        else:  # a chained batch replaces the current level
            top = batches[-1]
            parent_priv = batches[-2].privileged if len(batches) > 1 else True
            batches[-1] = BatchFrame(space, addr, priv and parent_priv, top.level)

    def _mi_cond_bb_end(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if len(dw) < 3:
            raise self._bad(dw, "MI_CONDITIONAL_BATCH_BUFFER_END carries an address")
        addr = _u64(dw[2], dw[3] if len(dw) > 3 else 0) & c.GM_ADDR_MASK & ~7
        space = self._space(ctx, bool(dw[0] & c.MI_USE_GGTT), privileged)
        if self._load(ctx, space, addr) <= dw[1] and ctx.batches:
            ctx.batches.pop()

    def _mi_semaphore_wait(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if len(dw) < 3:
            raise self._bad(dw, "MI_SEMAPHORE_WAIT carries an address")
        addr = _u64(dw[2], dw[3] if len(dw) > 3 else 0) & c.GM_ADDR_MASK
        compare = _COMPARE.get((dw[0] >> c.MI_SEMAPHORE_COMPARE_SHIFT) & 0x7)
        if compare is None:
            raise Fault(FaultKind.BAD_COMMAND, addr, "reserved semaphore compare operation")
        space = self._space(ctx, bool(dw[0] & c.MI_USE_GGTT), privileged)
        if not compare(self._load(ctx, space, addr), dw[1]):
            raise _Wait

    def _mi_store_data_imm(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if not 4 <= len(dw) <= 5:
            raise self._bad(dw, "MI_STORE_DATA_IMM is 4 or 5 dwords")
        addr = _u64(dw[1], dw[2]) & c.GM_ADDR_MASK
        space = self._space(ctx, bool(dw[0] & c.MI_USE_GGTT), privileged)
        self._store(ctx, space, addr, dw[3:])

    def _mi_store_data_index(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if not 3 <= len(dw) <= 4:
            raise self._bad(dw, "MI_STORE_DATA_INDEX is 3 or 4 dwords")
        if dw[0] & c.MI_SDX_USE_PPHWSP:
            if ctx.pphwsp is None:
                raise Fault(FaultKind.UNMAPPED, 0, "no per-process status page")
            page = ctx.pphwsp
        else:
            page = self.status_page
        self._store(ctx, ctx.ggtt, page + (dw[1] & c.MI_SDX_OFFSET_MASK), dw[2:])

    def _mi_lri(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if len(dw) % 2 == 0:
            raise self._bad(dw, "MI_LOAD_REGISTER_IMM holds (offset, value) pairs")
        disable = (dw[0] >> c.MI_LRI_BYTE_DISABLE_SHIFT) & c.MI_LRI_BYTE_DISABLE_MASK
        for i in range(1, len(dw), 2):
            self.write_reg(dw[i], dw[i + 1], disable)

    def _mi_srm(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if len(dw) < 3:
            raise self._bad(dw, "MI_STORE_REGISTER_MEM carries an address")
        addr = _u64(dw[2], dw[3] if len(dw) > 3 else 0) & c.GM_ADDR_MASK
        space = self._space(ctx, bool(dw[0] & c.MI_USE_GGTT), privileged)
        self._store(ctx, space, addr, (self.read_reg(dw[1]),))

    def _mi_lrm(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if len(dw) < 3:
            raise self._bad(dw, "MI_LOAD_REGISTER_MEM carries an address")
        addr = _u64(dw[2], dw[3] if len(dw) > 3 else 0) & c.GM_ADDR_MASK
        space = self._space(ctx, bool(dw[0] & c.MI_USE_GGTT), privileged)
        self.write_reg(dw[1], self._load(ctx, space, addr))

    def _mi_lrr(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if len(dw) != 3:
            raise self._bad(dw, "MI_LOAD_REGISTER_REG is 3 dwords")
        self.write_reg(dw[2], self.read_reg(dw[1]))

    def _mi_flush_dw(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        ctx.cost_ns += self.cost.flush_ns
        if dw[0] & c.MI_FLUSH_DW_INVALIDATE_TLB:
            ctx.flush_tlbs()
        if dw[0] & c.MI_FLUSH_DW_NOTIFY:
            ctx.events.add(EngineEvent.FLUSH_DW_NOTIFY)
        op = (dw[0] >> c.MI_FLUSH_DW_OP_SHIFT) & 0x3
        if op == c.POST_SYNC_NONE:
            return
        if len(dw) < 4:
            raise self._bad(dw, "a post-sync MI_FLUSH_DW carries address and data")
        addr = _u64(dw[1] & c.MI_FLUSH_DW_ADDR_MASK, dw[2]) & c.GM_ADDR_MASK
        if dw[0] & c.MI_FLUSH_DW_STORE_INDEX:
            space, addr = ctx.ggtt, self.status_page + (addr & (PAGE_SIZE - 8))
        else:
            space = self._space(ctx, bool(dw[1] & c.MI_FLUSH_DW_USE_GTT), privileged)
        self._post_sync(ctx, op, space, addr, dw[3:5])

    def _pipe_control(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if len(dw) < 2:
            raise self._bad(dw, "PIPE_CONTROL has a flags dword")
        flags = dw[1]
        ctx.cost_ns += self.cost.flush_ns
        if flags & c.PIPE_CONTROL_TLB_INVALIDATE:
            ctx.flush_tlbs()
        if flags & c.PIPE_CONTROL_NOTIFY:
            ctx.events.add(EngineEvent.PIPE_CONTROL_NOTIFY)
        op = (flags >> c.PIPE_CONTROL_POST_SYNC_SHIFT) & 0x3
        lri = flags & c.PIPE_CONTROL_LRI_POST_SYNC
        if op == c.POST_SYNC_NONE and not lri:
            return
        if len(dw) < 5:
            raise self._bad(dw, "a post-sync PIPE_CONTROL carries address and data")
        addr = _u64(dw[2] & ~3 & 0xFFFF_FFFF, dw[3]) & c.GM_ADDR_MASK
        if lri:
            self.write_reg(addr, dw[4])
            return
        if flags & c.PIPE_CONTROL_STORE_DATA_INDEX:
            space, addr = ctx.ggtt, self.status_page + (addr & (PAGE_SIZE - 8))
        else:
            space = self._space(ctx, bool(flags & c.PIPE_CONTROL_GLOBAL_GTT), privileged)
        self._post_sync(ctx, op, space, addr & ~7 if op != c.POST_SYNC_IMMEDIATE else addr,
                        dw[4:6])

    # --- 2D ---------------------------------------------------------------------------------------
    def _blit_done(self, ctx: ExecContext, stats: blitter.BlitStats) -> None:
        ctx.cost_ns += self.cost.blit(stats.bytes_read, stats.bytes_written)
        ctx.bytes_read += stats.bytes_read
        ctx.bytes_written += stats.bytes_written

    def _xy_setup_blt(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if len(dw) < 4:
            raise self._bad(dw, "XY_SETUP_BLT carries a clip rectangle")
        blitter.setup_clip((dw[0], dw[2], dw[3]), ctx.clip)

    def _xy_setup_clip_blt(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if len(dw) != 3:
            raise self._bad(dw, "XY_SETUP_CLIP_BLT is 3 dwords")
        blitter.setup_clip(dw, ctx.clip)

    def _xy_color_blt(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if len(dw) != 7:
            raise self._bad(dw, "XY_COLOR_BLT is 7 dwords on gen8")
        self._blit_done(ctx, blitter.color_blt(dw, ctx.default_space, ctx.clip))

    def _xy_src_copy_blt(self, ctx: ExecContext, dw: tuple[int, ...], privileged: bool) -> None:
        if len(dw) != 10:
            raise self._bad(dw, "XY_SRC_COPY_BLT is 10 dwords on gen8")
        space = ctx.default_space
        self._blit_done(ctx, blitter.src_copy_blt(dw, space, space, ctx.clip))


class HostEngines:
    """The five engines of the host GPU, by id."""

    def __init__(self, sysmem: SystemMemory, cost: CostModel = DEFAULT_COST_MODEL) -> None:
        self.cost = cost
        self.by_id: dict[int, Engine] = {
            eid: Engine(eid, sysmem, cost) for eid in sorted(ENGINE_NAMES)
        }

    def __getitem__(self, engine_id: int) -> Engine:
        return self.by_id[engine_id]

    def __iter__(self) -> Any:
        return iter(self.by_id.values())
