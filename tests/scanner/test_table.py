"""The command table: every opcode decodes with its length rule and flags; Mesa cross-check."""

from __future__ import annotations

import numpy as np
import pytest

from gvt_core.device.execution.scanner import table as S
from gvt_core.device.execution.scanner.decoder import DecodeStatus, decoder_for, unpack
from gvt_core.hw import regs
from gvt_core.hw.engine import commands as T
from tests.scanner.mesa_gen8 import MESA_GEN8

ENGINES = T.ENGINES


def _classify(engine: int, header: int) -> tuple[int, DecodeStatus, int]:
    """Both decoder paths, which must agree."""
    dec = decoder_for(engine)
    one = dec.classify_one(header)
    vec = int(dec.classify(np.array([header], dtype=np.uint32))[0])
    assert one == vec
    return unpack(one)


@pytest.mark.parametrize("info", T.COMMANDS, ids=lambda c: c.name)
def test_every_command_decodes_with_its_length_rule(info: T.CommandSpec) -> None:
    index = T.COMMANDS.index(info)
    for engine in ENGINES:
        accepts = bool(info.engines & (1 << engine)) and info.type in T.ENGINE_TYPES[engine]
        lengths = sorted({info.min_length, info.max_length, *info.valid_lengths})
        for length in lengths:
            hdr = info.header | (0 if info.fixed_length else length - T.LENGTH_BIAS)
            entry, status, got = _classify(engine, hdr)
            if accepts:
                assert (entry, status, got) == (index, DecodeStatus.OK, length), engine
                assert T.lookup(engine, hdr) is info
            else:
                assert entry != index
                assert T.lookup(engine, hdr) is not info
        if not accepts:
            continue
        if info.fixed_length is not None:
            # the low bits of a fixed-length header are flags, never a length
            entry, status, got = _classify(engine, info.header | 0x3F)
            assert (entry, status, got) == (index, DecodeStatus.OK, info.fixed_length)
            continue
        too_long = info.max_length + 1
        if too_long - T.LENGTH_BIAS <= info.length_mask:
            hdr = info.header | (too_long - T.LENGTH_BIAS)
            assert _classify(engine, hdr) == (index, DecodeStatus.BAD_LENGTH, too_long)
        too_short = info.min_length - 1
        if too_short >= T.LENGTH_BIAS:
            hdr = info.header | (too_short - T.LENGTH_BIAS)
            assert _classify(engine, hdr) == (index, DecodeStatus.BAD_LENGTH, too_short)
        gaps = [n for n in range(info.min_length, info.max_length + 1)
                if info.valid_lengths and n not in info.valid_lengths]
        for n in gaps:  # only the exact lengths of a layout-checked command pass
            hdr = info.header | (n - T.LENGTH_BIAS)
            assert _classify(engine, hdr)[1] is DecodeStatus.OK  # the audit checks these
    # flags are coherent with the audits that need them
    if info.privilege is T.Privilege.GGTT_PRIVILEGED:
        assert info.ggtt_bit is not None
    if info.ggtt_bit is not None:
        assert info.addr_dwords, "a GGTT bit without an address"


def test_known_headers() -> None:
    rcs, bcs = regs.ENGINE_RCS, regs.ENGINE_BCS
    cases = [
        (rcs, 0x18800001, "MI_BATCH_BUFFER_START", 3),  # facts 8.5: the WA-context jump
        (rcs, 0x05000000, "MI_BATCH_BUFFER_END", 1),
        (rcs, 0x7A000004, "PIPE_CONTROL", 6),
        (rcs, 0x11000001, "MI_LOAD_REGISTER_IMM", 3),
        (rcs, 0x10400002, "MI_STORE_DATA_IMM", 4),
        (bcs, 0x13000003, "MI_FLUSH_DW", 5),
        (bcs, 0x54300005, "XY_COLOR_BLT", 7),
        (bcs, 0x54F00008, "XY_SRC_COPY_BLT", 10),
        (rcs, 0x7B000005, "3DPRIMITIVE", 7),
        (rcs, 0x69040000, "PIPELINE_SELECT", 1),
        (rcs, 0x61010000 | 14, "STATE_BASE_ADDRESS", 16),
    ]
    for engine, hdr, name, length in cases:
        entry, status, got = _classify(engine, hdr)
        assert T.COMMANDS[entry].name == name and status is DecodeStatus.OK and got == length


