"""Shadow batch buffers: copies taken before the scan, relocated starts, host memory."""

from __future__ import annotations

import numpy as np
import pytest

from gvt_core.device.execution.scanner import (
    AddressSpace,
    AuditContext,
    RejectReason,
    ScanRejection,
    ScanResult,
    scan_workload,
)
from gvt_core.device.execution.scanner.shadow import relocate
from gvt_core.errors import ShadowAllocError
from tests.scanner import cmds as C
from tests.scanner.arena import ShadowArena
from tests.scanner.env import (
    BATCH_GGTT,
    BATCH_PPGTT,
    DATA_GGTT,
    HOST_SHADOW_BASE,
    OUTSIDE,
    put,
    ring_of,
)
from tests.scanner.memory import PAGE, GuestGm

GGTT, PPGTT = AddressSpace.GGTT, AddressSpace.PPGTT


def ok(result: ScanResult | ScanRejection) -> ScanResult:
    assert isinstance(result, ScanResult), str(result)
    return result


def test_relocate_keeps_the_other_header_bits() -> None:
    words = np.array(C.bb_start(0x7_1234_5678, ppgtt=True, second=True, predicated=True),
                     dtype=np.uint32)
    relocate(words, 0, 0x1_0040_2000)
    assert int(words[0]) & (1 << 8) == 0  # GGTT now
    assert int(words[0]) & (1 << 22) and int(words[0]) & (1 << 15)
    assert int(words[1]) == 0x0040_2000 and int(words[2]) == 0x1


def test_guest_rewrite_after_scan_changes_nothing(gm: GuestGm, ctx: AuditContext,
                                                  arena: ShadowArena) -> None:
    put(gm, PPGTT, BATCH_PPGTT, C.sdi(0x1000, 1, ggtt=False), C.BB_END)
    r = ok(scan_workload(ring_of(C.bb_start(BATCH_PPGTT, ppgtt=True)), ctx, gm, arena))
    (s,) = r.shadows
    before = arena.read(s.host_gma, s.nbytes).copy()
    # the guest now turns its batch into a GGTT store at another vGPU's memory
    put(gm, PPGTT, BATCH_PPGTT, C.sdi(OUTSIDE, 0xBAD), C.BB_END)
    assert np.array_equal(arena.read(s.host_gma, s.nbytes), before)
    assert int(r.ring[1]) == s.host_gma  # the engine starts the copy, not guest memory


class _RewritingReader:
    """A guest that rewrites its batch while the scanner is fetching it (another vCPU)."""

    def __init__(self, gm: GuestGm, at: int, evil: list[int]) -> None:
        self.gm, self.at, self.evil, self.reads = gm, at, evil, 0

    def read(self, space: AddressSpace, gma: int, nbytes: int) -> np.ndarray:
        data = self.gm.read(space, gma, nbytes)
        self.reads += 1
        if self.reads == 1:
            self.gm.write(space, self.at, self.evil)  # right after the first chunk was taken
        return data


def test_rewrite_during_the_scan_never_reaches_the_engine(gm: GuestGm, ctx: AuditContext,
                                                          arena: ShadowArena) -> None:
    good = C.sdi(DATA_GGTT, 1)
    put(gm, GGTT, BATCH_GGTT, good, *([C.NOOP] * 100), C.BB_END)
    reader = _RewritingReader(gm, BATCH_GGTT, C.sdi(OUTSIDE, 0xBAD))
    r = ok(scan_workload(ring_of(C.bb_start(BATCH_GGTT)), ctx, reader, arena))
    assert reader.reads > 1
    (s,) = r.shadows
    assert s.dwords[:4].tolist() == good  # what was audited is what runs
    assert arena.read(s.host_gma, 16).tolist() == good


def test_allocation_failure_leaks_nothing(gm: GuestGm, ctx: AuditContext) -> None:
    small = ShadowArena(HOST_SHADOW_BASE, 2 * PAGE)
    for i in range(3):
        put(gm, GGTT, BATCH_GGTT + i * PAGE, C.BB_END)
    ring = ring_of(*[C.bb_start(BATCH_GGTT + i * PAGE) for i in range(3)])
    r = scan_workload(ring, ctx, gm, small)
    assert isinstance(r, ScanRejection) and r.reason is RejectReason.SHADOW_ALLOC_FAILED
    assert (r.offset, r.command) == (6, "MI_BATCH_BUFFER_START")  # the third start
    assert small.used == 0
    ok(scan_workload(ring_of(*[C.bb_start(BATCH_GGTT + i * PAGE) for i in range(2)]), ctx, gm,
                     small))


def test_release(gm: GuestGm, ctx: AuditContext, arena: ShadowArena) -> None:
    put(gm, GGTT, BATCH_GGTT, C.bb_start(BATCH_GGTT + PAGE, second=True), C.BB_END)
    put(gm, GGTT, BATCH_GGTT + PAGE, C.BB_END)
    r = ok(scan_workload(ring_of(C.bb_start(BATCH_GGTT)), ctx, gm, arena))
    assert arena.used == 2 * PAGE
    first, second = r.shadows
    assert r.shadow_at(first.host_gma) is first and r.shadow_at(second.host_gma) is second
    assert r.shadow_at(0x1234) is None
    r.release()
    r.release()
    assert arena.used == 0 and r.released
    with pytest.raises(ValueError, match="no host memory"):
        _ = first.host_gma


def test_arena() -> None:
    arena = ShadowArena(HOST_SHADOW_BASE, 4 * PAGE)
    a = arena.allocate(1)
    b = arena.allocate(PAGE + 1)
    assert (a.gma, a.nbytes, b.gma, b.nbytes) == (HOST_SHADOW_BASE, PAGE,
                                                  HOST_SHADOW_BASE + PAGE, 2 * PAGE)
    with pytest.raises(ShadowAllocError, match="cannot allocate"):
        arena.allocate(2 * PAGE)
    b.write(8, np.array([1, 2], dtype=np.uint32))
    assert b.read(8, 8).tolist() == [1, 2]
    assert arena.read(b.gma + 8, 8).tolist() == [1, 2]
    with pytest.raises(ValueError, match="outside"):
        b.write(2 * PAGE - 4, np.array([1, 2], dtype=np.uint32))
    with pytest.raises(ValueError, match="not inside"):
        arena.read(HOST_SHADOW_BASE + 4 * PAGE, 4)
    b.free()
    b.free()
    with pytest.raises(ValueError, match="freed"):
        b.read(0, 4)
    assert arena.used == PAGE
    assert arena.allocate(3 * PAGE).gma == HOST_SHADOW_BASE + PAGE
    with pytest.raises(ValueError, match="whole number of pages"):
        ShadowArena(HOST_SHADOW_BASE + 1, PAGE)
