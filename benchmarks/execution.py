"""Execution benchmarks on sim: virtual against native submission, and the scheduler.

* ``workload_native_vs_virtual``: the same workloads run natively (a host
  context with its own 4-level PPGTT on the host engines, no vGPU: emit,
  execute) and by a guest
  through its vGPU (ring writes, ELSP traps, workload taken and shadowed,
  scheduled, executed, write-back, CSB, MSI, the guest waking; it keeps two
  contexts in flight, as i915 keeps the running and the pending execlist,
  while the native host runs one workload after the other). ``value``
  = virtual workloads per CPU second of the host process, ``baseline`` =
  native, so the figure is what virtualization costs the host whatever else
  loads the machine (the wall-clock ratio is in the note), ``ratio`` =
  virtual / native (goal >= 0.95) for the blit-heavy mix (a 1080p 32-bit
  fill and a copy of it per workload); a second result gives the figure for
  a small-command mix (64 MI_STORE_DATA_IMM per workload).
* ``scheduler_fairness``: three busy vGPUs of types GVTg_V4_8, _4 and _2
  (weights 2, 4, 8) for one simulated second under the time-based policy;
  ``value`` = the largest deviation of a vGPU's share of GPU time from its
  weight / sum, in percentage points (goal <= 2); ``baseline`` = the same
  with the strict-priority policy (which ignores weights).
* ``scheduler_scaling``: seven busy vGPUs against one; ``value`` = the
  aggregate GPU throughput with seven (workloads per simulated second: how
  well the scheduler keeps the GPU busy), ``baseline`` = with one,
  ``ratio`` = seven / one (goal >= 0.9); the note gives the same ratio per
  host CPU second and per wall-clock second (the host's own overhead of
  serving seven guests).

"Busy" guests keep contexts in flight on BCS (twelve each for fairness, four
each for scaling: see ``BUSY_DEPTH``), each workload a 2048x512 fill (about
0.42 ms of GPU time), and refill each context as soon as its breadcrumb lands.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from gvt_core.device.gvt import Gvt
from gvt_core.guest import commands as cmd
from gvt_core.guest.driver import GuestDriver
from gvt_core.guest.gpu import GuestGpu
from gvt_core.guest.workloads import FULL_HD, blit_heavy, small_commands
from gvt_core.hw import regs
from gvt_core.hw.engine.native import NativeContext, NativePpgtt
from gvt_core.mpt import hookimpl
from harness import Benchmark, Result

RCS, BCS = regs.ENGINE_RCS, regs.ENGINE_BCS
TIMEOUT = 120.0


def _guest(gvt: Gvt, type_name: str, mem: int = 64 << 20) -> GuestGpu:
    vm = gvt.create_vm(mem, name=f"bench{len(gvt.vgpus) + 1}")
    vgpu = gvt.create_vgpu(type_name, vm)
    driver = GuestDriver(vm.port(), fb_width=64, fb_height=32)
    driver.load()
    gvt.activate_vgpu(vgpu)
    return GuestGpu(driver)


# --- native vs virtual ------------------------------------------------------------------------


class _Native:
    """The host's own context on its engines, no vGPU, with a 4-level PPGTT of its own
    as i915's contexts have (the same walk the guest's shadow tables get): runs ``n``
    workloads."""

    def __init__(self, gvt: Gvt, mix: str) -> None:
        gpu = gvt.gpu
        ppgtt = NativePpgtt(gpu)
        if mix == "blit":
            w, h = FULL_HD
            src, dst = ppgtt.alloc(4 * w * h), ppgtt.alloc(4 * w * h)
            self.ctx = NativeContext(gpu, BCS, ring_pages=16, ppgtt=ppgtt)
            self.work = lambda i: blit_heavy(dst.gma, src.gma, i)
        else:
            out = ppgtt.alloc(4096)
            self.ctx = NativeContext(gpu, RCS, ring_pages=16, ppgtt=ppgtt)
            self.work = lambda i: small_commands(out.gma, i)

    def __call__(self, n: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            self.ctx.emit(self.work(i))
            done = self.ctx.run()
            if done.fault is not None:
                raise RuntimeError(f"native workload faulted: {done.fault}")
        return time.process_time() - c0, time.perf_counter() - t0


class _Virtual:
    """A guest submitting through its vGPU on sim, two contexts in flight (the running
    and the pending execlist, as i915 keeps): runs ``n`` workloads."""

    def __init__(self, gvt: Gvt, mix: str) -> None:
        gpu = self.gpu = _guest(gvt, gvt.smallest_type, mem=96 << 20)
        engine = BCS if mix == "blit" else RCS
        self.ctxs = ctxs = [gpu.context(engine, levels=4, ring_pages=16) for _ in range(2)]
        if mix == "blit":
            w, h = FULL_HD
            src, dst = ctxs[0].ppgtt.alloc(4 * w * h), ctxs[0].ppgtt.alloc(4 * w * h)
            for b in (src, dst):  # the second context reaches the same guest pages
                ctxs[1].ppgtt.map(b.gma, [b.gpa + k * 4096 for k in range(b.size // 4096)])
            self.work = lambda i: blit_heavy(dst.gma, src.gma, i)
            self.check = lambda i: dst.read_dwords(4 * (w * h - 1), 1)[0] == 0xFF00_0000 | i
        else:
            out = ctxs[0].ppgtt.alloc(4096)
            ctxs[1].ppgtt.map(out.gma, [out.gpa])
            self.work = lambda i: small_commands(out.gma, i)
            self.check = lambda i: out.read_dwords(4 * 63, 1)[0] == i + 63

    def __call__(self, n: int) -> tuple[float, float]:
        gpu, ctxs = self.gpu, self.ctxs
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            ctx = ctxs[i % 2]
            deadline = time.monotonic() + TIMEOUT
            while not ctx.idle:
                if time.monotonic() > deadline:
                    raise RuntimeError("a benchmark workload did not complete")
                gpu.wait(0.05)
            ctx.emit(self.work(i))
            gpu.submit(ctx)
        gpu.wait_complete(ctxs, TIMEOUT)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        if not self.check(n - 1):
            raise RuntimeError("the guest's workloads did not leave their results")
        return cpu, wall


def compare(mix: str, n: int, rounds: int) -> tuple[float, float, float, float]:
    """(native, virtual) workloads per CPU second of the host process, then the same
    per wall-clock second: the best of ``rounds`` alternating runs. CPU time is what
    the work costs the host whatever else runs on the machine; wall time also
    counts the threads' hand-offs, and other load."""
    with Gvt.open("sim") as native_host, Gvt.open("sim") as virtual_host:
        native, virtual = _Native(native_host, mix), _Virtual(virtual_host, mix)
        native(1)
        virtual(2)  # warm: first shadows and translations
        inf = float("inf")
        cpu_n = wall_n = cpu_v = wall_v = inf
        for _ in range(rounds):
            c, w = native(n)
            cpu_n, wall_n = min(cpu_n, c), min(wall_n, w)
            c, w = virtual(n)
            cpu_v, wall_v = min(cpu_v, c), min(wall_v, w)
        return n / cpu_n, n / cpu_v, n / wall_n, n / wall_v


