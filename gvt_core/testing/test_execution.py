"""Scenario suite, execution: guests submit work through ELSP and see it done, on every backend.

Each guest is the guest-driver model over the backend's GuestPort: it loads
its driver, switches its engines to execlist mode, builds contexts with
their own PPGTTs and submits them through ELSP; the host's software engines
execute the work; the guest waits for the context-switch MSI and reads the
CSB from its status page. Results are checked in guest memory; faults in
the vGPU's fault log. Run on a backend with::

    pytest --pyargs gvt_core.testing --gvt-backend NAME
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from gvt_core.device.gvt import Gvt
from gvt_core.device.vgpu import Vgpu
from gvt_core.errors import GuestDriverError
from gvt_core.guest import commands as cmd
from gvt_core.guest.driver import GuestDriver
from gvt_core.guest.gpu import (
    CSB_ACTIVE_TO_IDLE,
    CSB_CONTEXT_COMPLETE,
    CSB_ELEMENT_SWITCH,
    CSB_IDLE_TO_ACTIVE,
    GuestContext,
    GuestGpu,
)
from gvt_core.guest.port import GuestVm
from gvt_core.hw import regs
from gvt_core.hw.engine import context as lrc
from gvt_core.testing.guests import release_guests, wait_faults
from gvt_core.testing.test_scenarios import GUEST_MEM, gvt_host  # noqa: F401  (fixture)

RCS, BCS = regs.ENGINE_RCS, regs.ENGINE_BCS
FB_W, FB_H = 64, 32
#: how long a guest waits for its GPU before it concludes the engine hung.
TIMEOUT = 20.0


@attrs.define(eq=False)
class ExecGuest:
    vm: GuestVm
    vgpu: Vgpu
    driver: GuestDriver
    gpu: GuestGpu


@pytest.fixture
def exec_guest(gvt_host: Gvt) -> Iterator[Callable[..., ExecGuest]]:  # noqa: F811
    """Factory: a guest with a loaded driver, an active vGPU and execlists on RCS and BCS."""
    vms: list[GuestVm] = []

    def make(type_name: str | None = None) -> ExecGuest:
        vm = gvt_host.create_vm(GUEST_MEM, name=f"exec{len(vms) + 1}")
        vms.append(vm)
        vgpu = gvt_host.create_vgpu(type_name or gvt_host.smallest_type, vm)
        driver = GuestDriver(vm.port(), fb_width=FB_W, fb_height=FB_H)
        driver.load()
        gvt_host.activate_vgpu(vgpu)
        return ExecGuest(vm, vgpu, driver, GuestGpu(driver))

    yield make
    release_guests(gvt_host, vms)


def test_store_dword_and_chained_batches_land_in_guest_memory(exec_guest: Any) -> None:
    g: ExecGuest = exec_guest()
    ctx = g.gpu.context(RCS, levels=4)
    out = ctx.ppgtt.alloc(4096)
    second = ctx.ppgtt.alloc(4096)
    chained = ctx.ppgtt.alloc(4096)
    first = ctx.ppgtt.alloc(4096)
    ggtt_batch = g.gpu.ggtt_buffer(4096)
    ggtt_out = g.gpu.ggtt_buffer(4096)
    # a second-level batch, called from the first level
    second.write_dwords(0, cmd.store_dword(out.gma + 8, 0x2222) + cmd.batch_buffer_end())
    # the first level stores, calls the second level, stores again and chains on
    first.write_dwords(0, cmd.store_dword(out.gma + 4, 0x1111)
                       + cmd.batch_buffer_start(second.gma, second_level=True)
                       + cmd.store_dword(out.gma + 12, 0x3333)
                       + cmd.batch_buffer_start(chained.gma))
    chained.write_dwords(0, cmd.store_qword(out.gma + 16, 0x5555_0000_4444)
                         + cmd.batch_buffer_end())
    # a privileged batch in the GGTT writes through the GGTT
    ggtt_batch.write_dwords(0, cmd.store_dword(ggtt_out.gma, 0x6666, ggtt=True)
                            + cmd.batch_buffer_end())
    g.gpu.run(ctx, cmd.store_dword(out.gma, 0x1000)
              + cmd.batch_buffer_start(first.gma)
              + cmd.batch_buffer_start(ggtt_batch.gma, ppgtt=False)
              + cmd.store_dword(out.gma + 24, 0x7777), TIMEOUT)
    assert out.read_dwords(0, 7) == (0x1000, 0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x7777)
    assert ggtt_out.read_dwords(0, 1) == (0x6666,)
    assert ctx.head == ctx.tail  # the hardware wrote back where it stopped
    st = g.vgpu.execution.stats
    assert (st.workloads_completed, st.workloads_failed) == (1, 0)


def test_blits_fill_and_copy_a_guest_surface(exec_guest: Any) -> None:
    g: ExecGuest = exec_guest()
    ctx = g.gpu.context(BCS, levels=3)
    w, h, pitch = 96, 40, 96 * 4 + 64  # a pitch wider than the rows
    src = ctx.ppgtt.alloc(pitch * h)
    dst = ctx.ppgtt.alloc(pitch * h)
    g.gpu.run(ctx, cmd.color_blt(src.gma, pitch, 0, 0, w, h, 0x11223344)
              + cmd.color_blt(src.gma, pitch, 10, 5, 20, 15, 0xAABBCCDD)
              + cmd.src_copy_blt(dst.gma, pitch, 8, 2, 8 + 30, 2 + 20, src.gma, pitch, 0, 0)
              + cmd.color_blt(src.gma, pitch, 0, 0, w, h, 0x55, cpp=1, clip=True)
              + cmd.setup_clip_blt(0, 0, 4, 4)
              + cmd.color_blt(dst.gma, pitch, 0, 0, w, h, 0x99887766, clip=True)
              + cmd.flush_dw(), TIMEOUT)

    def px(buf: Any, x: int, y: int) -> int:
        return struct.unpack("<I", buf.read(y * pitch + 4 * x, 4))[0]

    # the copy: the source's fill and its rectangle, moved by (8, 2)
    assert px(dst, 8 + 10, 2 + 5) == 0xAABBCCDD and px(dst, 8 + 19, 2 + 14) == 0xAABBCCDD
    assert px(dst, 8 + 9, 2 + 5) == 0x11223344 and px(dst, 8 + 29, 2 + 19) == 0x11223344
    assert px(dst, 8 + 30, 2) == 0 and px(dst, 7, 2) == 0  # outside the copied rectangle
    assert px(dst, 3, 3) == 0x99887766 and px(dst, 4, 3) == 0  # clipped to (0,0)-(4,4)
    # the 8 bpp fill covered the first w bytes of each row only
    assert src.read(0, w) == b"\x55" * w and src.read(w, 4) == bytes.fromhex("44332211")
    assert dst.read(w * 4, pitch - w * 4) == bytes(pitch - w * 4)  # past the row: untouched


def test_several_contexts_per_guest_with_their_own_ppgtts(exec_guest: Any) -> None:
    g: ExecGuest = exec_guest()
    ctxs = [g.gpu.context(RCS, levels=lv) for lv in (4, 3, 4, 3)]
    bufs = [c.ppgtt.alloc(4096) for c in ctxs]
    assert len({c.ppgtt.roots for c in ctxs}) == 4
    # the same graphics address in each PPGTT: each context reaches its own page
    assert len({b.gma for b in bufs}) == 1
    for i, (c, b) in enumerate(zip(ctxs, bufs, strict=True)):
        c.emit(cmd.store_dword(b.gma, 0xC0 + i))
    g.gpu.submit(ctxs[0], ctxs[1])
    g.gpu.submit(ctxs[2], ctxs[3])
    g.gpu.wait_complete(ctxs, TIMEOUT)
    assert [b.read_dwords(0, 1)[0] for b in bufs] == [0xC0, 0xC1, 0xC2, 0xC3]


def test_csb_reports_the_execlist_events_in_order(exec_guest: Any) -> None:
    g: ExecGuest = exec_guest()
    a, b = g.gpu.context(RCS), g.gpu.context(RCS)
    out = a.ppgtt.alloc(4096)
    a.emit(cmd.store_dword(out.gma, 1))
    b.emit(cmd.noop(2))
    msis = g.gpu.msis
    g.gpu.submit(a, b)
    g.gpu.wait_complete([a, b], TIMEOUT)
    evs = [(e.status, e.context_id) for e in g.gpu.events if e.engine == RCS]
    assert evs == [
        (CSB_IDLE_TO_ACTIVE, 0),
        (CSB_CONTEXT_COMPLETE | CSB_ELEMENT_SWITCH, a.context_id),
        (CSB_CONTEXT_COMPLETE | CSB_ACTIVE_TO_IDLE, b.context_id),
    ]
    # the MMIO CSB holds the same entries as the status-page mirror
    base = regs.RENDER_RING_BASE
    ptr = g.gpu.mmio_read(base + regs.RING_CONTEXT_STATUS_PTR)
    assert ptr & regs.CSB_WRITE_PTR_MASK == 2 and (ptr >> 8) & 0x7 == 2
    mmio = [(g.gpu.mmio_read(base + regs.RING_CONTEXT_STATUS_BUF + 8 * i),
             g.gpu.mmio_read(base + regs.RING_CONTEXT_STATUS_BUF + 8 * i + 4)) for i in range(3)]
    assert mmio == evs
    status = g.gpu.mmio_read(base + regs.RING_EXECLIST_STATUS)
    assert status & 0b11000 == 0  # no execlist valid: the engine is idle
    # the context-switch interrupt reached the guest (taken already, or pending now)
    assert g.gpu.msis > msis or g.gpu.port.wait_msi(TIMEOUT) is not None


def test_an_msi_per_completion(exec_guest: Any) -> None:
    g: ExecGuest = exec_guest()
    ctx = g.gpu.context(BCS)
    surf = ctx.ppgtt.alloc(4096)
    for i in range(4):
        before = g.gpu.msis
        g.gpu.run(ctx, cmd.color_blt(surf.gma, 64, 0, 0, 16, 1, i), TIMEOUT)
        assert g.gpu.msis > before or g.gpu.port.wait_msi(TIMEOUT) is not None
    assert g.vgpu.irq.counters.injected >= 4
    assert g.gpu.completed[ctx.context_id] == 4


def test_two_guests_interleaved(exec_guest: Any) -> None:
    a: ExecGuest = exec_guest()
    b: ExecGuest = exec_guest()
    ca, cb = a.gpu.context(RCS), b.gpu.context(RCS)
    ba, bb = ca.ppgtt.alloc(4096), cb.ppgtt.alloc(4096)
    for i in range(6):
        ca.emit(cmd.store_dword(ba.gma + 4 * i, 0xA0 + i))
        cb.emit(cmd.store_dword(bb.gma + 4 * i, 0xB0 + i))
        a.gpu.submit(ca)
        b.gpu.submit(cb)
        a.gpu.wait_complete([ca], TIMEOUT)
        b.gpu.wait_complete([cb], TIMEOUT)
    assert ba.read_dwords(0, 6) == tuple(0xA0 + i for i in range(6))
    assert bb.read_dwords(0, 6) == tuple(0xB0 + i for i in range(6))
    assert ba.gma == bb.gma  # same addresses, different guests, different pages


def _hang_then_reset(g: ExecGuest, ctx: GuestContext) -> None:
    g.gpu.reset_engine(ctx.engine)
    assert ctx.engine not in g.vgpu.execution.hung


def test_engine_reset_after_a_self_jumping_batch(exec_guest: Any) -> None:
    g: ExecGuest = exec_guest()
    ctx = g.gpu.context(RCS)
    loop = ctx.ppgtt.alloc(4096)
    loop.write_dwords(0, cmd.batch_buffer_start(loop.gma))
    ctx.emit(cmd.batch_buffer_start(loop.gma))
    g.gpu.submit(ctx)
    faults = wait_faults(g.vgpu, 1, TIMEOUT)
    assert faults[0].reason.startswith("watchdog")
    assert g.gpu.completed.get(ctx.context_id, 0) == 0
    assert g.vgpu.execution.stats.watchdog_resets == 1
    # the guest resets the engine and uses a fresh context
    _hang_then_reset(g, ctx)
    fresh = g.gpu.context(RCS)
    out = fresh.ppgtt.alloc(4096)
    g.gpu.run(fresh, cmd.store_dword(out.gma, 0xF00D), TIMEOUT)
    assert out.read_dwords(0, 1) == (0xF00D,)


def _lrc_patch(ctx: GuestContext, index: int, value: int) -> None:
    ctx.lrc.write(regs.GTT_PAGE_SIZE + 4 * (index + 1), struct.pack("<I", value))


HOSTILE: dict[str, Callable[[ExecGuest, GuestContext], None]] = {}


def _hostile(name: str) -> Callable[[Callable[[ExecGuest, GuestContext], None]],
                                    Callable[[ExecGuest, GuestContext], None]]:
    def deco(fn: Callable[[ExecGuest, GuestContext], None]) -> Any:
        HOSTILE[name] = fn
        return fn

    return deco


@_hostile("bad LRCA")
def _bad_lrca(g: ExecGuest, ctx: GuestContext) -> None:
    res = g.vgpu.resources
    outside = res.high_gm_end + 0x10_0000  # not the vGPU's
    g.gpu.write_elsp(ctx.engine, lrc.descriptor(outside, ctx.context_id, 4))


@_hostile("ring outside GM")
def _ring_outside(g: ExecGuest, ctx: GuestContext) -> None:
    _lrc_patch(ctx, lrc.CTX_RING_BUFFER_START, 0x1000)  # the host's GM
    ctx.emit(cmd.noop(2))
    g.gpu.submit(ctx)


@_hostile("tail beyond ring")
def _tail_beyond(g: ExecGuest, ctx: GuestContext) -> None:
    ctx.emit(cmd.noop(2))
    ctx.publish_tail()
    _lrc_patch(ctx, lrc.CTX_RING_TAIL, ctx.ring.size + 0x40)
    g.gpu.write_elsp(ctx.engine, ctx.descriptor())


@_hostile("batch in unmapped memory")
def _unmapped_batch(g: ExecGuest, ctx: GuestContext) -> None:
    ctx.emit(cmd.batch_buffer_start(0x7FF0_0000))
    g.gpu.submit(ctx)


@_hostile("store to another vGPU's GM")
def _foreign_store(g: ExecGuest, ctx: GuestContext) -> None:
    ctx.emit(cmd.store_dword(g.vgpu.resources.high_gm_end + 0x1000, 0xBAD, ggtt=True))
    g.gpu.submit(ctx)


@_hostile("self-jumping batch")
def _self_jump(g: ExecGuest, ctx: GuestContext) -> None:
    loop = ctx.ppgtt.alloc(4096)
    loop.write_dwords(0, cmd.batch_buffer_start(loop.gma))
    ctx.emit(cmd.batch_buffer_start(loop.gma))
    g.gpu.submit(ctx)


@_hostile("descriptor without privilege")
def _unprivileged(g: ExecGuest, ctx: GuestContext) -> None:
    ctx.publish_tail()
    g.gpu.write_elsp(ctx.engine, lrc.descriptor(ctx.lrc.gma, ctx.context_id, 4,
                                                privileged=False))


@_hostile("advanced addressing mode")
def _advanced(g: ExecGuest, ctx: GuestContext) -> None:
    desc = ctx.descriptor() & ~(0x3 << lrc.GEN8_CTX_ADDRESSING_MODE_SHIFT)
    g.gpu.write_elsp(ctx.engine, desc | (lrc.ADVANCED_CONTEXT << lrc.GEN8_CTX_ADDRESSING_MODE_SHIFT))


#: attacks the command scanner refuses with an error upstream calls unhealthy (-EFAULT,
#: -EBADRQC): the vGPU goes to failsafe until the host resets it (facts 7.5).
FAILSAFE_ATTACKS = {"batch in unmapped memory", "store to another vGPU's GM"}


def reload_after_dmlr(gvt: Gvt, g: ExecGuest) -> ExecGuest:
    """The host resets a vGPU in failsafe (DMLR); the guest loads its driver again."""
    gvt.reset_vgpu(g.vgpu, dmlr=True)
    assert not g.vgpu.failsafe
    driver = GuestDriver(g.vm.port(), fb_width=FB_W, fb_height=FB_H)
    driver.load()
    return ExecGuest(g.vm, g.vgpu, driver, GuestGpu(driver))


@pytest.mark.parametrize("attack", sorted(HOSTILE))
def test_hostile_workload_is_a_fault_of_its_own_vgpu(exec_guest: Any, attack: str,
                                                      gvt_host: Gvt) -> None:  # noqa: F811
    good: ExecGuest = exec_guest()
    bad: ExecGuest = exec_guest()
    gctx = good.gpu.context(BCS)
    surf = gctx.ppgtt.alloc(64 * 64 * 4)
    bctx = bad.gpu.context(RCS)
    # the good guest has work in flight while the bad one attacks
    gctx.emit(cmd.color_blt(surf.gma, 256, 0, 0, 64, 64, 0x5A5A5A5A))
    good.gpu.submit(gctx)
    HOSTILE[attack](bad, bctx)
    faults = wait_faults(bad.vgpu, 1, TIMEOUT)
    assert faults[-1].engine == "rcs"
    assert bctx.engine in bad.vgpu.execution.hung
    assert bad.gpu.completed.get(bctx.context_id, 0) == 0
    good.gpu.wait_complete([gctx], TIMEOUT)
    assert surf.read(0, 8) == bytes.fromhex("5a5a5a5a5a5a5a5a")
    assert not good.vgpu.execution.faults and not good.vgpu.failsafe
    # the bad guest's hung engine (or its vGPU in failsafe: registers are plain
    # storage) takes no further submission until it is reset
    st = bad.vgpu.execution.stats
    before = (st.elsp_dropped, st.workloads_submitted)
    bad.gpu.write_elsp(RCS, bctx.descriptor())
    assert st.workloads_submitted == before[1]
    assert bad.vgpu.failsafe == (attack in FAILSAFE_ATTACKS)
    if bad.vgpu.failsafe:
        bad = reload_after_dmlr(gvt_host, bad)
    else:
        assert st.elsp_dropped == before[0] + 1
        _hang_then_reset(bad, bctx)
    fresh = bad.gpu.context(RCS)
    out = fresh.ppgtt.alloc(4096)
    bad.gpu.run(fresh, cmd.store_dword(out.gma, 0x600D), TIMEOUT)
    assert out.read_dwords(0, 1) == (0x600D,)
    assert good.vgpu.gvt.scheduler.stats.internal_errors == 0


def test_destroying_a_vgpu_with_work_in_flight_leaves_nothing(exec_guest: Any,
                                                              gvt_host: Gvt) -> None:  # noqa: F811
    frames_before = gvt_host.gpu.sysmem.count()
    gm_before = gvt_host.gpu.host_gm.in_use()
    g: ExecGuest = exec_guest()
    ctx = g.gpu.context(RCS)
    loop = ctx.ppgtt.alloc(4096)
    counter = ctx.ppgtt.alloc(4096)
    loop.write_dwords(0, cmd.store_dword(counter.gma, 1) + cmd.batch_buffer_start(loop.gma))
    ctx.emit(cmd.batch_buffer_start(loop.gma))
    g.gpu.submit(ctx)
    deadline = time.monotonic() + TIMEOUT
    while not counter.read_dwords(0, 1)[0]:  # it runs
        assert time.monotonic() < deadline
        time.sleep(0.005)
    vgpu_id = g.vgpu.id
    gvt_host.destroy_vgpu(g.vgpu)
    sched = gvt_host.scheduler
    assert vgpu_id not in sched.subs
    assert all(w.vgpu is not g.vgpu for w in sched.running.values())
    # nothing runs for it any more: its memory stays as it was
    counter.write_dwords(0, [0])
    time.sleep(0.05)
    assert counter.read_dwords(0, 1) == (0,)
    assert g.vm.held().total == 0
    assert gvt_host.gpu.host_gm.in_use() == gm_before
    assert gvt_host.gpu.sysmem.count() == frames_before
    with pytest.raises(GuestDriverError):
        g.gpu.wait_complete([ctx], 0.05)
