"""Every audit of facts 8.4: one case it accepts and one it rejects (at least)."""

from __future__ import annotations

import pytest

from gvt_core.device.execution.scanner import (
    AddressSpace,
    AuditContext,
    DisplayPlane,
    EventKind,
    RejectReason,
    ScanRejection,
    ScanResult,
    scan_workload,
)
from gvt_core.device.execution.scanner import table as S
from gvt_core.hw import regs
from tests.scanner import cmds as C
from tests.scanner.env import (
    BATCH_PPGTT,
    DATA_GGTT,
    DERRMR,
    GPR0,
    GPR1,
    HIGH_BASE,
    HIGH_SIZE,
    HWS_PGA,
    LOW_BASE,
    MOCS0,
    NONPRIV0,
    OUTSIDE,
    SECRET_REG,
    make_arena,
    make_ctx,
    put,
    ring_of,
)
from tests.scanner.memory import GuestGm

END = HIGH_BASE + HIGH_SIZE  # first byte after the partition's hidden range
R = RejectReason


_FLUSH_DW = C.header("MI_FLUSH_DW", 4) & ~0xFF


def _engine_for(cmds: tuple[list[int], ...]) -> AuditContext:
    """RCS, or BCS for commands with an MI_FLUSH_DW (which the render engine lacks)."""
    flush = any(c and c[0] & ~0x3F_FFFF == _FLUSH_DW for c in cmds)
    return make_ctx(regs.ENGINE_BCS if flush else regs.ENGINE_RCS)


def scan_ring(*cmds: list[int], ctx: AuditContext | None = None) -> ScanResult | ScanRejection:
    """Scan commands placed in the ring (privileged)."""
    return scan_workload(ring_of(*cmds), ctx or _engine_for(cmds), GuestGm(), make_arena())


def scan_nonpriv(*cmds: list[int], ctx: AuditContext | None = None) -> ScanResult | ScanRejection:
    """Scan commands placed in a PPGTT (non-privileged) batch."""
    gm = GuestGm()
    put(gm, AddressSpace.PPGTT, BATCH_PPGTT, *cmds, C.BB_END)
    return scan_workload(ring_of(C.bb_start(BATCH_PPGTT, ppgtt=True)), ctx or _engine_for(cmds),
                         gm, make_arena())


def accepted(r: ScanResult | ScanRejection) -> ScanResult:
    assert isinstance(r, ScanResult), str(r)
    return r


def reason(r: ScanResult | ScanRejection) -> RejectReason:
    assert isinstance(r, ScanRejection), "accepted"
    return r.reason


# --- GGTT address audits ---------------------------------------------------------------------------
@pytest.mark.parametrize(("make", "size", "align"), [
    (lambda a: C.sdi(a, 1), 4, 4),
    (lambda a: C.sdi(a, 1, qword=True), 8, 4),
    (lambda a: C.flush_dw(a, 1), 8, 8),
    (lambda a: C.pipe_control(a, 1, post_sync=1), 8, 8),
    (lambda a: C.pipe_control(a, post_sync=3), 8, 8),  # timestamp: upstream does not check
    (lambda a: C.pipe_control(a, post_sync=2), 8, 8),  # depth count
    (lambda a: C.srm(GPR0, a), 4, 4),
    (lambda a: C.lrm(GPR0, a), 4, 4),
    (lambda a: C.semaphore_wait(a), 4, 4),
    (lambda a: C.cond_bb_end(a), 8, 8),
    (lambda a: C.report_perf_count(a), 256, 64),
    (lambda a: C.cmd("MI_ATOMIC", C.lo(a), C.hi(a), flags=1 << 22), 4, 4),
    (lambda a: C.cmd("MI_ATOMIC", C.lo(a), C.hi(a), flags=(1 << 22) | (1 << 19)), 8, 4),
    (lambda a: C.cmd("MI_COPY_MEM_MEM", C.lo(a), C.hi(a), C.lo(DATA_GGTT), 0,
                     flags=(1 << 21) | (1 << 22)), 4, 4),
    (lambda a: C.cmd("MI_COPY_MEM_MEM", C.lo(DATA_GGTT), 0, C.lo(a), C.hi(a),
                     flags=(1 << 21) | (1 << 22)), 4, 4),
    (lambda a: C.cmd("MI_CLFLUSH", C.lo(a), C.hi(a), 0, 0, 0, flags=1 << 22), 96, 64),
], ids=["sdi", "sdi-qword", "flush-dw", "pc-imm", "pc-timestamp", "pc-depth", "srm", "lrm",
        "semaphore-wait", "cond-bb-end", "report-perf", "atomic", "atomic-qword", "copy-dst",
        "copy-src", "clflush"])
