"""Isolation property: guests running together end with the memory they would have alone.

Hypothesis draws a workload sequence per guest: stores, batches, post-sync
writes, register round trips, fills and copies on its own buffers, mixed
with hostile commands (GGTT stores and batch starts outside its partition,
unknown opcodes, blits at unmapped addresses, semaphores that never
clear). The guests run concurrently on one host, each from its own
thread; then each runs alone on a fresh host. Every guest's buffers must
end byte-identical in both runs, and the host must never raise (no
internal error in the GPU thread, nothing raised in a guest thread).

The short run is part of the default suite; the long campaign::

    pytest -m long tests/execution/test_isolation_property.py
"""

from __future__ import annotations

import threading
import time
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gvt_core.device.gvt import Gvt
from gvt_core.device.vgpu import Vgpu
from gvt_core.guest import commands as cmd
from gvt_core.guest.driver import GuestDriver
from gvt_core.guest.gpu import GuestBuffer, GuestContext, GuestGpu, GuestPpgtt
from gvt_core.hw import regs
from gvt_core.hw.engine import commands as c

RCS, BCS = regs.ENGINE_RCS, regs.ENGINE_BCS
BUF_SIZE = 2 * regs.GTT_PAGE_SIZE
PITCH = 128  # 32 pixels of 32 bits per row in a blit buffer (64 rows)
#: registers a workload may load and store back (never live or owner-state registers).
SAFE_REGS = {
    RCS: (regs.RENDER_RING_BASE + 0x600, regs.RENDER_RING_BASE + 0x4D0),  # a GPR, FORCE_NONPRIV
    BCS: (regs.BLT_RING_BASE + 0x600, regs.BLT_RING_BASE + 0x28),  # a GPR, RING_EXCC
}
WATCHDOG_NS = 2_000_000

