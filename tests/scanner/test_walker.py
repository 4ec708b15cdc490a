"""Walking the ring section and the batch buffers it starts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gvt_core.device.execution.scanner import (
    AddressSpace,
    AuditContext,
    RejectReason,
    RingSection,
    ScanLimits,
    ScanRejection,
    ScanResult,
    scan_workload,
)
from gvt_core.device.execution.scanner.decoder import decoder_for
from gvt_core.hw import regs
from tests.scanner import cmds as C
from tests.scanner.arena import ShadowArena
from tests.scanner.env import (
    BATCH_GGTT,
    BATCH_PPGTT,
    DATA_GGTT,
    HOST_SHADOW_BASE,
    LOW_BASE,
    LOW_SIZE,
    OUTSIDE,
    RING_GMA,
    RING_SIZE,
    make_ctx,
    put,
    ring_of,
)
from tests.scanner.memory import PAGE, GuestGm

GGTT, PPGTT = AddressSpace.GGTT, AddressSpace.PPGTT


def ok(result: ScanResult | ScanRejection) -> ScanResult:
    assert isinstance(result, ScanResult), str(result)
    return result


def rejected(result: ScanResult | ScanRejection, reason: RejectReason) -> ScanRejection:
    assert isinstance(result, ScanRejection), "accepted"
    assert result.reason is reason, str(result)
    return result


def test_ring_only(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    ring = ring_of(C.NOOP, C.sdi(DATA_GGTT, 7), C.pipe_control(DATA_GGTT, 1), C.NOOP)
    r = ok(scan_workload(ring, ctx, gm, arena))
    assert r.commands == 4 and r.shadows == () and r.relocations == ()
    assert np.array_equal(r.ring, ring.dwords)
    assert gm.reads == []  # the ring section was already copied by the workload


def test_empty_ring(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    r = ok(scan_workload(ring_of(), ctx, gm, arena))
    assert r.commands == 0


def test_ring_rejections(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    rej = rejected(scan_workload(ring_of(C.NOOP, [0x0880_0000]), ctx, gm, arena),
                   RejectReason.UNKNOWN_COMMAND)
    assert (rej.offset, rej.gma, rej.header, rej.command) == (1, RING_GMA + 4, 0x0880_0000, None)
    rej = rejected(scan_workload(ring_of(C.NOOP, C.sdi(DATA_GGTT, 1)[:3]), ctx, gm, arena),
                   RejectReason.TRUNCATED_COMMAND)
    assert rej.command == "MI_STORE_DATA_IMM" and rej.offset == 1
    rejected(scan_workload(ring_of(C.BB_END), ctx, gm, arena), RejectReason.BAD_BATCH_NESTING)
    rejected(scan_workload(ring_of([C.header("MI_STORE_DATA_IMM", 3), 0, 0]), ctx, gm, arena),
             RejectReason.BAD_LENGTH)


def test_ring_outside_partition(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    ring = ring_of(C.NOOP, start=OUTSIDE)
    rejected(scan_workload(ring, ctx, gm, arena), RejectReason.RING_OUT_OF_PARTITION)
    ring = ring_of(C.NOOP, start=LOW_BASE + LOW_SIZE - PAGE, size=2 * PAGE)
    rejected(scan_workload(ring, ctx, gm, arena), RejectReason.RING_OUT_OF_PARTITION)
    bad = RingSection(np.zeros(1, dtype=np.uint32), RING_GMA, RING_SIZE, 2)  # unaligned head
    rejected(scan_workload(bad, ctx, gm, arena), RejectReason.RING_OUT_OF_PARTITION)


def test_wrapped_ring_positions(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    head = RING_SIZE - 8
    ring = ring_of(C.NOOP, C.NOOP, C.NOOP, [0x0880_0000], head=head)
    rej = rejected(scan_workload(ring, ctx, gm, arena), RejectReason.UNKNOWN_COMMAND)
    assert rej.offset == 3 and rej.gma == RING_GMA + 4  # wrapped past the ring's end


def test_first_level_ggtt_batch(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    put(gm, GGTT, BATCH_GGTT, C.sdi(DATA_GGTT, 5), C.NOOP, C.BB_END)
    r = ok(scan_workload(ring_of(C.bb_start(BATCH_GGTT), C.NOOP), ctx, gm, arena))
    assert r.commands == 5
    (s,) = r.shadows
    assert (s.space, s.guest_gma, s.level, s.privileged) == (GGTT, BATCH_GGTT, 1, True)
    assert s.dwords.tolist() == C.sdi(DATA_GGTT, 5) + C.NOOP + C.BB_END
    # the ring's start now names the shadow, in GGTT space
    assert r.ring[0] & (1 << 8) == 0
    assert r.ring[1] == s.host_gma and r.ring[2] == 0
    assert s.host_gma >= HOST_SHADOW_BASE
    assert arena.read(s.host_gma, s.nbytes).tolist() == s.dwords.tolist()


def test_ppgtt_batch_is_non_privileged(gm: GuestGm, ctx: AuditContext,
                                       arena: ShadowArena) -> None:
    put(gm, PPGTT, BATCH_PPGTT, C.sdi(0x1000, 1, ggtt=False), C.BB_END)
    r = ok(scan_workload(ring_of(C.bb_start(BATCH_PPGTT, ppgtt=True)), ctx, gm, arena))
    (s,) = r.shadows
    assert (s.space, s.privileged) == (PPGTT, False)
    assert r.ring[0] & (1 << 8) == 0 and r.ring[1] == s.host_gma & 0xFFFF_FFFC
    assert all(space is PPGTT for space, _, _ in gm.reads)
    # a GGTT store in that batch is a privilege violation
    put(gm, PPGTT, BATCH_PPGTT, C.sdi(DATA_GGTT, 1), C.BB_END)
    rej = rejected(scan_workload(ring_of(C.bb_start(BATCH_PPGTT, ppgtt=True)), ctx, gm, arena),
                   RejectReason.PRIVILEGED_COMMAND)
    assert (rej.space, rej.buffer_gma, rej.level, rej.offset) == ("ppgtt", BATCH_PPGTT, 1, 0)


def test_second_level_and_return(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    second = BATCH_GGTT + 0x4000
    put(gm, GGTT, BATCH_GGTT, C.NOOP, C.bb_start(second, second=True), C.sdi(DATA_GGTT, 2),
        C.BB_END)
    put(gm, GGTT, second, C.sdi(DATA_GGTT + 8, 3), C.BB_END)
    r = ok(scan_workload(ring_of(C.bb_start(BATCH_GGTT)), ctx, gm, arena))
    first, sec = r.shadows
    assert (first.level, sec.level) == (1, 2)
    assert len(first.dwords) == 1 + 3 + 4 + 1  # scanned past the call to its own end
    # the call inside the first-level shadow is relocated to the second-level shadow
    assert first.dwords[1] & (1 << 22)  # still a second-level call
    assert first.dwords[2] == sec.host_gma
    assert arena.read(first.host_gma, first.nbytes)[2] == sec.host_gma
    assert {(x.parent, x.target) for x in r.relocations} == {(-1, 0), (0, 1)}


def test_chained_batches(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    b2, b3 = BATCH_GGTT + 0x2000, BATCH_GGTT + 0x3000
    put(gm, GGTT, BATCH_GGTT, C.NOOP, C.bb_start(b2), [0xFFFF_FFFF])  # garbage after a chain
    put(gm, GGTT, b2, C.NOOP, C.bb_start(b3, ppgtt=False))
    put(gm, GGTT, b3, C.sdi(DATA_GGTT, 9), C.BB_END)
    r = ok(scan_workload(ring_of(C.bb_start(BATCH_GGTT)), ctx, gm, arena))
    assert [s.guest_gma for s in r.shadows] == [BATCH_GGTT, b2, b3]
    assert [s.level for s in r.shadows] == [1, 1, 1]
    assert len(r.shadows[0].dwords) == 4  # the chain ends the batch: garbage never decoded


def test_second_level_chain(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    s1, s2 = BATCH_GGTT + 0x2000, BATCH_GGTT + 0x3000
    put(gm, GGTT, BATCH_GGTT, C.bb_start(s1, second=True), C.BB_END)
    put(gm, GGTT, s1, C.bb_start(s2, second=True))
    put(gm, GGTT, s2, C.BB_END)
    r = ok(scan_workload(ring_of(C.bb_start(BATCH_GGTT)), ctx, gm, arena))
    assert [s.level for s in r.shadows] == [1, 2, 2]


def test_predicated_chain_falls_through(gm: GuestGm, ctx: AuditContext,
                                        arena: ShadowArena) -> None:
    b2 = BATCH_GGTT + 0x2000
    put(gm, GGTT, BATCH_GGTT, C.bb_start(b2, predicated=True), C.sdi(OUTSIDE, 1), C.BB_END)
    put(gm, GGTT, b2, C.BB_END)
    rej = rejected(scan_workload(ring_of(C.bb_start(BATCH_GGTT)), ctx, gm, arena),
                   RejectReason.GGTT_OUT_OF_PARTITION)
    assert rej.offset == 3  # the store after the predicated chain was scanned


@pytest.mark.parametrize("case", ["second-from-ring", "first-from-second", "add-offset",
                                  "high-bits", "ggtt-from-ppgtt"])
def test_nesting_rules(gm: GuestGm, ctx: AuditContext, arena: ShadowArena, case: str) -> None:
    s1 = BATCH_GGTT + 0x2000
    reason = RejectReason.BAD_BATCH_NESTING
    if case == "second-from-ring":
        ring = ring_of(C.bb_start(BATCH_GGTT, second=True))
    elif case == "first-from-second":
        put(gm, GGTT, BATCH_GGTT, C.bb_start(s1, second=True), C.BB_END)
        put(gm, GGTT, s1, C.bb_start(BATCH_GGTT))
        ring = ring_of(C.bb_start(BATCH_GGTT))
    elif case == "add-offset":
        ring = ring_of([C.bb_start(BATCH_GGTT)[0] | (1 << 16), *C.bb_start(BATCH_GGTT)[1:]])
        reason = RejectReason.MALFORMED_COMMAND
    elif case == "high-bits":
        start = C.bb_start(BATCH_GGTT)
        ring = ring_of([start[0], start[1], 0x0001_0000])
        reason = RejectReason.MALFORMED_COMMAND
    else:
        put(gm, PPGTT, BATCH_PPGTT, C.bb_start(BATCH_GGTT, second=True), C.BB_END)
        ring = ring_of(C.bb_start(BATCH_PPGTT, ppgtt=True))
        reason = RejectReason.PRIVILEGED_COMMAND
    rejected(scan_workload(ring, ctx, gm, arena), reason)


def test_depth_limit(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    put(gm, GGTT, BATCH_GGTT, C.bb_start(BATCH_GGTT + 0x2000, second=True), C.BB_END)
    put(gm, GGTT, BATCH_GGTT + 0x2000, C.BB_END)
    ring = ring_of(C.bb_start(BATCH_GGTT))
    rejected(scan_workload(ring, ctx, gm, arena, ScanLimits(max_level=1)),
             RejectReason.BAD_BATCH_NESTING)
    rejected(scan_workload(ring, ctx, gm, arena, ScanLimits(max_level=0)),
             RejectReason.BAD_BATCH_NESTING)
    ok(scan_workload(ring, ctx, gm, arena))
    with pytest.raises(ValueError, match="max_level"):
        ScanLimits(max_level=3)


def test_self_jumping_batch_terminates(gm: GuestGm, ctx: AuditContext,
                                       arena: ShadowArena) -> None:
    """A batch chaining to itself is scanned once; the engine's watchdog handles the loop."""
    put(gm, GGTT, BATCH_GGTT, C.NOOP, C.bb_start(BATCH_GGTT))
    r = ok(scan_workload(ring_of(C.bb_start(BATCH_GGTT)), ctx, gm, arena))
    (s,) = r.shadows
    assert s.dwords[2] == s.host_gma  # the loop now runs inside the shadow
    assert len(r.relocations) == 2