def test_unknown_headers_are_unknown_not_skipped() -> None:
    for engine, hdr in [
        (regs.ENGINE_RCS, 0x0880_0000),  # MI opcode 0x11: not defined
        (regs.ENGINE_RCS, 0x5430_0005),  # XY_COLOR_BLT on the render engine
        (regs.ENGINE_BCS, 0x7A00_0004),  # PIPE_CONTROL on the blitter
        (regs.ENGINE_VCS, 0x7A00_0004),
        (regs.ENGINE_RCS, 0x2000_0000),  # command type 1
        (regs.ENGINE_RCS, 0xE000_0000),  # command type 7
        (regs.ENGINE_RCS, 0x7B0B_0000),  # upstream's IVB 3DSTATE_VF_STATISTICS, not GEN8
        (regs.ENGINE_RCS, 0x6101_000E | (1 << 26)),  # 3D sub-opcode with no entry
    ]:
        assert _classify(engine, hdr)[1] is DecodeStatus.UNKNOWN, hex(hdr)


def test_facts_mi_opcodes_all_present() -> None:
    facts_82 = [*range(0x00, 0x10), 0x12, 0x13, 0x14, 0x16, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x20,
                0x21, 0x22, 0x23, 0x24, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2D, 0x2E, 0x2F,
                0x31, 0x36]
    mi = {c.opcode for c in T.MI_COMMANDS}
    assert set(facts_82) == mi


def test_table_counts_by_class() -> None:
    assert (len(T.MI_COMMANDS), len(T.BLT_COMMANDS), len(T.GFX_COMMANDS),
            len(T.MFX_COMMANDS), len(T.VEBOX_COMMANDS)) == (42, 24, 115, 40, 3)
    assert len(T.COMMANDS) == 224


def _mesa_match() -> dict[str, tuple[T.CommandSpec, object]]:
    ours = {(int(c.type), c.opcode): c for c in T.COMMANDS
            if c.type is T.CommandType.MI or (c.type is T.CommandType.GFX and c.engines & T.R_RCS)}
    return {m_name: (ours[(m.type, m.key)], m) for m_name, m in MESA_GEN8.items()
            if (m.type, m.key) in ours}


def test_mesa_cross_check_counts() -> None:
    """The counts the table's docstring states."""
    matched = _mesa_match()
    assert len(matched) == 136
    unmatched = sorted(set(MESA_GEN8) - set(matched))
    assert unmatched == ["MEDIA_OBJECT_GRPID", "SWTESS_BASE_ADDRESS"]
    rule_disagree, exact_disagree, addr_disagree, names = [], [], [], []
    for m_name, (c, m) in matched.items():
        if c.fixed_length is not None:
            ok = m.length_bits is None and m.length == c.fixed_length and m.bias == 1
        else:
            ok = m.length_bits == c.length_bits and m.bias == T.LENGTH_BIAS
        if not ok:
            rule_disagree.append(c.name)
        if c.valid_lengths and m.length is not None and m.length not in c.valid_lengths:
            exact_disagree.append(c.name)
        if set(c.addr_dwords) != set(m.addr_dwords):
            addr_disagree.append(c.name)
        if c.name != m_name:
            names.append(c.name)
    assert rule_disagree == []  # MI_MATH and MI_LOAD_SCAN_LINES_INCL follow Mesa
    assert exact_disagree == ["MI_CONDITIONAL_BATCH_BUFFER_END"]  # Mesa says 3, its fields 4
    assert addr_disagree == []
    assert names == []  # hardware names throughout


def test_upstream_names_kept() -> None:
    renamed = {c.name: c.upstream_name for c in T.COMMANDS if c.upstream_name}
    assert renamed["MI_ATOMIC"] == "MI_OP_2F"
    assert renamed["MI_COPY_MEM_MEM"] == "MI_OP_2E"
    assert renamed["GPGPU_CSR_BASE_ADDRESS"] == "OP_3D_MEDIA_0_1_4"


def test_engine_decode_types() -> None:
    """RCS decodes MI + 3D, BCS MI + 2D, video engines MI + their type-3 commands."""
    for engine in ENGINES:
        for c in T.COMMANDS:
            if c.engines & (1 << engine):
                assert c.type in T.ENGINE_TYPES[engine], (c.name, engine)


def test_mesa_sized_commands_decode() -> None:
    """A command of the size Mesa's GEN8 XML gives passes the length rule (Mesa emits them)."""
    for _, (c, m) in _mesa_match().items():
        if m.length is None or c.name == "MI_CONDITIONAL_BATCH_BUFFER_END":
            continue
        assert c.min_length <= m.length <= c.max_length, c.name


def test_every_ggtt_form_has_an_audit() -> None:
    from gvt_core.device.execution.scanner.audit import AUDITS

    for c in T.COMMANDS:
        audit = S.audit_of(c)
        if c.privilege is T.Privilege.GGTT_PRIVILEGED or audit is not S.Audit.NONE:
            assert audit in AUDITS or audit in (S.Audit.BATCH_START, S.Audit.BATCH_END), c.name