# --- the ops ------------------------------------------------------------------------------------
dwords = st.integers(0, 0xFFFF_FFFF)
offsets = st.integers(0, BUF_SIZE // 4 - 2)
mine = st.integers(0, 1)  # which of the engine's two buffers
rect = st.tuples(st.integers(-4, 40), st.integers(-4, 70), st.integers(0, 40), st.integers(0, 70))

mi_ops = st.one_of(
    st.tuples(st.just("store"), mine, offsets, dwords),
    st.tuples(st.just("store_ggtt"), offsets, dwords),
    st.tuples(st.just("batch"), st.lists(st.tuples(mine, offsets, dwords), max_size=4)),
    st.tuples(st.just("reg"), st.integers(0, 1), dwords, mine, offsets),
    st.tuples(st.just("noop"), st.integers(1, 3)),
)
hostile_ops = st.one_of(
    st.tuples(st.just("ggtt_store_outside"), st.sampled_from(["host", "above", "top"]),
              st.integers(0, 0xFFF0), dwords),
    st.tuples(st.just("bb_outside"), st.sampled_from(["ggtt", "ppgtt"]),
              st.integers(0x4000_0000, 0xFFFF_F000)),
    st.tuples(st.just("bad_command"), st.sampled_from([0x2000_0000, 0x0F80_0000, 0x7F00_0000])),
    st.tuples(st.just("sema_never"), mine, offsets),
)
rcs_ops = st.one_of(mi_ops, mi_ops, st.tuples(st.just("pipe_control"), mine, offsets, dwords),
                    hostile_ops)
bcs_ops = st.one_of(
    mi_ops,
    st.tuples(st.just("fill"), mine, rect, dwords, st.sampled_from([1, 2, 4])),
    st.tuples(st.just("copy"), mine, rect, st.integers(0, 8), st.integers(0, 8)),
    st.tuples(st.just("fill_unmapped"), st.integers(0x4000_0000, 0x7FFF_F000)),
    hostile_ops,
)
workloads = st.lists(
    st.one_of(st.tuples(st.just(RCS), st.lists(rcs_ops, min_size=1, max_size=6)),
              st.tuples(st.just(BCS), st.lists(bcs_ops, min_size=1, max_size=6))),
    min_size=1, max_size=6)


@attrs.define(eq=False)
class Player:
    """One guest and what it owns."""

    vgpu: Vgpu
    gpu: GuestGpu
    ppgtt: GuestPpgtt
    bufs: dict[int, list[GuestBuffer]]
    ggtt_buf: GuestBuffer
    batch: GuestBuffer
    contexts: dict[int, GuestContext]

    def snapshot(self) -> bytes:
        parts = [b.read(0, b.size) for bs in self.bufs.values() for b in bs]
        return b"".join([*parts, self.ggtt_buf.read(0, self.ggtt_buf.size)])


def _player(gvt: Gvt) -> Player:
    vm = gvt.create_vm(32 << 20, name=f"iso{len(gvt.vgpus) + 1}")
    vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
    driver = GuestDriver(vm.port(), fb_width=32, fb_height=16, ring_pages=2)
    driver.load()
    gvt.activate_vgpu(vgpu)
    gpu = GuestGpu(driver)
    ppgtt = gpu.ppgtt(4)
    bufs = {e: [ppgtt.alloc(BUF_SIZE) for _ in range(2)] for e in (RCS, BCS)}
    return Player(vgpu, gpu, ppgtt, bufs, gpu.ggtt_buffer(BUF_SIZE), ppgtt.alloc(4096),
                  {e: gpu.context(e, ppgtt) for e in (RCS, BCS)})


def _encode(p: Player, engine: int, ops: list[Any]) -> list[int]:
    out: list[int] = []
    res = p.vgpu.resources
    bufs = p.bufs[engine]
    batch_words: list[int] = []
    for op in ops:
        kind = op[0]
        if kind == "store":
            out += cmd.store_dword(bufs[op[1]].gma + 4 * op[2], op[3])
        elif kind == "store_ggtt":
            out += cmd.store_dword(p.ggtt_buf.gma + 4 * op[1], op[2], ggtt=True)
        elif kind == "batch":
            start = p.batch.gma + 4 * len(batch_words)
            for which, off, value in op[1]:
                batch_words += cmd.store_dword(bufs[which].gma + 4 * off, value)
            batch_words += cmd.batch_buffer_end()
            out += cmd.batch_buffer_start(start)
        elif kind == "reg":
            reg = SAFE_REGS[engine][op[1]]
            out += cmd.load_register_imm([(reg, op[2])])
            out += cmd.store_register_mem(reg, bufs[op[3]].gma + 4 * op[4])
        elif kind == "noop":
            out += cmd.noop(op[1])
        elif kind == "pipe_control":
            out += cmd.pipe_control(bufs[op[1]].gma + 8 * (op[2] // 2), op[3])
        elif kind == "ggtt_store_outside":
            base = {"host": 0, "above": res.high_gm_end, "top": regs.GM_TOTAL - 0x1_0000}[op[1]]
            out += cmd.store_dword(base + 4 * op[2], op[3], ggtt=True)
        elif kind == "bb_outside":
            out += cmd.batch_buffer_start(op[2], ppgtt=op[1] == "ppgtt")
        elif kind == "bad_command":
            out += [op[1], 0]
        elif kind == "sema_never":  # nothing ever stores the awaited 0: the watchdog fires
            addr = bufs[op[1]].gma + 4 * op[2]
            out += cmd.store_dword(addr, 0xDEAD) + cmd.semaphore_wait(addr, 0, c.SAD_EQUAL_SDD)
        elif kind == "fill":
            _, which, (x, y, w, h), color, cpp = op
            out += cmd.color_blt(bufs[which].gma, PITCH, x, y, x + w, y + h, color, cpp=cpp)
        elif kind == "copy":
            _, which, (x, y, w, h), sx, sy = op
            out += cmd.src_copy_blt(bufs[which].gma, PITCH, x, y, x + w, y + h,
                                    bufs[1 - which].gma, PITCH, sx, sy)
        elif kind == "fill_unmapped":
            out += cmd.color_blt(op[1], PITCH, 0, 0, 4, 4, 0x77)
    if batch_words:
        p.batch.write_dwords(0, batch_words)
    return out


def _play(p: Player, program: list[tuple[int, list[Any]]], errors: list[BaseException]) -> None:
    try:
        ex = p.vgpu.execution
        for engine, ops in program:
            ctx = p.contexts[engine]
            ctx.emit(_encode(p, engine, ops))
            p.gpu.submit(ctx)
            deadline = time.monotonic() + 60
            while not ctx.idle and engine not in ex.hung:
                assert time.monotonic() < deadline, "a workload neither completed nor faulted"
                p.gpu.wait(0.01)
            if engine in ex.hung:
                p.gpu.reset_engine(engine)
                p.contexts[engine] = p.gpu.context(engine, p.ppgtt)
    except BaseException as exc:
        errors.append(exc)


def _host() -> Gvt:
    gvt = Gvt.open("sim")
    gvt.scheduler.watchdog_ns = WATCHDOG_NS
    return gvt


def check_isolation(programs: list[list[tuple[int, list[Any]]]]) -> None:
    errors: list[BaseException] = []
    together = _host()
    try:
        players = [_player(together) for _ in programs]
        threads = [threading.Thread(target=_play, args=(p, prog, errors))
                   for p, prog in zip(players, programs, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert together.scheduler.stats.internal_errors == 0, together.scheduler.last_error
        shared = [p.snapshot() for p in players]
    finally:
        together.close()
    for prog, want in zip(programs, shared, strict=True):
        alone = _host()
        try:
            p = _player(alone)
            _play(p, prog, errors)
            assert not errors, errors
            assert alone.scheduler.stats.internal_errors == 0, alone.scheduler.last_error
            assert p.snapshot() == want
        finally:
            alone.close()


_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                         HealthCheck.data_too_large])


@settings(max_examples=8, **_SETTINGS)  # type: ignore[arg-type]
@given(st.lists(workloads, min_size=2, max_size=3))
def test_guests_together_end_as_they_would_alone(programs: list[Any]) -> None:
    check_isolation(programs)


@pytest.mark.long
@settings(max_examples=300, **_SETTINGS)  # type: ignore[arg-type]
@given(st.lists(workloads, min_size=2, max_size=3))
def test_guests_together_end_as_they_would_alone_long(programs: list[Any]) -> None:
    check_isolation(programs)
