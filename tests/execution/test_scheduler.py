"""The scheduler, workloads, resets and the prepare pipeline, end to end on the sim backend."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from gvt_core.device.execution import workload as workload_mod
from gvt_core.device.execution.stages import PrepareJob
from gvt_core.device.execution.submission import MAX_QUEUED_PER_ENGINE
from gvt_core.device.execution.workload import Workload
from gvt_core.device.gvt import Gvt
from gvt_core.device.vgpu import Vgpu
from gvt_core.errors import WorkloadRejectedError
from gvt_core.guest import commands as cmd
from gvt_core.guest.driver import GuestDriver
from gvt_core.guest.gpu import GuestGpu
from gvt_core.hw import regs
from gvt_core.hw.engine import context as lrc
from gvt_core.hw.engine.engine import Engine
from gvt_core.mpt import hookimpl

RCS, BCS = regs.ENGINE_RCS, regs.ENGINE_BCS
TIMEOUT = 20.0


@attrs.define(eq=False)
class G:
    vm: Any
    vgpu: Vgpu
    driver: GuestDriver
    gpu: GuestGpu


class Recorder:
    def __init__(self) -> None:
        self.submitted: list[tuple[int, str, int]] = []
        self.completed: list[dict[str, Any]] = []
        self.scheduled: list[tuple[int, int, int]] = []

    @hookimpl
    def gvt_workload_submitted(self, vgpu: Any, engine: str, context_id: int,
                               time_ns: int) -> None:
        self.submitted.append((vgpu.id, engine, context_id))

    @hookimpl
    def gvt_workload_completed(self, vgpu: Any, engine: str, context_id: int, start_ns: int,
                               end_ns: int, commands: int, result: str, reason: str) -> None:
        self.completed.append(dict(vgpu=vgpu.id, engine=engine, ctx=context_id, start=start_ns,
                                   end=end_ns, commands=commands, result=result, reason=reason))

    @hookimpl
    def gvt_vgpu_scheduled(self, prev_id: int, next_id: int, time_ns: int) -> None:
        self.scheduled.append((prev_id, next_id, time_ns))


def _open(**kw: Any) -> tuple[Gvt, Recorder]:
    gvt = Gvt.open("sim", **kw)
    rec = Recorder()
    gvt.backend.add_observer(rec, name="recorder")
    return gvt, rec


@pytest.fixture
def host() -> Iterator[tuple[Gvt, Recorder]]:
    gvt, rec = _open()
    yield gvt, rec
    gvt.close()


def make_guest(gvt: Gvt, type_name: str | None = None, *, activate: bool = True,
               mem: int = 64 << 20) -> G:
    vm = gvt.create_vm(mem, name=f"sched{len(gvt.vgpus) + 1}")
    vgpu = gvt.create_vgpu(type_name or gvt.smallest_type, vm)
    driver = GuestDriver(vm.port(), fb_width=64, fb_height=32)
    driver.load()
    if activate:
        gvt.activate_vgpu(vgpu)
    return G(vm, vgpu, driver, GuestGpu(driver))


def _until(pred: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _big_fills(gma: int, n: int) -> list[int]:
    """``n`` full-screen fills of a 512x512 surface: 0.1 ms of GPU time each."""
    out: list[int] = []
    for i in range(n):
        out += cmd.color_blt(gma, 2048, 0, 0, 512, 512, i)
    return out


def test_the_owner_switches_only_when_its_workloads_are_done(host: Any) -> None:
    gvt, rec = host
    a, b = make_guest(gvt), make_guest(gvt)
    ca, cb = a.gpu.context(BCS), b.gpu.context(BCS)
    sa, sb = ca.ppgtt.alloc(2048 * 512), cb.ppgtt.alloc(2048 * 512)
    ca.emit(_big_fills(sa.gma, 30))  # ~3 ms of GPU time: longer than a tick
    cb.emit(_big_fills(sb.gma, 2))
    a.gpu.submit(ca)
    b.gpu.submit(cb)
    a.gpu.wait_complete([ca], TIMEOUT)
    b.gpu.wait_complete([cb], TIMEOUT)
    done = {r["vgpu"]: r for r in rec.completed}
    first, second = sorted(done.values(), key=lambda r: r["start"])
    assert second["start"] >= first["end"]  # never two owners at once
    assert first["end"] - first["start"] > regs.MiB  # it really spanned several ticks (ns)
    assert any(n == b.vgpu.id for _, n, _ in rec.scheduled)
    assert rec.submitted == [(a.vgpu.id, "bcs", ca.context_id), (b.vgpu.id, "bcs", cb.context_id)]
    assert {r["result"] for r in rec.completed} == {"completed"}


def test_mmio_context_switch_follows_the_owner(host: Any) -> None:
    gvt, _ = host
    a, b = make_guest(gvt), make_guest(gvt)
    base = regs.RENDER_RING_BASE
    nonpriv = base + 0x4D0  # RING_FORCE_TO_NONPRIV(0): switched
    excc = base + 0x28  # RING_EXCC(RCS): not switched, back to the host's value at a change
    # values FORCE_NONPRIV accepts (whitelisted registers: GEN9_CTX_PREEMPT_REG, PS counter)
    first, second = 0x2248, 0x2348
    ca, cb = a.gpu.context(RCS), b.gpu.context(RCS)
    oa, ob = ca.ppgtt.alloc(4096), cb.ppgtt.alloc(4096)
    a.gpu.mmio_write(nonpriv, first)  # through MMIO: the vreg
    a.gpu.run(ca, cmd.store_register_mem(nonpriv, oa.gma)
              + cmd.load_register_imm([(nonpriv, second), (excc, 0x3333)]), TIMEOUT)
    b.gpu.run(cb, cmd.store_register_mem(nonpriv, ob.gma)
              + cmd.store_register_mem(excc, ob.gma + 4), TIMEOUT)
    a.gpu.run(ca, cmd.store_register_mem(nonpriv, oa.gma + 4), TIMEOUT)
    assert oa.read_dwords(0, 2) == (first, second)  # its own value, before and after B ran
    assert ob.read_dwords(0, 2) == (0, 0)  # B sees neither A's FORCE_NONPRIV nor its EXCC
    # A's value was saved into its virtual register when B took the engine
    assert a.gpu.mmio_read(nonpriv) == second
    assert gvt.scheduler.ownership[RCS].switches >= 3


def test_watchdog_preempts_a_long_workload(host: Any) -> None:
    gvt, rec = host
    gvt.scheduler.watchdog_ns = 1_000_000
    g = make_guest(gvt)
    ctx = g.gpu.context(BCS)
    surf = ctx.ppgtt.alloc(2048 * 512)
    ctx.emit(_big_fills(surf.gma, 30))
    g.gpu.submit(ctx)
    _until(lambda: bool(g.vgpu.execution.faults), "the watchdog")
    assert g.vgpu.execution.faults[0].reason.startswith("watchdog")
    assert rec.completed[-1]["result"] == "failed"
    assert 0 < rec.completed[-1]["commands"] < 30


def test_queue_bound_refuses_a_flood_of_submissions(host: Any) -> None:
    gvt, _ = host
    g = make_guest(gvt, activate=False)  # nothing runs: everything stays queued
    ctxs = [g.gpu.context(RCS) for _ in range(MAX_QUEUED_PER_ENGINE // 2 + 1)]
    for c in ctxs[:-1]:
        c.emit(cmd.noop(2))
        g.gpu.submit(c, c)
    assert g.vgpu.execution.pending() == MAX_QUEUED_PER_ENGINE
    ctxs[-1].emit(cmd.noop(2))
    g.gpu.submit(ctxs[-1])
    assert "workloads already queued" in g.vgpu.execution.faults[-1].reason
    assert g.vgpu.execution.pending() == 0  # the faulting engine's queue is dropped


def test_engine_reset_drops_only_that_engines_work(host: Any) -> None:
    gvt, rec = host
    g = make_guest(gvt, activate=False)
    r, b = g.gpu.context(RCS), g.gpu.context(BCS)
    out_r, out_b = r.ppgtt.alloc(4096), b.ppgtt.alloc(4096)
    r.emit(cmd.store_dword(out_r.gma, 1))
    b.emit(cmd.store_dword(out_b.gma, 2))
    g.gpu.submit(r)
    g.gpu.submit(b)
    g.gpu.reset_engine(RCS)
    assert g.vgpu.execution.queues[RCS] == type(g.vgpu.execution.queues[RCS])()
    assert len(g.vgpu.execution.queues[BCS]) == 1
    assert [x["result"] for x in rec.completed] == ["dropped"]
    gvt.activate_vgpu(g.vgpu)
    g.gpu.wait_complete([b], TIMEOUT)
    assert out_b.read_dwords(0, 1) == (2,) and out_r.read_dwords(0, 1) == (0,)


def test_dmlr_and_failsafe_drop_everything(host: Any) -> None:
    gvt, _ = host
    g = make_guest(gvt, activate=False)
    c = g.gpu.context(RCS)
    c.emit(cmd.noop(2))
    g.gpu.submit(c)
    held = gvt.gpu.host_gm.in_use()
    assert held > 0
    gvt.reset_vgpu(g.vgpu, dmlr=True)
    assert g.vgpu.execution.pending() == 0 and gvt.gpu.host_gm.in_use() == 0
    ptr = g.vgpu.mmio.get32(regs.RENDER_RING_BASE + regs.RING_CONTEXT_STATUS_PTR)
    assert ptr & regs.CSB_WRITE_PTR_MASK == regs.CSB_PTR_RESET
    h = make_guest(gvt, activate=False)
    d = h.gpu.context(RCS)
    d.emit(cmd.noop(2))
    h.gpu.submit(d)
    h.vgpu.enter_failsafe("test")
    assert h.vgpu.execution.pending() == 0


def test_deactivated_vgpu_finishes_what_runs_and_starts_nothing(host: Any) -> None:
    gvt, _ = host
    g = make_guest(gvt)
    c1, c2 = g.gpu.context(BCS), g.gpu.context(BCS)
    s1, s2 = c1.ppgtt.alloc(2048 * 512), c2.ppgtt.alloc(4096)
    c1.emit(_big_fills(s1.gma, 20))
    c2.emit(cmd.store_dword(s2.gma, 5))
    g.gpu.submit(c1)
    _until(lambda: bool(gvt.scheduler.running), "the first workload to start")
    gvt.deactivate_vgpu(g.vgpu)
    g.gpu.submit(c2)
    g.gpu.wait_complete([c1], TIMEOUT)
    time.sleep(0.05)
    assert not c2.idle and s2.read_dwords(0, 1) == (0,)
    gvt.activate_vgpu(g.vgpu)
    g.gpu.wait_complete([c2], TIMEOUT)
    assert s2.read_dwords(0, 1) == (5,)


@attrs.define(eq=False)
class AuditStage:
    """A stage in the scanner's place: rewrites or refuses, and is told when each ends."""

    name: str = "test-audit"
    mode: str = "patch"
    seen: list[int] = attrs.field(factory=list)
    finished: list[int] = attrs.field(factory=list)

    def prepare(self, job: PrepareJob) -> None:
        w = job.workload
        self.seen.append(w.id)
        if self.mode == "refuse":
            raise WorkloadRejectedError("test audit refused it", unhealthy=True)
        if self.mode == "greedy":
            job.shadow_block(1 << 12)  # 16 MiB of shadow copies
        # patch the value of the first MI_STORE_DATA_IMM in the shadow ring
        off = w.rb_head
        dwords = job.shadow_ring.read(off, 16)
        assert int.from_bytes(dwords[:4], "little") >> 23 == 0x20
        job.shadow_ring.write(off + 12, (0xFEED).to_bytes(4, "little"))
        job.shadow_block(1)  # host memory a scanner would hold, freed with the workload

    def finish(self, workload: Workload) -> None:
        self.finished.append(workload.id)