def test_ggtt_access_inside_partition_for_its_whole_length(make, size: int, align: int) -> None:
    accepted(scan_ring(make(DATA_GGTT)))
    accepted(scan_ring(make(END - size)))  # the last bytes of the partition
    # one alignment step further: the access straddles the end (or starts past it)
    assert reason(scan_ring(make(END - size + align))) is R.GGTT_OUT_OF_PARTITION
    assert reason(scan_ring(make(OUTSIDE))) is R.GGTT_OUT_OF_PARTITION
    assert reason(scan_ring(make(DATA_GGTT | (1 << 32)))) is R.GGTT_OUT_OF_PARTITION
    # and the GGTT form is a privilege violation in a non-privileged batch
    assert reason(scan_nonpriv(make(DATA_GGTT))) is R.PRIVILEGED_COMMAND


def test_high_address_bits_are_refused() -> None:
    cmd = C.sdi(DATA_GGTT, 1)
    cmd[2] = 0x0001_0000  # bit 48 of the address
    assert reason(scan_ring(cmd)) is R.GGTT_OUT_OF_PARTITION


@pytest.mark.parametrize("make", [
    lambda: C.sdi(OUTSIDE, 1, ggtt=False),
    lambda: C.flush_dw(OUTSIDE, 1, ggtt=False),
    lambda: C.pipe_control(OUTSIDE, 1, ggtt=False),
    lambda: C.srm(GPR0, OUTSIDE, ggtt=False),
    lambda: C.lrm(GPR0, OUTSIDE, ggtt=False),
    lambda: C.semaphore_wait(OUTSIDE, ggtt=False),
    lambda: C.cond_bb_end(OUTSIDE, ggtt=False),
    lambda: C.report_perf_count(OUTSIDE, ggtt=False),
])
def test_ppgtt_addresses_are_left_to_the_shadow_ppgtt(make) -> None:
    accepted(scan_ring(make()))
    accepted(scan_nonpriv(make()))


def test_sdi_layout() -> None:
    bad = C.sdi(DATA_GGTT, 1)
    bad[0] |= 1 << 21  # says qword, carries one data dword
    assert reason(scan_ring(bad)) is R.BAD_LENGTH
    core1 = C.sdi(END - 4, 1)
    core1[1] |= 1  # core mode: the second slot, 4 bytes further, leaves the partition
    assert reason(scan_ring(core1)) is R.GGTT_OUT_OF_PARTITION
    core1 = C.sdi(END - 8, 1)
    core1[1] |= 1
    accepted(scan_ring(core1))


def test_atomic_and_clflush_layout() -> None:
    assert reason(scan_ring(C.cmd("MI_ATOMIC", C.lo(DATA_GGTT), 0, flags=(1 << 22) | (3 << 19)))) \
        is R.MALFORMED_COMMAND
    inline = C.cmd("MI_ATOMIC", C.lo(DATA_GGTT), 0, *([0] * 8), flags=(1 << 22) | (1 << 18))
    accepted(scan_ring(inline))
    short = C.cmd("MI_ATOMIC", C.lo(DATA_GGTT), 0, flags=(1 << 22) | (1 << 18))
    assert reason(scan_ring(short)) is R.BAD_LENGTH
    big = C.cmd("MI_CLFLUSH", C.lo(END - 4096), 0, *([0] * 129), flags=1 << 22)  # 129 * 32 > 4K
    assert reason(scan_ring(big)) is R.GGTT_OUT_OF_PARTITION