def run_native_vs_virtual(quick: bool) -> list[Result]:
    out = []
    for mix, n, what in (("blit", 4 if quick else 8, "1080p 32-bit fill + copy"),
                         ("small", 20 if quick else 100, "64 MI_STORE_DATA_IMM")):
        native, virtual, wall_n, wall_v = compare(mix, n, 3 if quick else 8)
        name = "workload_native_vs_virtual" + ("" if mix == "blit" else "_small_commands")
        out.append(Result(name=name, value=virtual, unit="workloads/cpu-s", baseline=native,
                          goal=0.95 if mix == "blit" else None, higher_is_better=True,
                          note=f"{what} per workload; virtual (guest on sim) / native "
                               f"(host context); wall-clock ratio {wall_v / wall_n:.2f}"))
    return out


# --- busy guests -----------------------------------------------------------------------------------


class _Completions:
    """Observer: every completed workload's vGPU and host-clock interval."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[tuple[int, int, int]] = []

    @hookimpl
    def gvt_workload_completed(self, vgpu: Any, engine: str, context_id: int, start_ns: int,
                               end_ns: int, commands: int, result: str, reason: str) -> None:
        if result == "completed":
            with self.lock:
                self.rows.append((vgpu.id, start_ns, end_ns))


#: a busy guest's workload: one 2048x512 32-bit fill on BCS, about 0.42 ms of GPU time.
BUSY_W, BUSY_H = 2048, 512


#: contexts a busy guest keeps in flight: enough that its queue never runs dry while
#: its thread waits for the GIL (GVT queues every ELSP write; a guest's i915 would
#: keep its own software queue full behind two execlist ports). A guest whose queue
#: runs dry is not busy, and the work-conserving scheduler rightly gives its time to
#: the others: with 4 in flight the weight-8 guest ran dry on a slower host and the
#: fairness figure measured that (4-9 pp), not the policy.
BUSY_DEPTH = 12
#: the scaling run's depth: seven guests keep the GPU busy between them with fewer,
#: and twelve each would make the host's figure mostly their polling.
SCALING_DEPTH = 4


def _busy(gpu: GuestGpu, stop: threading.Event, errors: list[BaseException],
          depth: int) -> None:
    """Keep ``depth`` contexts in flight on BCS, refilling each as its breadcrumb lands."""
    try:
        ctxs = [gpu.context(BCS) for _ in range(depth)]
        surfs = [c.ppgtt.alloc(4 * BUSY_W * BUSY_H) for c in ctxs]
        seq = 0

        def refill(c: Any, s: Any) -> None:
            nonlocal seq
            seq += 1
            c.emit(cmd.color_blt(s.gma, 4 * BUSY_W, 0, 0, BUSY_W, BUSY_H, seq))
            gpu.submit(c)

        for c, s in zip(ctxs, surfs, strict=True):
            refill(c, s)
        while not stop.is_set():
            progressed = False
            for c, s in zip(ctxs, surfs, strict=True):
                if c.idle:
                    refill(c, s)
                    progressed = True
            if not progressed:
                gpu.wait(0.02)
    except BaseException as exc:
        errors.append(exc)


def _run_busy(types: list[str], sim_ns: int, policy: str = "time-based",
              depth: int = BUSY_DEPTH
              ) -> tuple[dict[int, int], int, tuple[float, float], dict[int, int]]:
    """Busy guests of ``types`` until the simulated clock passes ``sim_ns``: per vGPU
    GPU time within [0, sim_ns], workloads completed in it, (wall, CPU) seconds
    of the host process, weights."""
    rec = _Completions()
    with Gvt.open("sim", policy=policy) as gvt:
        gvt.backend.add_observer(rec, name="bench-completions")
        gpus = [_guest(gvt, t) for t in types]
        weights = {v.id: v.type.weight for v in gvt.vgpus.values()}
        stop, errors = threading.Event(), []
        threads = [threading.Thread(target=_busy, args=(g, stop, errors, depth)) for g in gpus]
        t0, c0 = time.perf_counter(), time.process_time()
        for t in threads:
            t.start()
        deadline = time.monotonic() + 600
        while gvt.scheduler.clock.now() < sim_ns and not errors:
            if time.monotonic() > deadline:
                raise RuntimeError("the busy guests did not reach the simulated deadline")
            time.sleep(0.005)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        stop.set()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
    owned: dict[int, int] = dict.fromkeys(weights, 0)
    done = 0
    with rec.lock:
        for vid, start, end in rec.rows:
            if start < sim_ns:
                owned[vid] += min(end, sim_ns) - start
                if end <= sim_ns:
                    done += 1
    return owned, done, (wall, cpu), weights


def _deviation_pp(owned: dict[int, int], weights: dict[int, int]) -> float:
    total, wsum = sum(owned.values()), sum(weights.values())
    return max(abs(owned[v] / total - weights[v] / wsum) for v in owned) * 100


def run_fairness(quick: bool) -> list[Result]:
    sim = 200_000_000 if quick else 1_000_000_000
    types = ["GVTg_V4_8", "GVTg_V4_4", "GVTg_V4_2"]
    owned, _, (wall, _cpu), weights = _run_busy(types, sim)
    value = _deviation_pp(owned, weights)
    owned_p, _, _, _ = _run_busy(types, sim // 5, policy="priority")
    baseline = _deviation_pp(owned_p, weights)
    shares = ", ".join(f"w{weights[v]}: {100 * owned[v] / sum(owned.values()):.1f}%"
                       for v in sorted(owned, key=lambda v: weights[v]))
    return [Result(name="scheduler_fairness", value=value, unit="pp", baseline=baseline,
                   goal=2.0, goal_of="value",
                   note=f"{sim / 1e9:g} simulated s ({wall:.1f} s wall): {shares}; "
                        "baseline: strict priority")]


def run_scaling(quick: bool) -> list[Result]:
    sim = 100_000_000 if quick else 500_000_000
    _, one, (wall_one, cpu_one), _ = _run_busy(["GVTg_V4_8"], sim, depth=SCALING_DEPTH)
    _, seven, (wall_seven, cpu_seven), _ = _run_busy(["GVTg_V4_8"] * 7, sim,
                                                     depth=SCALING_DEPTH)
    per_sim_one, per_sim_seven = one / (sim / 1e9), seven / (sim / 1e9)
    wall_ratio = (seven / wall_seven) / (one / wall_one)
    cpu_ratio = (seven / cpu_seven) / (one / cpu_one)
    return [Result(name="scheduler_scaling", value=per_sim_seven, unit="workloads/sim s",
                   baseline=per_sim_one, goal=0.9, higher_is_better=True,
                   note=f"7 busy vGPUs / 1 in GPU (simulated) time; per host CPU second "
                        f"{cpu_ratio:.2f}, per wall-clock second {wall_ratio:.2f} "
                        f"({seven / wall_seven:.0f} vs {one / wall_one:.0f} workloads/s)")]


BENCHMARKS = [
    Benchmark("workload_native_vs_virtual", run_native_vs_virtual),
    Benchmark("scheduler_fairness", run_fairness),
    Benchmark("scheduler_scaling", run_scaling),
]
