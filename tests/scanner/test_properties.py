"""Hypothesis properties of the decoder, the walker and the shadows.

* decoding never raises on any dwords, and its two paths (numpy, per header) agree;
* a scan of random workloads (random commands, junk, batch starts between
  random batches) never raises, stays within its limits and leaks no shadow;
* what an accepted scan lets the engine run (the ring and the shadows) decodes
  cleanly, starts only shadows, and every GGTT access and register in it passes
  an independent check;
* shadows are immune to guest writes after the scan.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gvt_core.device.execution.scanner import (
    AddressSpace,
    RingSection,
    ScanLimits,
    ScanRejection,
    ScanResult,
    scan_workload,
)
from gvt_core.device.execution.scanner import table as S
from gvt_core.device.execution.scanner.decoder import DecodeStatus, decoder_for
from gvt_core.hw.engine import commands as T
from tests.scanner import cmds as C
from tests.scanner.env import (
    BATCH_GGTT,
    BATCH_PPGTT,
    DATA_GGTT,
    GPR0,
    HIGH_BASE,
    HIGH_SIZE,
    OUTSIDE,
    PARTITION,
    SECRET_REG,
    WHITELIST,
    make_arena,
    make_ctx,
    put,
    ring_of,
)
from tests.scanner.memory import PAGE, GuestGm

GGTT, PPGTT = AddressSpace.GGTT, AddressSpace.PPGTT
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
u32 = st.integers(0, 0xFFFF_FFFF)
HEADERS = [c.header for c in T.COMMANDS]

#: batch buffers live at these addresses; starts name them (or a neighbour)
BATCHES = [(GGTT, BATCH_GGTT + k * PAGE) for k in range(3)] + \
          [(PPGTT, BATCH_PPGTT + k * PAGE) for k in range(3)]
#: mostly good targets, so that accepted workloads with shadows are common
ADDRS = [DATA_GGTT] * 6 + [0x1000] * 3 + [OUTSIDE, HIGH_BASE + HIGH_SIZE - 4,
                                           HIGH_BASE + HIGH_SIZE]
REGS = [GPR0] * 8 + [SECRET_REG]


@st.composite
def dword_soup(draw: st.DrawFn) -> list[int]:
    """Random dwords, a third of them real headers with random low bits."""
    n = draw(st.integers(0, 64))
    out = []
    for _ in range(n):
        if draw(st.integers(0, 2)) == 0:
            out.append((draw(st.sampled_from(HEADERS)) | draw(st.integers(0, 0xFF))) & 0xFFFF_FFFF)
        else:
            out.append(draw(u32))
    return out


@given(words=dword_soup(), engine=st.sampled_from(T.ENGINES))
@SETTINGS
def test_decode_never_raises_and_paths_agree(words: list[int], engine: int) -> None:
    dec = decoder_for(engine)
    arr = np.array(words, dtype=np.uint32)
    assert dec.classify(arr).tolist() == [dec.classify_one(w) for w in words]
    res = dec.decode(arr)
    pos = 0
    for c in res.commands:
        assert c.offset == pos and c.info.min_length <= c.length <= c.info.max_length
        pos += c.length
    if res.fault is None:
        assert pos == len(words)
    else:
        assert res.fault.offset == pos
        assert res.fault.status in (DecodeStatus.UNKNOWN, DecodeStatus.BAD_LENGTH, None)


@st.composite
def command(draw: st.DrawFn) -> list[int]:
    kind = draw(st.sampled_from([0, 0, 1, 1, 2, 3, 4, 5, 5, 5, 6, 7, 7, 8, 9, 10, 11, 12, 13]))
    addr = draw(st.sampled_from(ADDRS))
    ggtt = draw(st.booleans())
    if kind == 0:
        return C.NOOP
    if kind == 1:
        return C.sdi(addr, draw(u32), ggtt=ggtt, qword=draw(st.booleans()))
    if kind == 2:
        return C.pipe_control(addr, draw(u32), post_sync=draw(st.integers(0, 3)), ggtt=ggtt,
                              notify=draw(st.integers(0, 3)) == 0)
    if kind == 3:
        return C.lri((draw(st.sampled_from(REGS)), draw(u32)))
    if kind == 4:
        return C.srm(draw(st.sampled_from(REGS)), addr, ggtt=ggtt)
    if kind == 5:
        space, gma = draw(st.sampled_from(BATCHES))
        gma += draw(st.sampled_from([0, 0, 0, 8]))
        return C.bb_start(gma, ppgtt=space is PPGTT, second=draw(st.integers(0, 3)) == 0,
                          predicated=draw(st.integers(0, 3)) == 0)
    if kind == 6:
        return C.BB_END
    if kind == 7:
        return C.fill(draw(st.sampled_from(["3DSTATE_VS", "3DPRIMITIVE", "MI_MATH",
                                            "STATE_BASE_ADDRESS", "MI_USER_INTERRUPT",
                                            "MEDIA_OBJECT", "MI_ARB_CHECK"])))
    if kind == 8:
        return C.flush_dw(addr, post_sync=draw(st.integers(0, 1)), ggtt=ggtt,
                          index=draw(st.booleans()))
    if kind == 9:
        return C.semaphore_wait(addr, ggtt=ggtt)
    if kind == 10:
        return C.cond_bb_end(addr, ggtt=ggtt)
    if kind == 11:
        return [draw(u32)]
    if kind == 12:
        return C.cmd("MI_DISPLAY_FLIP", 0, addr & ~0xFFF,
                     flags=draw(st.sampled_from([0, 0, 2, 1, 6])) << 19)
    return C.lrm(GPR0, addr, ggtt=ggtt)


@st.composite
def workload(draw: st.DrawFn) -> tuple[list[list[int]], dict[tuple[AddressSpace, int],
                                                              list[list[int]]]]:
    ring = draw(st.lists(command(), max_size=8))
    batches = {}
    for key in BATCHES:
        if draw(st.integers(0, 3)):
            body = draw(st.lists(command(), max_size=10))
            if draw(st.integers(0, 9)):
                body.append(C.BB_END)
            batches[key] = body
    if batches and draw(st.integers(0, 3)):  # usually start one of them from the ring
        space, gma = draw(st.sampled_from(sorted(batches, key=lambda k: (k[0].value, k[1]))))
        ring.append(C.bb_start(gma, ppgtt=space is PPGTT))
    return ring, batches


def _check_executable(r: ScanResult) -> None:
    """An independent look at what the engine would run."""
    hosts = {s.host_gma: s for s in r.shadows}
    buffers = [(r.ring, True, 0)] + [(s.dwords, s.privileged, s.level) for s in r.shadows]
    dec = decoder_for(r.engine)
    for words, privileged, level in buffers:
        res = dec.decode(words)
        assert res.fault is None
        for c in res.commands:
            cmd = [int(x) for x in words[c.offset:c.offset + c.length]]
            name = c.info.name
            if not privileged:
                assert c.info.privilege is not T.Privilege.PRIVILEGED, name
            if name == "MI_BATCH_BUFFER_START":
                assert not cmd[0] & (1 << 8)  # GGTT: the host's shadow window
                assert cmd[1] | (cmd[2] & 0xFFFF) << 32 in hosts
            if name == "MI_BATCH_BUFFER_END":
                assert level > 0
            if name == "MI_STORE_DATA_IMM" and cmd[0] & (1 << 22):
                assert privileged
                assert PARTITION.contains(cmd[1] & ~3 | (cmd[2] << 32), (c.length - 3) * 4)
            if name == "PIPE_CONTROL" and cmd[1] & (1 << 24) and (cmd[1] >> 14) & 3 \
                    and not cmd[1] & (1 << 21) and not cmd[1] & (1 << 23):
                assert privileged and PARTITION.contains(cmd[2] & ~7 | (cmd[3] << 32), 8)
            if name == "MI_LOAD_REGISTER_IMM":
                assert all(cmd[i] & 0x7FFFFC in WHITELIST for i in range(1, c.length, 2))
            if name in ("MI_STORE_REGISTER_MEM", "MI_LOAD_REGISTER_MEM"):
                assert cmd[1] & 0x7FFFFC in WHITELIST
                if cmd[0] & (1 << 22):
                    assert privileged and PARTITION.contains(cmd[2] & ~3 | (cmd[3] << 32), 4)


@given(w=workload())
@SETTINGS
def test_random_workloads(w) -> None:
    ring_cmds, batches = w
    gm = GuestGm()
    for (space, gma), body in batches.items():
        put(gm, space, gma, *body)
    arena = make_arena()
    limits = ScanLimits(max_commands=200, max_batches=8, max_shadow_bytes=64 * 1024)
    r = scan_workload(ring_of(*ring_cmds), make_ctx(), gm, arena, limits)
    assert isinstance(r, (ScanResult, ScanRejection))
    assert r.commands <= limits.max_commands + 1
    assert sum(n for _, _, n in gm.reads) <= limits.max_shadow_bytes
    if isinstance(r, ScanRejection):
        event(f"rejected: {r.reason.value}")
        assert arena.used == 0
        assert str(r)
        return
    event(f"accepted with {min(len(r.shadows), 3)}+ shadows")
    _check_executable(r)
    # the guest scribbles over all its memory: nothing the engine runs changes
    before = [arena.read(s.host_gma, s.nbytes) for s in r.shadows]
    for key in list(gm.pages):
        gm.pages[key][:] = 0x1180_0001  # MI_UPDATE_GTT headers everywhere
    assert all(np.array_equal(arena.read(s.host_gma, s.nbytes), b)
               for s, b in zip(r.shadows, before, strict=True))
    r.release()
    assert arena.used == 0


@given(words=st.lists(u32, max_size=600), engine=st.sampled_from(T.ENGINES))
@SETTINGS
def test_random_batch_memory_terminates(words: list[int], engine: int) -> None:
    """A batch of random dwords (and the pages after it) always ends the walk in bounds."""
    gm = GuestGm()
    gm.write(PPGTT, BATCH_PPGTT, words or [0])
    limits = ScanLimits(max_commands=300, max_shadow_bytes=16 * 1024)
    r = scan_workload(ring_of(C.bb_start(BATCH_PPGTT, ppgtt=True)), make_ctx(engine), gm,
                      make_arena(), limits)
    assert isinstance(r, (ScanResult, ScanRejection))
    assert r.commands <= limits.max_commands + 1
    event("accepted" if isinstance(r, ScanResult) else f"rejected: {r.reason.value}")
    if isinstance(r, ScanResult):
        _check_executable(r)


AUDITED = [c for c in T.COMMANDS if S.audit_of(c) is not S.Audit.NONE]


@st.composite
def audited_command(draw: st.DrawFn) -> tuple[int, list[int]]:
    """An audited command with random flags and operands at one of its lengths."""
    info = draw(st.sampled_from(AUDITED))
    engine = draw(st.sampled_from([e for e in T.ENGINES if info.engines & (1 << e)]))
    lengths = info.valid_lengths or (info.min_length, info.max_length,
                                     draw(st.integers(info.min_length, info.max_length)))
    n = draw(st.sampled_from(lengths))
    flags = draw(u32) & ~info.length_mask & ((1 << T.MI_OPCODE_SHIFT) - 1
                                             if info.type is T.CommandType.MI else 0)
    head = info.header | flags | (0 if info.fixed_length else n - T.LENGTH_BIAS)
    body = [draw(st.one_of(u32, st.sampled_from([DATA_GGTT, OUTSIDE, GPR0, SECRET_REG, 0])))
            for _ in range(n - 1)]
    return engine, [head, *body]


@given(c=audited_command(), privileged=st.booleans(), hws=st.sampled_from([None, DATA_GGTT]))
@SETTINGS
def test_audits_never_raise(c: tuple[int, list[int]], privileged: bool, hws: int | None) -> None:
    engine, words = c
    gm = GuestGm()
    ctx = make_ctx(engine, hws_pga=hws)
    if privileged:
        ring = ring_of(words)
    else:
        put(gm, PPGTT, BATCH_PPGTT, words, C.BB_END)
        ring = ring_of(C.bb_start(BATCH_PPGTT, ppgtt=True))
    r = scan_workload(ring, ctx, gm, make_arena())
    assert isinstance(r, (ScanResult, ScanRejection))
    event("accepted" if isinstance(r, ScanResult) else f"rejected: {r.reason.value}")


@given(start=st.integers(-(1 << 33), 1 << 33), size=st.integers(-PAGE, 1 << 22),
       head=st.integers(-PAGE, 1 << 22), n=st.integers(0, 8))
@SETTINGS
def test_hostile_ring_registers_never_raise(start: int, size: int, head: int, n: int) -> None:
    ring = RingSection(np.zeros(n, dtype=np.uint32), start, size, head)
    r = scan_workload(ring, make_ctx(), GuestGm(), make_arena())
    assert isinstance(r, (ScanResult, ScanRejection))
