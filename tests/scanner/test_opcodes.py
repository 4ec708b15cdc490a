"""Every opcode of the command table, end to end: the scanner's verdict and the engine's treatment.

For each command and each engine: a minimal instance (its shortest valid
length, zero operands) is scanned in the ring and in a non-privileged batch,
and the same dwords run natively on the software engine followed by a store
that marks how far it got. The scanner and the engine decode the same length
(the marker lands right after the command or the engine stops on the command
itself), a command another engine owns is unknown to both, and each
command's treatment matches the table: skipped (no effect), executed, or an
engine fault (not modelled).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator

import pytest

from gvt_core.device.execution.scanner import AddressSpace, RejectReason, ScanRejection, ScanResult
from gvt_core.device.execution.scanner import table as S
from gvt_core.device.execution.scanner.scan import scan_workload
from gvt_core.guest import commands as cmd
from gvt_core.hw.engine import commands as C
from gvt_core.hw.engine.memory import FaultKind
from gvt_core.hw.engine.native import NativeContext, buffer
from gvt_core.hw.gpu import HostGpu
from tests.scanner import cmds as K
from tests.scanner.env import BATCH_PPGTT, make_arena, make_ctx, put, ring_of
from tests.scanner.memory import GuestGm

#: what the scanner says of a zero-operand instance in the ring, where it is not "accepted".
RING_VERDICT: dict[str, RejectReason] = {
    "MI_UPDATE_GTT": RejectReason.FORBIDDEN_COMMAND,
    "MI_SET_CONTEXT": RejectReason.FORBIDDEN_COMMAND,
    # register 0 is outside the whitelist
    "MI_LOAD_REGISTER_IMM": RejectReason.REGISTER_NOT_ALLOWED,
    "MI_LOAD_REGISTER_REG": RejectReason.REGISTER_NOT_ALLOWED,
    "MI_LOAD_REGISTER_MEM": RejectReason.REGISTER_NOT_ALLOWED,
    "MI_STORE_REGISTER_MEM": RejectReason.REGISTER_NOT_ALLOWED,
    # a flip to surface 0: outside the vGPU's graphics memory
    "MI_DISPLAY_FLIP": RejectReason.GGTT_OUT_OF_PARTITION,
    # a batch at 0 in the GGTT: outside the partition
    "MI_BATCH_BUFFER_START": RejectReason.GGTT_OUT_OF_PARTITION,
    # the end of a batch where there is none
    "MI_BATCH_BUFFER_END": RejectReason.BAD_BATCH_NESTING,
}
MARK = 0xC0DE_0000


def _instance(spec: C.CommandSpec) -> list[int]:
    if spec.name == "MI_LOAD_REGISTER_IMM":  # (offset, value) pairs: 3 dwords at least
        return [K.header(spec.name, 3), 0, 0]
    return K.fill(spec.name)


def _cases() -> Iterator[tuple[C.CommandSpec, int]]:
    for spec in C.COMMANDS:
        for engine in C.ENGINES:
            yield spec, engine


@pytest.fixture(scope="module")
def gpu() -> HostGpu:
    frames = itertools.count(0x10_0000)
    return HostGpu(frame_of=lambda va: next(frames))


@pytest.mark.parametrize(("spec", "engine"), list(_cases()),
                         ids=[f"{s.name}-{e}" for s, e in _cases()])
def test_opcode(spec: C.CommandSpec, engine: int, gpu: HostGpu) -> None:
    words = _instance(spec)
    other = C.lookup(engine, words[0])
    if other is not None and other is not spec:
        # the same opcode is another command on this engine (MEDIA_* vs MFX_*): its own case
        assert not spec.accepts(engine) and other.accepts(engine)
        return
    assert len(words) == spec.length_of(words[0])
    assert spec.min_length <= len(words) <= spec.max_length
    # --- the scanner, in the ring
    r = scan_workload(ring_of(words), make_ctx(engine), GuestGm(), make_arena())
    if not spec.accepts(engine):
        assert isinstance(r, ScanRejection) and r.reason is RejectReason.UNKNOWN_COMMAND
    elif spec.name in RING_VERDICT:
        assert isinstance(r, ScanRejection) and r.reason is RING_VERDICT[spec.name], str(r)
    else:
        assert isinstance(r, ScanResult), str(r)
        assert r.commands == 1
    # --- the scanner, in a non-privileged batch
    if spec.accepts(engine) and spec.name not in RING_VERDICT:
        gm = GuestGm()
        put(gm, AddressSpace.PPGTT, BATCH_PPGTT, words, K.BB_END)
        r = scan_workload(ring_of(K.bb_start(BATCH_PPGTT, ppgtt=True)), make_ctx(engine), gm,
                          make_arena())
        if spec.privilege is C.Privilege.PRIVILEGED:
            assert isinstance(r, ScanRejection) and r.reason is RejectReason.PRIVILEGED_COMMAND
        else:
            assert isinstance(r, ScanResult), str(r)
    # --- the engine: the same dwords, then a marker store
    out = buffer(gpu, 4096)
    ctx = NativeContext(gpu, engine, 4)
    try:
        ctx.emit(words + cmd.store_dword(out.gm, MARK | spec.opcode, ggtt=True))
        done = ctx.run()
        fault = done.fault
        marked = struct.unpack("<I", out.read(0, 4))[0] == MARK | spec.opcode
        if not spec.accepts(engine):
            assert fault is not None and fault.kind in (FaultKind.UNKNOWN_COMMAND,
                                                        FaultKind.WRONG_ENGINE)
            assert not marked
        elif spec.execution is C.Execution.NO_EFFECT:
            assert fault is None and marked, fault
        elif spec.execution is C.Execution.NOT_MODELLED:
            assert fault is not None and fault.kind is FaultKind.NOT_MODELLED
            assert fault.command == spec.name and not marked
        else:  # executed: zero operands may fault (an address 0), never mis-decode
            if fault is None:
                assert marked or spec.name == "MI_CONDITIONAL_BATCH_BUFFER_END"
            elif spec.name == "MI_BATCH_BUFFER_START":  # it ran: the fetch at 0 faulted
                assert fault.kind is FaultKind.UNMAPPED and fault.address == 0
            else:
                assert fault.command == spec.name, fault
                assert fault.kind not in (FaultKind.UNKNOWN_COMMAND, FaultKind.WRONG_ENGINE,
                                          FaultKind.NOT_MODELLED)
    finally:
        ctx.close()
        gpu.host_gm.free(out)


def test_every_entry_has_a_scanner_audit_flag() -> None:
    assert len(S.AUDITS) == len(C.COMMANDS)
    audited = {c.name for c, a in zip(C.COMMANDS, S.AUDITS, strict=True) if a is not S.Audit.NONE}
    assert "MI_LOAD_REGISTER_IMM" in audited and "PIPE_CONTROL" in audited
    # everything an engine executes with a memory or register effect is audited
    for spec in C.COMMANDS:
        if spec.execution is C.Execution.EXECUTED and spec.ggtt_bit is not None:
            assert spec.name in audited, spec.name