def test_batch_reached_twice_is_shadowed_once(gm: GuestGm, ctx: AuditContext,
                                              arena: ShadowArena) -> None:
    put(gm, GGTT, BATCH_GGTT, C.BB_END)
    r = ok(scan_workload(ring_of(C.bb_start(BATCH_GGTT), C.bb_start(BATCH_GGTT)), ctx, gm,
                         arena))
    assert len(r.shadows) == 1 and len(r.relocations) == 2
    assert r.ring[1] == r.ring[4] == r.shadows[0].host_gma


def test_budget(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    put(gm, GGTT, BATCH_GGTT, *([C.NOOP] * 100), C.BB_END)
    ring = ring_of(C.bb_start(BATCH_GGTT))
    ok(scan_workload(ring, ctx, gm, arena, ScanLimits(max_commands=102)))
    rej = rejected(scan_workload(ring, ctx, gm, arena, ScanLimits(max_commands=101)),
                   RejectReason.BUDGET_EXCEEDED)
    assert rej.commands == 102


def test_batch_and_byte_limits(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    chain = [BATCH_GGTT + i * PAGE for i in range(5)]
    for a, b in itertools.pairwise(chain):
        put(gm, GGTT, a, C.bb_start(b))
    put(gm, GGTT, chain[-1], C.BB_END)
    ring = ring_of(C.bb_start(chain[0]))
    ok(scan_workload(ring, ctx, gm, arena, ScanLimits(max_batches=5)))
    rejected(scan_workload(ring, ctx, gm, arena, ScanLimits(max_batches=4)),
             RejectReason.SHADOW_LIMIT)
    put(gm, GGTT, BATCH_GGTT, *([C.NOOP] * 3000), C.BB_END)
    ring = ring_of(C.bb_start(BATCH_GGTT))
    rejected(scan_workload(ring, ctx, gm, arena, ScanLimits(max_shadow_bytes=8192)),
             RejectReason.SHADOW_LIMIT)


def test_end_found_by_walking_never_reads_past_it(gm: GuestGm, ctx: AuditContext,
                                                  arena: ShadowArena) -> None:
    """A batch ending just before an unmapped page is fine; one running into it faults."""
    last = BATCH_GGTT + PAGE - 12
    put(gm, GGTT, last, C.NOOP, C.NOOP, C.BB_END)  # ends exactly at the page end
    gm.unmap(GGTT, BATCH_GGTT + PAGE)
    r = ok(scan_workload(ring_of(C.bb_start(last)), ctx, gm, arena))
    assert r.shadows[0].dwords.size == 3
    assert all(gma + n <= BATCH_GGTT + PAGE for _, gma, n in gm.reads)
    put(gm, GGTT, last, C.NOOP, C.NOOP, C.NOOP)  # no end: the walk reaches the next page
    gm.unmap(GGTT, BATCH_GGTT + PAGE)
    rej = rejected(scan_workload(ring_of(C.bb_start(last)), ctx, gm, arena),
                   RejectReason.BATCH_FETCH_FAULT)
    assert rej.offset == 3


def test_command_spanning_pages(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    start = BATCH_GGTT + PAGE - 8
    put(gm, GGTT, start, C.sdi(DATA_GGTT, 1), C.BB_END)
    r = ok(scan_workload(ring_of(C.bb_start(start)), ctx, gm, arena))
    assert r.shadows[0].dwords.tolist() == C.sdi(DATA_GGTT, 1) + C.BB_END


def test_ggtt_batch_outside_partition(gm: GuestGm, ctx: AuditContext,
                                      arena: ShadowArena) -> None:
    put(gm, GGTT, OUTSIDE, C.BB_END)
    rej = rejected(scan_workload(ring_of(C.bb_start(OUTSIDE)), ctx, gm, arena),
                   RejectReason.GGTT_OUT_OF_PARTITION)
    assert rej.buffer_gma == OUTSIDE
    assert gm.reads == []  # never read: another vGPU's memory stays unread
    end = LOW_BASE + LOW_SIZE
    put(gm, GGTT, end - 8, C.NOOP, C.NOOP)  # runs off the end of the partition
    gm.write(GGTT, end, C.BB_END)
    rejected(scan_workload(ring_of(C.bb_start(end - 8)), ctx, gm, arena),
             RejectReason.GGTT_OUT_OF_PARTITION)
    assert all(gma + n <= end for _, gma, n in gm.reads)


def test_unmapped_batch(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    rej = rejected(scan_workload(ring_of(C.bb_start(BATCH_PPGTT, ppgtt=True)), ctx, gm, arena),
                   RejectReason.BATCH_FETCH_FAULT)
    assert "not mapped" in rej.detail


def test_fetch_grows_by_chunks(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    put(gm, GGTT, BATCH_GGTT, *([C.NOOP] * 2000), C.BB_END)
    ok(scan_workload(ring_of(C.bb_start(BATCH_GGTT)), ctx, gm, arena))
    sizes = [n for _, _, n in gm.reads]
    assert sizes[:5] == [256, 512, 1024, 2048, 256]  # doubling, then cut at the page end
    assert max(sizes) <= PAGE


def test_other_engines(gm: GuestGm, arena: ShadowArena) -> None:
    bcs = make_ctx(regs.ENGINE_BCS)
    put(gm, PPGTT, BATCH_PPGTT, C.xy_color_blt(0x10000), C.xy_src_copy_blt(0x20000, 0x30000),
        C.flush_dw(post_sync=0), C.BB_END)
    r = ok(scan_workload(ring_of(C.bb_start(BATCH_PPGTT, ppgtt=True)), bcs, gm, arena))
    assert r.commands == 5
    rcs_ring = ring_of(C.bb_start(BATCH_PPGTT, ppgtt=True))
    rejected(scan_workload(rcs_ring, make_ctx(), gm, arena), RejectReason.UNKNOWN_COMMAND)
    for engine in (regs.ENGINE_VCS, regs.ENGINE_VCS2, regs.ENGINE_VECS):
        ok(scan_workload(ring_of(C.NOOP, C.flush_dw(post_sync=0)), make_ctx(engine), gm, arena))
        rejected(scan_workload(ring_of(C.fill("PIPE_CONTROL")), make_ctx(engine), gm, arena),
                 RejectReason.UNKNOWN_COMMAND)


def test_decoder_and_walker_agree(ctx: AuditContext) -> None:
    words = C.NOOP + C.sdi(DATA_GGTT, 1) + C.fill("3DSTATE_VS") + C.fill("3DPRIMITIVE")
    res = decoder_for(regs.ENGINE_RCS).decode(np.array(words, dtype=np.uint32))
    assert res.fault is None
    assert [(c.offset, c.length, c.info.name) for c in res.commands] == [
        (0, 1, "MI_NOOP"), (1, 4, "MI_STORE_DATA_IMM"), (5, 6, "3DSTATE_VS"),
        (11, 2, "3DPRIMITIVE")]
