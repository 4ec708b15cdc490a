"""The command scanner's cost against execution: ``cmd_scan``.

One workload is built natively on a host GPU (a host context with its own
4-level PPGTT, as in ``workload_native_vs_virtual``): a ring whose
MI_BATCH_BUFFER_STARTs run PPGTT batch buffers. The same workload is

* scanned, as the prepare pipeline scans a vGPU's workload (ring section
  decoded, each batch copied into fetch-only host GM, decoded, audited,
  relocated, written back), with a vGPU-like audit context, and
* executed on the host engine model (the software engines, numpy blits).

``value`` = scan time / execution time (wall clock, best of the rounds, both
in this run); the baseline is execution (1.0). Two mixes:

* ``cmd_scan`` (blit-heavy, goal <= 0.10): BCS, 4 batches of two 1080p 32-bit
  blits each (a fill and a copy) with the clip set-up and flushes around them;
* ``cmd_scan_small_commands`` (reported, no goal): RCS, 4 batches of 3D pipeline
  state as Mesa emits it (PIPELINE_SELECT, STATE_BASE_ADDRESS, 3DSTATE_*),
  stores and PIPE_CONTROLs, about 260 commands per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from gvt_core.device.execution.scanner.audit import AuditContext, DisplayPlane, GmPartition
from gvt_core.device.execution.scanner.scan import CommandScanner, ScanResult
from gvt_core.device.execution.scanner.stage import CMD_ACCESS_REGISTERS, GmShadows, SpaceReader
from gvt_core.device.execution.scanner.walker import RingSection
from gvt_core.guest import commands as cmd
from gvt_core.guest.workloads import FULL_HD
from gvt_core.hw import regs
from gvt_core.hw.engine import commands as C
from gvt_core.hw.engine.memory import GgttSpace, PpgttSpace
from gvt_core.hw.engine.native import NativeContext, NativePpgtt
from gvt_core.hw.gm_heap import GmBlock
from gvt_core.hw.gpu import HostGpu
from gvt_core.hw.sysmem import PAGE_SIZE
from harness import Benchmark, Result

RCS, BCS = regs.ENGINE_RCS, regs.ENGINE_BCS
BATCHES = 4


class _HostShadows:
    """Shadow blocks for a native workload: host GM mapped fetch-only, as a job gives."""

    def __init__(self, gpu: HostGpu, ggtt: GgttSpace) -> None:
        self.gpu, self.ggtt = gpu, ggtt

    def shadow_block(self, npages: int) -> GmBlock:
        block = self.gpu.host_gm.alloc(npages, owner="bench-shadow")
        self.ggtt.add_fetch_window(block.gm, block.end)
        return block

    def free_block(self, block: GmBlock) -> None:
        self.ggtt.remove_fetch_window(block.gm, block.end)
        self.gpu.host_gm.free(block)

    def shadow_budget_left(self) -> int:
        return self.gpu.host_gm.free_bytes


def _blit_batch(dst: int, src: int, seed: int) -> list[int]:
    w, h = FULL_HD
    return (cmd.setup_clip_blt(0, 0, w, h)
            + cmd.color_blt(src, 4 * w, 0, 0, w, h, 0xFF00_0000 | seed)
            + cmd.flush_dw()
            + cmd.src_copy_blt(dst, 4 * w, 0, 0, w, h, src, 4 * w, 0, 0)
            + cmd.flush_dw() + cmd.batch_buffer_end())


def _state_batch(out: int, seed: int) -> list[int]:
    words = [C.header("PIPELINE_SELECT")]
    state = [s for s in C.for_engine(RCS).values()
             if s.type is C.CommandType.GFX and s.execution is C.Execution.NO_EFFECT
             and s.fixed_length is None]
    for i in range(240):
        spec = state[(seed + 7 * i) % len(state)]
        n = min(spec.max_length, max(spec.min_length, 3 + i % 9))
        words += [C.header(spec.name, n)] + [(i * 0x1000) & 0xFFFF_FFFF] * (n - 1)
    for i in range(16):
        words += cmd.store_dword(out + 4 * i, seed + i)
    words += cmd.pipe_control(out + 0x100, seed) + cmd.batch_buffer_end()
    return words


def _measure(mix: str, rounds: int) -> tuple[float, float, int, int]:
    """(best scan seconds, best execution seconds, commands scanned, batches)."""
    gpu = HostGpu(frame_of=_frames())
    ppgtt = NativePpgtt(gpu)
    engine = BCS if mix == "blit" else RCS
    ctx = NativeContext(gpu, engine, ring_pages=4, ppgtt=ppgtt)
    batches = [ppgtt.alloc(64 * PAGE_SIZE) for _ in range(BATCHES)]
    if mix == "blit":
        w, h = FULL_HD
        src, dst = ppgtt.alloc(4 * w * h), ppgtt.alloc(4 * w * h)
        content = [_blit_batch(dst.gma, src.gma, i) for i in range(BATCHES)]
    else:
        out = ppgtt.alloc(PAGE_SIZE)
        content = [_state_batch(out.gma, i) for i in range(BATCHES)]
    for buf, words in zip(batches, content, strict=True):
        raw = np.array(words, dtype="<u4").tobytes()
        for i in range(0, len(raw), PAGE_SIZE):
            buf.pages[i // PAGE_SIZE][1][: len(raw[i:i + PAGE_SIZE])] = raw[i:i + PAGE_SIZE]
    ring: list[int] = []
    for buf in batches:
        ring += cmd.batch_buffer_start(buf.gma)
    ring += cmd.noop(2)

    ggtt = GgttSpace(gpu.ggtt, gpu.sysmem, frozenset({gpu.scratch_frame}))
    space = PpgttSpace(gpu.sysmem, 4, (ppgtt.root,), frozenset())
    host = gpu.host_gm
    audit = AuditContext(
        engine=engine, partition=GmPartition.of((host.base, host.size)),
        register_allowed=CMD_ACCESS_REGISTERS.__contains__,
        owns_plane=lambda pipe, plane: isinstance(plane, DisplayPlane))
    scanner = CommandScanner("bench")
    shadows = GmShadows(_HostShadows(gpu, ggtt))
    section = RingSection(np.array(ring, dtype=np.uint32), ctx.ring.gm, ctx.ring.size, 0)

    def scan() -> ScanResult:
        out = scanner.scan(section, audit, SpaceReader(ggtt, space), shadows)
        if not isinstance(out, ScanResult):
            raise RuntimeError(f"the benchmark workload was rejected: {out}")
        return out

    def execute() -> None:
        ctx.emit(ring)
        done = ctx.run()
        if done.fault is not None:
            raise RuntimeError(f"the benchmark workload faulted: {done.fault}")

    scan().release()
    execute()  # warm both (first translations, numpy buffers)
    best_scan = best_exec = float("inf")
    commands = 0
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = scan()
        best_scan = min(best_scan, time.perf_counter() - t0)
        commands = result.commands
        result.release()
        t0 = time.perf_counter()
        execute()
        best_exec = min(best_exec, time.perf_counter() - t0)
    ctx.close()
    ppgtt.close()
    return best_scan, best_exec, commands, BATCHES


def _frames() -> Callable[[int], int]:
    counter = iter(range(0x10_0000, 1 << 40))
    return lambda _va: next(counter)


def run_cmd_scan(quick: bool) -> list[Result]:
    out = []
    for mix, name, what in (("blit", "cmd_scan", "eight 1080p blits in 4 PPGTT batches"),
                            ("small", "cmd_scan_small_commands",
                             "3D state, stores, PIPE_CONTROL in 4 PPGTT batches")):
        scan_s, exec_s, commands, _ = _measure(mix, 2 if quick else 7)
        out.append(Result(
            name=name, value=scan_s / exec_s, unit="scan/exec", baseline=1.0,
            goal=0.10 if mix == "blit" else None, goal_of="value",
            note=f"{what}: {commands} commands; scan {scan_s * 1e6:.0f} us "
                 f"({scan_s * 1e6 / commands:.2f} us/command), execution on the host engine "
                 f"model {exec_s * 1e6:.0f} us; wall clock, best of rounds"))
    return out


BENCHMARKS = [Benchmark("cmd_scan", run_cmd_scan)]