# --- status-page (store index) writes --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flush-dw", "pipe-control"])
def test_store_index(kind: str) -> None:
    def make(offset: int) -> list[int]:
        if kind == "flush-dw":
            return C.flush_dw(offset, 1, index=True)
        return C.pipe_control(offset, 1, index=True)

    engine = regs.ENGINE_BCS if kind == "flush-dw" else regs.ENGINE_RCS
    r = accepted(scan_ring(make(0x100)))
    assert r.patches == ()  # without the status page known, nothing is rebased
    assert reason(scan_ring(make(0xFF8 + 8))) is R.GGTT_OUT_OF_PARTITION
    for written in (make(0x100), [make(0x100)[0], make(0x100)[1] & ~4, *make(0x100)[2:]]):
        r = accepted(scan_ring(written, ctx=make_ctx(engine, hws_pga=HWS_PGA)))
        patched = {p.offset: p.value for p in r.patches}
        addr_dw = 1 if kind == "flush-dw" else 2
        flag_dw = 0 if kind == "flush-dw" else 1
        assert patched[addr_dw] & ~7 == HWS_PGA + 0x100
        assert int(r.ring[addr_dw]) & ~7 == HWS_PGA + 0x100
        assert not int(r.ring[flag_dw]) & (1 << 21)
        # the rebased write is a plain GGTT write: the command's GGTT bit is set
        ggtt = int(r.ring[1]) & 4 if kind == "flush-dw" else int(r.ring[1]) & (1 << 24)
        assert ggtt
    assert reason(scan_ring(make(0x100), ctx=make_ctx(engine, hws_pga=OUTSIDE))) \
        is R.GGTT_OUT_OF_PARTITION
    assert reason(scan_nonpriv(make(0x100))) is R.PRIVILEGED_COMMAND


def test_store_data_index() -> None:
    accepted(scan_ring(C.cmd("MI_STORE_DATA_INDEX", 0xFF8, 1, 2)))
    assert reason(scan_ring(C.cmd("MI_STORE_DATA_INDEX", 0xFFC, 1, 2))) is R.GGTT_OUT_OF_PARTITION
    assert reason(scan_nonpriv(C.cmd("MI_STORE_DATA_INDEX", 0x10, 1))) is R.PRIVILEGED_COMMAND


# --- notify and interrupts -------------------------------------------------------------------------
def test_notify_events() -> None:
    r = accepted(scan_ring(C.pipe_control(post_sync=0, notify=True),
                           C.cmd("MI_USER_INTERRUPT")))
    assert [e.kind for e in r.events] == [EventKind.PIPE_CONTROL_NOTIFY, EventKind.USER_INTERRUPT]
    assert [e.offset for e in r.events] == [0, 6]
    r = accepted(scan_ring(C.cmd("MI_USER_INTERRUPT"), C.flush_dw(post_sync=0, notify=True)))
    assert [e.kind for e in r.events] == [EventKind.USER_INTERRUPT, EventKind.FLUSH_DW_NOTIFY]
    for cmd in (C.pipe_control(post_sync=0, notify=True), C.cmd("MI_USER_INTERRUPT"),
                C.flush_dw(post_sync=0, notify=True)):
        assert reason(scan_nonpriv(cmd)) is R.PRIVILEGED_COMMAND
    accepted(scan_nonpriv(C.pipe_control(0x1000, post_sync=1, ggtt=False)))
    accepted(scan_nonpriv(C.flush_dw(post_sync=0)))


# --- registers -------------------------------------------------------------------------------------
def test_lri_whitelist() -> None:
    accepted(scan_ring(C.lri((GPR0, 1), (GPR1, 2))))
    accepted(scan_nonpriv(C.lri((GPR0, 1))))
    assert reason(scan_ring(C.lri((GPR0, 1), (SECRET_REG, 2)))) is R.REGISTER_NOT_ALLOWED
    assert reason(scan_ring(C.lri((0x20_0000, 1)))) is R.REGISTER_NOT_ALLOWED  # beyond MMIO
    assert reason(scan_ring([C.header("MI_LOAD_REGISTER_IMM", 4), GPR0, 1, GPR1])) is R.BAD_LENGTH
    too_long = C.lri(*[(GPR0, i) for i in range(64)])  # 129 dwords
    assert reason(scan_ring(too_long)) is R.BAD_LENGTH
    accepted(scan_ring(C.lri(*[(GPR0, i) for i in range(63)])))


def test_nonpriv_register_whitelist() -> None:
    ctx = make_ctx(nonpriv_register_allowed={GPR1}.__contains__)
    accepted(scan_ring(C.lri((GPR0, 1)), ctx=ctx))
    assert reason(scan_nonpriv(C.lri((GPR0, 1)), ctx=ctx)) is R.REGISTER_NOT_ALLOWED
    accepted(scan_nonpriv(C.lri((GPR1, 1)), ctx=ctx))


