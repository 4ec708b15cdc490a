"""The per-vGPU stage: counters, each reason logged once, rejection records."""

from __future__ import annotations

import errno
import logging

import pytest

from gvt_core.device.execution.scanner import (
    AddressSpace,
    BufferKind,
    CommandScanner,
    RejectReason,
    ScanRejection,
    ScanResult,
)
from tests.scanner import cmds as C
from tests.scanner.arena import ShadowArena
from tests.scanner.env import BATCH_PPGTT, DATA_GGTT, OUTSIDE, make_ctx, put, ring_of
from tests.scanner.memory import GuestGm


def test_counters_and_log_once(gm: GuestGm, arena: ShadowArena,
                               caplog: pytest.LogCaptureFixture) -> None:
    scanner = CommandScanner("vgpu1")
    ctx = make_ctx()
    put(gm, AddressSpace.PPGTT, BATCH_PPGTT, C.NOOP, C.BB_END)
    good = scanner.scan(ring_of(C.bb_start(BATCH_PPGTT, ppgtt=True), C.NOOP), ctx, gm, arena)
    assert isinstance(good, ScanResult)
    with caplog.at_level(logging.DEBUG, logger="gvt_core.device.execution.scanner"):
        for _ in range(3):
            bad = scanner.scan(ring_of(C.NOOP, C.sdi(OUTSIDE, 1)), ctx, gm, arena)
            assert isinstance(bad, ScanRejection)
        scanner.scan(ring_of([0x0880_0000]), ctx, gm, arena)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once per reason
    assert "vgpu1" in warnings[0].getMessage() and "ggtt-out-of-partition" in \
        warnings[0].getMessage()
    c = scanner.counters
    assert (c.workloads_scanned, c.workloads_rejected) == (5, 4)
    assert c.commands_scanned == 4 + 3 * 2 + 0  # an unknown header is not a command
    assert c.commands_rejected == 4
    assert (c.batches_shadowed, c.shadow_bytes) == (1, 256)
    assert c.rejected_by_reason == {"ggtt-out-of-partition": 3, "unknown-command": 1}
    assert c.as_dict()["rejected_by_reason"] == c.rejected_by_reason


def test_rejection_record() -> None:
    gm, arena = GuestGm(), ShadowArena(0x100_0000, 0x10000)
    put(gm, AddressSpace.PPGTT, BATCH_PPGTT, C.NOOP, C.sdi(DATA_GGTT, 1), C.BB_END)
    rej = CommandScanner().scan(ring_of(C.bb_start(BATCH_PPGTT, ppgtt=True)), make_ctx(), gm,
                                arena)
    assert isinstance(rej, ScanRejection)
    assert (rej.buffer, rej.space, rej.level, rej.offset, rej.gma) == (
        BufferKind.BATCH, "ppgtt", 1, 1, BATCH_PPGTT + 4)
    assert rej.command == "MI_STORE_DATA_IMM" and rej.header == C.sdi(DATA_GGTT, 1)[0]
    text = str(rej)
    assert "privileged-command" in text and "level-1 PPGTT batch" in text
    assert "MI_STORE_DATA_IMM" in text and f"{BATCH_PPGTT + 4:#x}" in text


def test_every_reason_has_an_upstream_errno() -> None:
    allowed = {errno.EBADRQC, errno.EFAULT, errno.EPERM, errno.EINVAL, errno.ENOMEM}
    for r in RejectReason:
        assert r.errno in allowed