def test_an_audit_stage_sees_and_rewrites_what_runs(host: Any) -> None:
    gvt, _ = host
    stage = AuditStage()
    gvt.scheduler.pipeline.audit.append(stage)
    g = make_guest(gvt)
    c = g.gpu.context(RCS)
    out = c.ppgtt.alloc(4096)
    c.emit(cmd.store_dword(out.gma, 1))
    g.gpu.submit(c)
    # the guest rewrites its ring after the ELSP write: too late, the section was taken
    g.gpu.port.mem_write(c.ring.gpa + 12, (2).to_bytes(4, "little"))
    g.gpu.wait_complete([c], TIMEOUT)
    assert out.read_dwords(0, 1) == (0xFEED,)
    assert stage.seen == stage.finished and len(stage.seen) == 1
    assert gvt.gpu.host_gm.in_use() == 0


def test_an_audit_stage_that_refuses_puts_an_unhealthy_vgpu_in_failsafe(host: Any) -> None:
    gvt, rec = host
    gvt.scheduler.pipeline.audit.append(AuditStage(mode="refuse"))
    g = make_guest(gvt)
    c = g.gpu.context(RCS)
    out = c.ppgtt.alloc(4096)
    c.emit(cmd.store_dword(out.gma, 1))
    g.gpu.submit(c)
    _until(lambda: g.vgpu.failsafe, "failsafe")
    assert out.read_dwords(0, 1) == (0,)
    assert rec.completed[-1]["reason"] == "test audit refused it"