def test_lri_bdw_inhibit_bits_on_non_render_engines() -> None:
    bcs = make_ctx(regs.ENGINE_BCS)
    blt_gpr = regs.BLT_RING_BASE + 0x600
    accepted(scan_ring(C.lri((blt_gpr, 1)), ctx=bcs))
    high = 0x40000 | GPR0  # bits 22:18 set
    ctx = make_ctx(regs.ENGINE_BCS, register_allowed=lambda reg: True)
    assert reason(scan_ring(C.lri((high, 1)), ctx=ctx)) is R.REGISTER_NOT_ALLOWED
    accepted(scan_ring(C.lri((high, 1)), ctx=make_ctx(register_allowed=lambda reg: True)))
    # DERRMR on BCS passes the inhibit rule and is redirected into the PVINFO page
    r = accepted(scan_ring(C.lri((DERRMR, 0xFF)), ctx=bcs))
    assert r.ring[1] == regs.VGT_PVINFO_PAGE and r.ring[2] == 0xFF
    r = accepted(scan_ring(C.lri((regs.FORCEWAKE_MT, 0x10001))))
    assert r.ring[1] == regs.VGT_PVINFO_PAGE


def test_lri_force_nonpriv_and_mocs() -> None:
    nopid = regs.RENDER_RING_BASE + regs.RING_NOPID
    r = accepted(scan_ring(C.lri((NONPRIV0, SECRET_REG), (MOCS0, 0x3B))))
    assert r.ring[2] == nopid  # a register not allowed to become non-privileged: NOPID
    assert [(w.offset, w.value) for w in r.register_writes] == [(MOCS0, 0x3B)]
    ctx = make_ctx(force_nonpriv_allowed={GPR0}.__contains__)
    r = accepted(scan_ring(C.lri((NONPRIV0, GPR0)), ctx=ctx))
    assert r.ring[2] == GPR0 and r.patches == ()


def test_lrr() -> None:
    accepted(scan_ring(C.lrr(GPR0, GPR1)))
    assert reason(scan_ring(C.lrr(SECRET_REG, GPR1))) is R.REGISTER_NOT_ALLOWED
    assert reason(scan_ring(C.lrr(GPR0, SECRET_REG))) is R.REGISTER_NOT_ALLOWED
    assert reason(scan_ring(C.lrr(GPR0 | 0x40000, GPR1),
                            ctx=make_ctx(register_allowed=lambda reg: True))) \
        is R.REGISTER_NOT_ALLOWED  # BDW inhibit bits: every engine for LRR


def test_register_memory_commands() -> None:
    accepted(scan_ring(C.srm(GPR0, DATA_GGTT), C.lrm(GPR1, DATA_GGTT)))
    assert reason(scan_ring(C.srm(SECRET_REG, DATA_GGTT))) is R.REGISTER_NOT_ALLOWED
    assert reason(scan_ring(C.lrm(SECRET_REG, DATA_GGTT))) is R.REGISTER_NOT_ALLOWED
    accepted(scan_nonpriv(C.srm(GPR0, 0x1000, ggtt=False)))


def test_pipe_control_registers() -> None:
    accepted(scan_ring(C.pipe_control(lri_reg=GPR0, post_sync=0)))
    assert reason(scan_ring(C.pipe_control(lri_reg=GPR0, post_sync=1))) is R.MALFORMED_COMMAND
    assert reason(scan_ring(C.pipe_control(lri_reg=SECRET_REG, post_sync=0))) \
        is R.REGISTER_NOT_ALLOWED
    assert reason(scan_nonpriv(C.pipe_control(lri_reg=GPR0, post_sync=0))) \
        is R.PRIVILEGED_COMMAND
    no_counters = make_ctx(register_allowed={GPR0}.__contains__)
    assert reason(scan_ring(C.pipe_control(DATA_GGTT, post_sync=3), ctx=no_counters)) \
        is R.REGISTER_NOT_ALLOWED
    assert reason(scan_ring(C.pipe_control(DATA_GGTT, post_sync=2), ctx=no_counters)) \
        is R.REGISTER_NOT_ALLOWED


# --- privilege -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["MI_USER_INTERRUPT", "MI_WAIT_FOR_EVENT", "MI_ARB_ON_OFF",
                                  "MI_SEMAPHORE_SIGNAL", "MI_SEMAPHORE_MBOX",
                                  "MI_LOAD_SCAN_LINES_INCL", "MI_LOAD_SCAN_LINES_EXCL",
                                  "MI_STORE_DATA_INDEX", "MI_DISPLAY_FLIP"])
def test_privileged_only_commands(name: str) -> None:
    cmd = C.fill(name)
    if name == "MI_DISPLAY_FLIP":
        cmd = C.cmd(name, 0, LOW_BASE)
    accepted(scan_ring(cmd))
    assert reason(scan_nonpriv(cmd)) is R.PRIVILEGED_COMMAND


