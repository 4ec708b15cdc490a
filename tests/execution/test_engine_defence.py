"""Defence in depth: an engine confines a vGPU's context whatever the scanner let through.

The contexts here run as a vGPU's do (a GGTT space limited to a partition,
command fetch from fetch windows only) but their commands are *not* scanned,
as if the scanner had a bug: every GGTT access outside the partition, on
every path (addresses in commands, the status page a register names, the
per-process status page, batch starts) is an engine fault, never a write;
batches run only from fetch windows (the shadows), and a shadow of a
non-privileged batch runs unprivileged.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest

from gvt_core.guest import commands as cmd
from gvt_core.hw import regs
from gvt_core.hw.engine import commands as c
from gvt_core.hw.engine.memory import FaultKind, GgttSpace
from gvt_core.hw.engine.native import NativeContext, NativePpgtt, buffer
from gvt_core.hw.engine.state import ExecContext, RunState
from gvt_core.hw.gm_heap import GmBlock
from gvt_core.hw.gpu import HostGpu
from tests.execution.blocks import get, put

RCS, BCS = regs.ENGINE_RCS, regs.ENGINE_BCS
CANARY = 0xCA5E_CA5E


def _run(gpu: HostGpu, ctx: NativeContext, partition: GmBlock, *,
         fetch: tuple[GmBlock, ...] = (), unprivileged: frozenset[int] = frozenset(),
         pphwsp: int | None = None) -> ExecContext:
    """Run ``ctx`` confined to ``partition`` (data) and its ring plus ``fetch`` (fetch only),
    commands fetched from the fetch windows only, as a scanned vGPU workload runs."""
    space = GgttSpace(gpu.ggtt, gpu.sysmem, frozenset({gpu.scratch_frame}),
                      windows=((partition.gm, partition.end),),
                      fetch_windows=((ctx.ring.gm, ctx.ring.end),
                                     *((b.gm, b.end) for b in fetch)),
                      fetch_from_windows=False)
    levels = ctx.ppgtt.levels if ctx.ppgtt is not None else None
    ec = ctx.engine.load_context(ctx.state, levels=levels, ggtt=space, pphwsp=pphwsp,
                                 shadow_fetch=True, unprivileged_batches=unprivileged)
    state = RunState.RUNNING
    while state in (RunState.RUNNING, RunState.WAITING) and ec.cost_ns < 10_000_000:
        state = ctx.engine.run(ec, 1_000_000, ec.cost_ns)
    return ec


@pytest.fixture
def world(gpu: HostGpu) -> Any:
    part, other = buffer(gpu, 4 * 4096), buffer(gpu, 4096)
    put(other, [CANARY] * 1024)
    return part, other


#: each command aims a GGTT access at ``o`` (outside the partition); ``p`` is inside.
PATHS: dict[str, tuple[int, Callable[[int, int], list[int]], str]] = {
    "store dword": (RCS, lambda p, o: cmd.store_dword(o, 1, ggtt=True), "data"),
    "store qword": (RCS, lambda p, o: cmd.store_qword(o, 1, ggtt=True), "data"),
    "SRM": (RCS, lambda p, o: cmd.store_register_mem(0x2028, o, ggtt=True), "data"),
    "LRM": (RCS, lambda p, o: cmd.load_register_mem(0x2028, o, ggtt=True), "data"),
    "semaphore wait": (BCS, lambda p, o: cmd.semaphore_wait(o, 0, ggtt=True), "data"),
    "conditional batch end": (RCS, lambda p, o: cmd.conditional_batch_buffer_end(o, 0, ggtt=True),
                              "data"),
    "flush post-sync": (BCS, lambda p, o: cmd.flush_dw(o, 1, ggtt=True), "data"),
    "flush timestamp": (BCS, lambda p, o: cmd.flush_dw(o, timestamp=True, ggtt=True), "data"),
    "pipe-control post-sync": (RCS, lambda p, o: cmd.pipe_control(o, 1, ggtt=True), "data"),
    "pipe-control timestamp": (RCS, lambda p, o: cmd.pipe_control(o, timestamp=True, ggtt=True),
                               "data"),
    # register-derived: the status page RING_HWS_PGA names
    "store index (HWS_PGA)": (RCS, lambda p, o: cmd.load_register_imm(
        [(regs.RENDER_RING_BASE + regs.RING_HWS_PGA, o)]) + cmd.store_dword_index(0x40, 1),
        "data"),
    "report head (HWS_PGA)": (BCS, lambda p, o: cmd.load_register_imm(
        [(regs.BLT_RING_BASE + regs.RING_HWS_PGA, o)]) + cmd.report_head(), "data"),
    "flush store index (HWS_PGA)": (BCS, lambda p, o: cmd.load_register_imm(
        [(regs.BLT_RING_BASE + regs.RING_HWS_PGA, o)]) + cmd.flush_dw(0x40, 1, index=True),
        "data"),
    "pipe-control store index (HWS_PGA)": (RCS, lambda p, o: cmd.load_register_imm(
        [(regs.RENDER_RING_BASE + regs.RING_HWS_PGA, o)]) + cmd.pipe_control(0x40, 1, index=True),
        "data"),
    "store index (per-process HWSP)": (RCS, lambda p, o: cmd.store_dword_index(0x40, 1,
                                                                              pphwsp=True),
                                       "pphwsp"),
    "batch start": (RCS, lambda p, o: cmd.batch_buffer_start(o, ppgtt=False), "fetch"),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_ggtt_path_outside_the_partition_faults(gpu: HostGpu, world: Any, path: str) -> None:
    part, other = world
    engine, build, kind = PATHS[path]
    ctx = NativeContext(gpu, engine, 2)
    try:
        ctx.emit(build(part.gm, other.gm))
        done = _run(gpu, ctx, part, pphwsp=other.gm if kind == "pphwsp" else None)
        assert done.fault is not None, path
        want = FaultKind.UNSHADOWED_FETCH if kind == "fetch" else FaultKind.OUTSIDE_PARTITION
        assert done.fault.kind is want and done.fault.address >> 12 == other.gm >> 12
        assert get(other, 1024) == (CANARY,) * 1024
        # the same command aimed inside the partition runs
        inside = NativeContext(gpu, engine, 2)
        put(part, cmd.batch_buffer_end(), 0x1000)
        try:
            inside.emit(build(part.gm, part.gm + 0x1000))
            fetch = (part,) if kind == "fetch" else ()
            ok = _run(gpu, inside, part, fetch=fetch,
                      pphwsp=part.gm if kind == "pphwsp" else None)
            assert ok.fault is None or ok.fault.kind is FaultKind.UNMAPPED, ok.fault
        finally:
            inside.close()
    finally:
        ctx.close()


def test_batches_run_only_from_the_shadows(gpu: HostGpu, world: Any) -> None:
    part, _ = world
    shadow = buffer(gpu, 4096)
    put(shadow, cmd.store_dword(part.gm, 0x5A, ggtt=True) + cmd.batch_buffer_end())
    put(part, cmd.store_dword(part.gm, 0xBAD, ggtt=True) + cmd.batch_buffer_end(), 0x100)
    ppgtt = NativePpgtt(gpu)
    ctx = NativeContext(gpu, RCS, 2, ppgtt=ppgtt)
    try:
        # guest memory (the partition) is data, never commands
        ctx.emit(cmd.batch_buffer_start(part.gm + 0x100, ppgtt=False))
        done = _run(gpu, ctx, part, fetch=(shadow,))
        assert done.fault is not None and done.fault.kind is FaultKind.UNSHADOWED_FETCH
        # a PPGTT batch start (the scanner relocates every start to a shadow) faults
        batch = ppgtt.alloc(4096)
        ctx2 = NativeContext(gpu, RCS, 2, ppgtt=ppgtt)
        ctx2.emit(cmd.batch_buffer_start(batch.gma))
        done = _run(gpu, ctx2, part, fetch=(shadow,))
        ctx2.close()
        assert done.fault is not None and done.fault.kind is FaultKind.UNSHADOWED_FETCH
        # the shadow runs
        ctx3 = NativeContext(gpu, RCS, 2, ppgtt=ppgtt)
        ctx3.emit(cmd.batch_buffer_start(shadow.gm, ppgtt=False))
        done = _run(gpu, ctx3, part, fetch=(shadow,))
        ctx3.close()
        assert done.fault is None and get(part, 1) == (0x5A,)
    finally:
        ctx.close()
        ppgtt.close()
        gpu.host_gm.free(shadow)


def test_a_shadow_of_a_ppgtt_batch_runs_unprivileged(gpu: HostGpu, world: Any) -> None:
    """Its GGTT bits select the PPGTT, as in the guest's non-privileged batch."""
    part, _ = world
    shadow = buffer(gpu, 4096)
    put(shadow, cmd.store_dword(part.gm, 0xBAD, ggtt=True) + cmd.batch_buffer_end())
    ppgtt = NativePpgtt(gpu)
    ctx = NativeContext(gpu, RCS, 2, ppgtt=ppgtt)
    try:
        ctx.emit(cmd.batch_buffer_start(shadow.gm, ppgtt=False))
        done = _run(gpu, ctx, part, fetch=(shadow,), unprivileged=frozenset({shadow.gm}))
        # the store went to the PPGTT, where nothing is mapped at that address
        assert done.fault is not None and done.fault.kind is FaultKind.UNMAPPED
        assert get(part, 1) == (0,)
    finally:
        ctx.close()
        ppgtt.close()
        gpu.host_gm.free(shadow)


def test_engine_and_table_agree_on_length_limits(gpu: HostGpu) -> None:
    """A length the table refuses is an engine fault too, never a different decode."""
    ctx = NativeContext(gpu, RCS, 2)
    try:
        ctx.emit([c.header("MI_STORE_DATA_IMM", 6), 0, 0, 0, 0, 0])  # valid lengths: 4, 5
        done = ctx.run()
        assert done.fault is not None and done.fault.kind is FaultKind.BAD_COMMAND
        assert struct.calcsize("<I") == 4
    finally:
        ctx.close()