def test_shadow_copies_of_a_stage_count_against_the_budget(
        host: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gvt, _ = host
    monkeypatch.setattr(workload_mod, "MAX_SHADOW_GM_PER_VGPU", 8 << 20)
    gvt.scheduler.pipeline.audit.append(AuditStage(mode="greedy"))
    g = make_guest(gvt)
    c = g.gpu.context(RCS)
    c.emit(cmd.noop(2))
    g.gpu.submit(c)
    _until(lambda: bool(g.vgpu.execution.faults), "the rejection")
    assert "shadow copies would hold" in g.vgpu.execution.faults[0].reason
    assert not g.vgpu.failsafe and gvt.gpu.host_gm.in_use() == 0


def test_shadow_memory_is_bounded_per_vgpu(host: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gvt, _ = host
    monkeypatch.setattr(workload_mod, "MAX_SHADOW_GM_PER_VGPU", 64 * 1024)
    g = make_guest(gvt, activate=False)
    ctxs = [g.gpu.context(RCS, ring_pages=8) for _ in range(3)]  # 32 KiB rings
    for c in ctxs:
        c.emit(cmd.noop(2))
        g.gpu.submit(c)
    assert "shadow rings would hold" in g.vgpu.execution.faults[-1].reason


def test_an_internal_error_fails_one_workload_and_the_gpu_runs_on(
        host: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gvt, rec = host
    g = make_guest(gvt)
    original = Engine.run
    calls = {"n": 0}

    def broken(self: Engine, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected bug")
        return original(self, *args)

    monkeypatch.setattr(Engine, "run", broken)
    c = g.gpu.context(RCS)
    c.emit(cmd.noop(2))
    g.gpu.submit(c)
    _until(lambda: gvt.scheduler.stats.internal_errors == 1, "the internal error")
    assert rec.completed[-1]["result"] == "failed"
    assert "injected bug" in gvt.scheduler.last_error
    g.gpu.reset_engine(RCS)
    fresh = g.gpu.context(RCS)
    out = fresh.ppgtt.alloc(4096)
    g.gpu.run(fresh, cmd.store_dword(out.gma, 9), TIMEOUT)
    assert out.read_dwords(0, 1) == (9,) and gvt.scheduler.alive


def test_nothing_acts_for_a_destroyed_vgpu(host: Any) -> None:
    gvt, rec = host
    a, b = make_guest(gvt), make_guest(gvt)
    ca, cb = a.gpu.context(BCS), b.gpu.context(BCS)
    sa, sb = ca.ppgtt.alloc(2048 * 512), cb.ppgtt.alloc(2048 * 512)
    ca.emit(_big_fills(sa.gma, 20))
    cb.emit(_big_fills(sb.gma, 20))
    a.gpu.submit(ca)
    b.gpu.submit(cb)
    a_id = a.vgpu.id
    gvt.destroy_vgpu(a.vgpu)
    n = len([r for r in rec.completed if r["vgpu"] == a_id])
    b.gpu.wait_complete([cb], TIMEOUT)
    assert len([r for r in rec.completed if r["vgpu"] == a_id]) == n
    assert all(nxt != a_id for _, nxt, _t in rec.scheduled[-3:])
    assert a_id not in gvt.scheduler.subs and gvt.scheduler.alive


def test_real_clock_and_priority_policy(tmp_path: Any) -> None:
    gvt, _rec = _open(clock="real", policy="priority")
    try:
        g = make_guest(gvt)
        c = g.gpu.context(RCS)
        out = c.ppgtt.alloc(4096)
        g.gpu.run(c, cmd.store_dword(out.gma, 3), TIMEOUT)
        assert out.read_dwords(0, 1) == (3,)
        assert g.vgpu.execution.stats.gpu_time_ns > 0
        assert gvt.scheduler.clock.name == "real" and gvt.scheduler.policy.name == "priority"
    finally:
        gvt.close()
    assert not gvt.scheduler.alive


def test_context_write_back_reaches_the_guest_image(host: Any) -> None:
    gvt, _ = host
    g = make_guest(gvt)
    c = g.gpu.context(RCS)
    g.gpu.run(c, cmd.noop(6), TIMEOUT)
    image = c.lrc.read(regs.GTT_PAGE_SIZE, lrc.RING_CTX_SIZE)
    head = int.from_bytes(image[4 * (lrc.CTX_RING_HEAD + 1):][:4], "little")
    stamp = int.from_bytes(image[4 * (lrc.CTX_CTX_TIMESTAMP + 1):][:4], "little")
    assert head == c.tail and stamp > 0


class _Broken:
    @hookimpl
    def gvt_workload_completed(self, **kwargs: Any) -> None:
        raise RuntimeError("observer bug")

    @hookimpl
    def gvt_workload_submitted(self, **kwargs: Any) -> None:
        raise RuntimeError("observer bug")


def test_a_raising_observer_breaks_nothing(host: Any) -> None:
    gvt, _ = host
    gvt.backend.add_observer(_Broken(), name="broken")
    g = make_guest(gvt)
    c = g.gpu.context(RCS)
    out = c.ppgtt.alloc(4096)
    g.gpu.run(c, cmd.store_dword(out.gma, 4), TIMEOUT)
    assert out.read_dwords(0, 1) == (4,)
    assert gvt.scheduler.stats.observer_errors >= 2 and gvt.scheduler.stats.internal_errors == 0


# --- the command scanner in the pipeline ----------------------------------------------------------


def test_a_pipeline_without_the_scanner_runs_nothing(host: Any) -> None:
    gvt, _ = host
    gvt.scheduler.pipeline.audit.clear()
    g = make_guest(gvt)
    c = g.gpu.context(RCS)
    out = c.ppgtt.alloc(4096)
    c.emit(cmd.store_dword(out.gma, 1))
    g.gpu.submit(c)
    _until(lambda: bool(g.vgpu.execution.faults), "the refusal")
    assert "no command scanner" in g.vgpu.execution.faults[0].reason
    assert out.read_dwords(0, 1) == (0,) and not g.vgpu.failsafe


def test_shadow_batches_count_against_the_vgpus_budget(
        host: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gvt, _ = host
    g = make_guest(gvt)
    c = g.gpu.context(RCS)  # a 4-page ring: 16 KiB of shadow ring
    batches = [c.ppgtt.alloc(4096) for _ in range(4)]
    ring: list[int] = []
    for b in batches:
        b.write_dwords(0, cmd.noop(2) + cmd.batch_buffer_end())
        ring += cmd.batch_buffer_start(b.gma)
    monkeypatch.setattr(workload_mod, "MAX_SHADOW_GM_PER_VGPU", 16 * 1024 + 2 * 4096)
    c.emit(ring)
    g.gpu.submit(c)
    _until(lambda: bool(g.vgpu.execution.faults), "the rejection")
    assert g.vgpu.execution.faults[0].reason.startswith("shadow-alloc-failed")
    assert not g.vgpu.failsafe  # -ENOMEM: the engine hangs, the vGPU stays healthy
    assert gvt.gpu.host_gm.in_use() == 0
    # with room, the same workload runs and gives everything back
    monkeypatch.setattr(workload_mod, "MAX_SHADOW_GM_PER_VGPU", 32 << 20)
    g.gpu.reset_engine(RCS)
    fresh = g.gpu.context(RCS, c.ppgtt)
    g.gpu.run(fresh, ring, TIMEOUT)
    assert g.vgpu.execution.scanner.counters.batches_shadowed == 4
    assert gvt.gpu.host_gm.in_use() == 0


def test_workaround_batches_are_cleared_in_the_shadow_context(host: Any) -> None:
    """The engines do not run a context's per-context / indirect workaround batches; the
    shadow context names none, so nothing unscanned could ever be started from there."""
    gvt, _ = host
    seen: list[bytes] = []

    class Peek:
        name = "peek"

        def prepare(self, job: PrepareJob) -> None:
            pass

        def finish(self, w: Workload) -> None:
            if w.shadow_state is not None:
                seen.append(bytes(w.shadow_state[1][: lrc.RING_CTX_SIZE]))

    gvt.scheduler.pipeline.audit.append(Peek())
    g = make_guest(gvt)
    c = g.gpu.context(RCS)
    for index in (lrc.CTX_BB_PER_CTX_PTR, lrc.CTX_RCS_INDIRECT_CTX):
        c.lrc.write(regs.GTT_PAGE_SIZE + 4 * (index + 1), (0x1000 | 1).to_bytes(4, "little"))
    g.gpu.run(c, cmd.noop(2), TIMEOUT)
    assert seen
    for index in (lrc.CTX_BB_PER_CTX_PTR, lrc.CTX_RCS_INDIRECT_CTX):
        assert int.from_bytes(seen[0][4 * (index + 1):][:4], "little") == 0


def test_a_guest_sees_one_gpu_clock_from_its_engines_and_its_mmio_reads(host: Any) -> None:
    """PIPE_CONTROL's timestamp and a CPU read of RING_TIMESTAMP count the same ticks."""
    gvt, _ = host
    g = make_guest(gvt)
    ctx = g.gpu.context(RCS)
    out = ctx.ppgtt.alloc(4096)
    ts = regs.RENDER_RING_BASE + regs.RING_TIMESTAMP
    before = g.gpu.mmio_read(ts)
    ctx.emit(cmd.pipe_control(out.gma, timestamp=True))
    g.gpu.submit(ctx)
    g.gpu.wait_complete([ctx], TIMEOUT)
    written = out.read_dwords(0, 1)[0]
    after = g.gpu.mmio_read(ts)
    assert before <= written <= after
    assert after == gvt.clock.now() // 80 & 0xFFFF_FFFF