@pytest.mark.parametrize("name", ["MI_UPDATE_GTT", "MI_SET_CONTEXT"])
def test_forbidden_commands(name: str) -> None:
    assert reason(scan_ring(C.fill(name))) is R.FORBIDDEN_COMMAND


# --- display ---------------------------------------------------------------------------------------
def test_display_flip() -> None:
    flip = C.cmd("MI_DISPLAY_FLIP", (40 << 6) | 1, LOW_BASE + 0x3000 | 1)  # pipe A primary, async
    r = accepted(scan_ring(flip))
    (f,) = r.flips
    assert (f.pipe, f.plane, f.surface, f.stride, f.tiled, f.async_flip) == (
        0, DisplayPlane.PRIMARY, LOW_BASE + 0x3000, 40, 1, True)
    assert r.ring.tolist() == [0, 0, 0]  # emulated: the engine sees NOOPs
    sprite_a = C.cmd("MI_DISPLAY_FLIP", 0, LOW_BASE, flags=2 << 19)
    accepted(scan_ring(sprite_a))
    pipe_b = C.cmd("MI_DISPLAY_FLIP", 0, LOW_BASE, flags=1 << 19)
    assert reason(scan_ring(pipe_b)) is R.DISPLAY_NOT_OWNED
    reserved = C.cmd("MI_DISPLAY_FLIP", 0, LOW_BASE, flags=6 << 19)
    assert reason(scan_ring(reserved)) is R.MALFORMED_COMMAND
    assert reason(scan_ring(C.cmd("MI_DISPLAY_FLIP", 0, OUTSIDE))) is R.GGTT_OUT_OF_PARTITION
    stereo = C.cmd("MI_DISPLAY_FLIP", 0, LOW_BASE | 2, LOW_BASE)
    accepted(scan_ring(stereo))
    assert reason(scan_ring(C.cmd("MI_DISPLAY_FLIP", 0, LOW_BASE | 2))) is R.BAD_LENGTH


def test_wait_for_event() -> None:
    vblank_a = C.cmd("MI_WAIT_FOR_EVENT", flags=1 << 3)
    r = accepted(scan_ring(vblank_a))
    assert r.ring[0] == vblank_a[0]  # a real wait stays
    flip_a = C.cmd("MI_WAIT_FOR_EVENT", flags=1 << 1)
    r = accepted(scan_ring(flip_a))
    assert r.ring[0] == 0  # flip-pending waits are NOOP'd: flips are emulated
    for bit in (8, 9, 10, 11, 14, 15, 20, 21):  # pipes B and C are not this vGPU's
        assert reason(scan_ring(C.cmd("MI_WAIT_FOR_EVENT", flags=1 << bit))) \
            is R.DISPLAY_NOT_OWNED, bit


# --- every audit: one command it accepts, one it rejects -------------------------------------------
def _flip(code: int, surface: int) -> list[int]:
    return C.cmd("MI_DISPLAY_FLIP", 64 << 6, surface, flags=code << 19)


