"""Scenario suite, command scanner: nothing a guest submits reaches an engine unaudited.

Guests over the backend under test submit work through ELSP (the
guest-driver model); the host scans every workload before it runs. Checked
here: realistic workloads (batches of 3D state, blits, register round trips)
run and are counted; each audit refuses its hostile command on the guest's
path with upstream's error behaviour (the engine hangs, or the vGPU goes to
failsafe for -EBADRQC / -EFAULT), counted by reason and logged once, while
another guest runs undisturbed; a batch rewritten after the scan never runs
its rewritten commands; an MI_DISPLAY_FLIP reaches the vGPU's plane registers.
Run on a backend with::

    pytest --pyargs gvt_core.testing --gvt-backend NAME
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from gvt_core.device.gvt import Gvt
from gvt_core.guest import commands as cmd
from gvt_core.guest.gpu import GuestContext
from gvt_core.hw import regs
from gvt_core.hw.engine import commands as C
from gvt_core.testing.guests import wait_faults
from gvt_core.testing.test_execution import (  # noqa: F401  (fixtures)
    TIMEOUT,
    ExecGuest,
    exec_guest,
    reload_after_dmlr,
)
from gvt_core.testing.test_scenarios import gvt_host  # noqa: F401  (fixture)
from gvt_core.testing.toctou import Target, rewrite_after_scan

RCS, BCS = regs.ENGINE_RCS, regs.ENGINE_BCS
PAGE = regs.GTT_PAGE_SIZE


def test_a_realistic_mix_is_scanned_shadowed_and_runs(exec_guest: Any, gvt_host: Gvt) -> None:  # noqa: F811
    g: ExecGuest = exec_guest()
    rcs, bcs = g.gpu.context(RCS), g.gpu.context(BCS)
    out = rcs.ppgtt.alloc(PAGE)
    state = rcs.ppgtt.alloc(PAGE)
    # a render batch as Mesa emits one: pipeline state, then a PIPE_CONTROL write
    words = [C.header("PIPELINE_SELECT")]
    for name in ("STATE_BASE_ADDRESS", "3DSTATE_VF", "3DSTATE_CLIP", "3DSTATE_SF",
                 "3DSTATE_WM", "3DSTATE_PS", "3DSTATE_DRAWING_RECTANGLE"):
        spec = C.BY_NAME[name]
        words += [C.header(name, spec.min_length)] + [0] * (spec.min_length - 1)
    reg = regs.RENDER_RING_BASE + 0x28  # RING_EXCC: command-accessible
    state.write_dwords(0, words + cmd.pipe_control(out.gma, 0x1234_5678)
                       + cmd.batch_buffer_end())
    g.gpu.run(rcs, cmd.batch_buffer_start(state.gma)
              + cmd.load_register_imm([(reg, 0x77)]) + cmd.store_register_mem(reg, out.gma + 8),
              TIMEOUT)
    assert out.read_dwords(0, 3) == (0x1234_5678, 0, 0x77)
    src, dst, blits = bcs.ppgtt.alloc(64 * 64 * 4), bcs.ppgtt.alloc(64 * 64 * 4), \
        bcs.ppgtt.alloc(PAGE)
    blits.write_dwords(0, cmd.color_blt(src.gma, 256, 0, 0, 64, 64, 0x0A0B0C0D)
                       + cmd.src_copy_blt(dst.gma, 256, 0, 0, 64, 64, src.gma, 256, 0, 0)
                       + cmd.batch_buffer_end())
    g.gpu.run(bcs, cmd.batch_buffer_start(blits.gma) + cmd.flush_dw(), TIMEOUT)
    assert dst.read(64 * 64 * 4 - 4, 4) == bytes.fromhex("0d0c0b0a")
    c = g.vgpu.execution.scanner.counters
    assert c.workloads_scanned >= 2 and c.workloads_rejected == 0
    assert c.batches_shadowed >= 2 and c.commands_scanned >= len(words) // 2
    # every shadow went back to the host with its workload
    assert gvt_host.gpu.host_gm.in_use(f"vgpu{g.vgpu.id}-shadow") == 0


@attrs.frozen
class Attack:
    """A command the scanner must refuse: where it goes and what the guest then sees."""

    reason: str
    failsafe: bool
    engine: int
    build: Callable[[ExecGuest, GuestContext], tuple[list[int], list[int] | None]]


def _outside(g: ExecGuest) -> int:
    return g.vgpu.resources.high_gm_end + 0x1000


ATTACKS: dict[str, Attack] = {
    "unknown opcode": Attack("unknown-command", True, RCS,
                             lambda g, c: ([0x0F80_0000, 0], None)),
    "store outside the partition": Attack(
        "ggtt-out-of-partition", True, RCS,
        lambda g, c: (cmd.store_dword(_outside(g), 1, ggtt=True), None)),
    "post-sync outside the partition": Attack(
        "ggtt-out-of-partition", True, RCS,
        lambda g, c: (cmd.pipe_control(_outside(g), 1, ggtt=True), None)),
    "flush post-sync outside the partition": Attack(
        "ggtt-out-of-partition", True, BCS,
        lambda g, c: (cmd.flush_dw(_outside(g), 1, ggtt=True), None)),
    "LRI of RING_TAIL": Attack(  # the ring registers are not command-accessible
        "register-not-allowed", True, RCS,
        lambda g, c: (cmd.load_register_imm([(regs.RENDER_RING_BASE + regs.RING_TAIL, 0)]),
                      None)),
    "LRI of RING_START": Attack(
        "register-not-allowed", True, BCS,
        lambda g, c: (cmd.load_register_imm([(regs.BLT_RING_BASE + regs.RING_START, 0)]),
                      None)),
    "SRM of a register outside the whitelist": Attack(
        "register-not-allowed", True, RCS,
        lambda g, c: (cmd.store_register_mem(regs.GEN6_GDRST, 0x10_0000), None)),
    "MI_UPDATE_GTT": Attack("forbidden-command", True, RCS,
                            lambda g, c: ([C.header("MI_UPDATE_GTT", 2), 0], None)),
    "batch end in the ring": Attack("bad-batch-nesting", True, RCS,
                                    lambda g, c: ([*cmd.batch_buffer_end(), 0], None)),
    "GGTT store in a PPGTT batch": Attack(
        "privileged-command", False, RCS,
        lambda g, c: ([], cmd.store_dword(g.vgpu.resources.high_gm_base, 1, ggtt=True))),
    "user interrupt in a PPGTT batch": Attack(
        "privileged-command", False, BCS,
        lambda g, c: ([], cmd.user_interrupt())),
    "flip on a reserved plane": Attack(
        "malformed-command", True, RCS,
        lambda g, c: ([C.header("MI_DISPLAY_FLIP", 3, 7 << 19), 0, 0x1000], None)),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_the_scanner_refuses_with_upstreams_error_behaviour(
        exec_guest: Any, gvt_host: Gvt, name: str, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    attack = ATTACKS[name]
    good: ExecGuest = exec_guest()
    bad: ExecGuest = exec_guest()
    gctx = good.gpu.context(BCS)
    surf = gctx.ppgtt.alloc(64 * 64 * 4)
    bctx = bad.gpu.context(attack.engine)
    ring, batch = attack.build(bad, bctx)
    if batch is not None:
        buf = bctx.ppgtt.alloc(PAGE)
        buf.write_dwords(0, batch + cmd.batch_buffer_end())
        ring = ring + cmd.batch_buffer_start(buf.gma)
    gctx.emit(cmd.color_blt(surf.gma, 256, 0, 0, 64, 64, 0x5A5A5A5A))
    good.gpu.submit(gctx)
    with caplog.at_level(logging.WARNING, logger="gvt_core.device.execution.scanner"):
        for n in range(2):  # counted twice, logged once
            bctx.emit(ring)
            bad.gpu.submit(bctx)
            faults = wait_faults(bad.vgpu, n + 1, TIMEOUT)
            if bad.vgpu.failsafe:
                break
            bad.gpu.reset_engine(attack.engine)
            bctx = bad.gpu.context(attack.engine, bctx.ppgtt)
    assert faults[-1].reason.startswith(attack.reason), faults[-1].reason
    assert bad.vgpu.failsafe == attack.failsafe
    counters = bad.vgpu.execution.scanner.counters
    rounds = 1 if attack.failsafe else 2
    assert counters.rejected_by_reason == {attack.reason: rounds}
    assert counters.commands_rejected == rounds
    logged = [r for r in caplog.records if attack.reason in r.getMessage()]
    assert len(logged) == 1
    good.gpu.wait_complete([gctx], TIMEOUT)
    assert surf.read(0, 8) == bytes.fromhex("5a5a5a5a5a5a5a5a")
    assert not good.vgpu.execution.faults and not good.vgpu.failsafe
    assert good.vgpu.execution.scanner.counters.workloads_rejected == 0
    if bad.vgpu.failsafe:
        bad = reload_after_dmlr(gvt_host, bad)
    fresh = bad.gpu.context(RCS)
    out = fresh.ppgtt.alloc(PAGE)
    bad.gpu.run(fresh, cmd.store_dword(out.gma, 0x600D), TIMEOUT)
    assert out.read_dwords(0, 1) == (0x600D,)
    assert gvt_host.scheduler.stats.internal_errors == 0


def test_a_batch_rewritten_after_the_scan_runs_as_audited(exec_guest: Any) -> None:  # noqa: F811
    victim: ExecGuest = exec_guest()
    g: ExecGuest = exec_guest()
    target = Target(victim.gpu.ggtt_buffer(PAGE))
    target.plant()
    for engine in (RCS, BCS):
        rewrite_after_scan(g.vgpu, g.gpu, g.gpu.context(engine), target, TIMEOUT)


def test_mi_display_flip_reaches_the_vgpus_plane(exec_guest: Any) -> None:  # noqa: F811
    g: ExecGuest = exec_guest()
    rep = g.driver.report
    assert rep is not None
    ctx = g.gpu.context(RCS)
    pitch = 256
    flip = [C.header("MI_DISPLAY_FLIP", 3, 0 << 19), (pitch >> 6) << 6,
            rep.framebuffer_gm | 1]  # pipe A primary, asynchronous
    g.gpu.run(ctx, flip, TIMEOUT)
    assert g.gpu.mmio_read(regs.DSPSURF_A) & ~0xFFF == rep.framebuffer_gm
    assert g.gpu.mmio_read(regs.DSPSURFLIVE_A) & ~0xFFF == rep.framebuffer_gm
    assert g.gpu.mmio_read(regs.DSPSTRIDE_A) & 0xFFC0 == pitch
    # a flip to memory that is not the vGPU's is refused
    before = len(g.vgpu.execution.faults)
    ctx2 = g.gpu.context(BCS)
    ctx2.emit([C.header("MI_DISPLAY_FLIP", 3), pitch, 0x1000 | 1])  # the host's aperture
    g.gpu.submit(ctx2)
    faults = wait_faults(g.vgpu, before + 1, TIMEOUT)
    assert faults[-1].reason.startswith("ggtt-out-of-partition")