#: audit -> (accepted in the ring, (rejected, the reason), engine). BATCH_START / BATCH_END
#: are the walker's (tests/scanner/test_walker.py has their cases too).
EACH_AUDIT = {
    S.Audit.FORBIDDEN: (C.NOOP, (C.cmd("MI_UPDATE_GTT", 0), R.FORBIDDEN_COMMAND)),
    S.Audit.USER_INTERRUPT: (C.cmd("MI_USER_INTERRUPT"),
                             (C.cmd("MI_USER_INTERRUPT"), R.PRIVILEGED_COMMAND)),  # in a batch
    S.Audit.WAIT_FOR_EVENT: (C.cmd("MI_WAIT_FOR_EVENT", flags=1 << 1),
                             (C.cmd("MI_WAIT_FOR_EVENT", flags=1 << 9), R.DISPLAY_NOT_OWNED)),
    S.Audit.DISPLAY_FLIP: (_flip(0, LOW_BASE), (_flip(1, LOW_BASE), R.DISPLAY_NOT_OWNED)),
    S.Audit.LOAD_REGISTER_IMM: (C.lri((GPR0, 1)), (C.lri((SECRET_REG, 1)),
                                                   R.REGISTER_NOT_ALLOWED)),
    S.Audit.LOAD_REGISTER_REG: (C.lrr(GPR0, GPR1), (C.lrr(SECRET_REG, GPR1),
                                                    R.REGISTER_NOT_ALLOWED)),
    S.Audit.LOAD_REGISTER_MEM: (C.lrm(GPR0, DATA_GGTT), (C.lrm(GPR0, OUTSIDE),
                                                         R.GGTT_OUT_OF_PARTITION)),
    S.Audit.STORE_REGISTER_MEM: (C.srm(GPR0, DATA_GGTT), (C.srm(SECRET_REG, DATA_GGTT),
                                                          R.REGISTER_NOT_ALLOWED)),
    S.Audit.STORE_DATA_IMM: (C.sdi(DATA_GGTT, 1), (C.sdi(OUTSIDE, 1), R.GGTT_OUT_OF_PARTITION)),
    S.Audit.STORE_DATA_INDEX: (C.cmd("MI_STORE_DATA_INDEX", 0x40, 1),
                               (C.cmd("MI_STORE_DATA_INDEX", 0xFFC, 1, 2),
                                R.GGTT_OUT_OF_PARTITION)),
    S.Audit.FLUSH_DW: (C.flush_dw(DATA_GGTT, 1), (C.flush_dw(OUTSIDE, 1),
                                                  R.GGTT_OUT_OF_PARTITION)),
    S.Audit.PIPE_CONTROL: (C.pipe_control(DATA_GGTT, 1), (C.pipe_control(OUTSIDE, 1),
                                                          R.GGTT_OUT_OF_PARTITION)),
    S.Audit.SEMAPHORE_WAIT: (C.semaphore_wait(DATA_GGTT), (C.semaphore_wait(OUTSIDE),
                                                           R.GGTT_OUT_OF_PARTITION)),
    S.Audit.CONDITIONAL_BATCH_END: (C.cond_bb_end(DATA_GGTT), (C.cond_bb_end(OUTSIDE),
                                                               R.GGTT_OUT_OF_PARTITION)),
    S.Audit.REPORT_PERF_COUNT: (C.report_perf_count(DATA_GGTT),
                                (C.report_perf_count(OUTSIDE), R.GGTT_OUT_OF_PARTITION)),
    S.Audit.CLFLUSH: (C.cmd("MI_CLFLUSH", C.lo(DATA_GGTT), 0, 0, flags=1 << 22),
                      (C.cmd("MI_CLFLUSH", C.lo(OUTSIDE), 0, 0, flags=1 << 22),
                       R.GGTT_OUT_OF_PARTITION)),
    S.Audit.ATOMIC: (C.cmd("MI_ATOMIC", C.lo(DATA_GGTT), 0, flags=1 << 22),
                     (C.cmd("MI_ATOMIC", C.lo(DATA_GGTT), 0, flags=(1 << 22) | (3 << 19)),
                      R.MALFORMED_COMMAND)),
    S.Audit.COPY_MEM_MEM: (C.cmd("MI_COPY_MEM_MEM", C.lo(DATA_GGTT), 0, C.lo(DATA_GGTT), 0,
                                 flags=(1 << 21) | (1 << 22)),
                           (C.cmd("MI_COPY_MEM_MEM", C.lo(OUTSIDE), 0, C.lo(DATA_GGTT), 0,
                                  flags=(1 << 21) | (1 << 22)), R.GGTT_OUT_OF_PARTITION)),
    S.Audit.BATCH_START: (C.bb_start(BATCH_PPGTT, ppgtt=True),
                          (C.bb_start(OUTSIDE), R.GGTT_OUT_OF_PARTITION)),
    S.Audit.BATCH_END: (C.NOOP, (C.BB_END, R.BAD_BATCH_NESTING)),  # in the ring
}


def test_every_audit_is_listed() -> None:
    assert set(EACH_AUDIT) == set(S.Audit) - {S.Audit.NONE}


@pytest.mark.parametrize("audit", sorted(EACH_AUDIT, key=lambda a: a.value), ids=lambda a: a.value)
def test_each_audit_accepts_and_rejects(audit: S.Audit) -> None:
    good, (bad, why) = EACH_AUDIT[audit]
    if audit is S.Audit.BATCH_START:
        gm = GuestGm()
        put(gm, AddressSpace.PPGTT, BATCH_PPGTT, C.NOOP, C.BB_END)
        accepted(scan_workload(ring_of(good), make_ctx(), gm, make_arena()))
    else:
        accepted(scan_ring(good))
    if audit is S.Audit.USER_INTERRUPT:
        assert reason(scan_nonpriv(bad)) is why
    else:
        assert reason(scan_ring(bad)) is why
