"""The register table against upstream GVT-g's Broadwell MMIO table.

``tests/data/bdw-mmio-table.tsv`` is upstream's list (``intel_gvt_mmio_table.c``
compiled for Broadwell with VCS2: 885 records, offset, size and name). A record
counts as covered when the table tracks the same offset with the same size,
from the same upstream iterator. The flag sets below are transcribed from
upstream ``handlers.c`` (``init_generic_mmio_info`` + ``init_bdw_mmio_info``,
the only two that run on BDW), independently of the table module, so a slip in
either shows up here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gvt_core.device.registers.table import (
    BDW_TABLE,
    ENGINE_MMIO_CONTEXT,
    F_CMD_ACCESS,
    F_CMD_WRITE_PATCH,
    F_GMADR,
    F_MODE_MASK,
    F_SR_IN_CTX,
    REGISTER_TABLE,
    MmioInfo,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "bdw-mmio-table.tsv"
GOAL = 0.90

RINGS = (0x2000, 0x22000, 0x12000, 0x1A000, 0x1C000)


def upstream_records() -> list[tuple[str, int, int, str]]:
    out = []
    for line in DATA.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        group, offset, size, name = line.split("\t")
        out.append((group, int(offset, 16), int(size), name))
    return out


def coverage() -> tuple[int, int]:
    """(records covered, records upstream has)."""
    ours = {(i.group, i.offset, i.size) for i in REGISTER_TABLE}
    records = upstream_records()
    return sum((g, o, s) in ours for g, o, s, _ in records), len(records)


def coverage_line() -> str:
    n, total = coverage()
    return f"BDW register coverage: {n}/{total} ({100.0 * n / total:.1f}%)"


def test_bdw_register_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    n, total = coverage()
    with capsys.disabled():
        print(f"\n{coverage_line()}")
    assert total == 885
    assert n / total >= GOAL


def test_the_table_is_upstreams_list_in_upstreams_order() -> None:
    assert [(g, o, s) for g, o, s, _ in upstream_records()] == [
        (i.group, i.offset, i.size) for i in BDW_TABLE
    ]


def _ring(*rels: int) -> set[int]:
    return {base + rel for base in RINGS for rel in rels}


#: every record handlers.c gives F_CMD_ACCESS on BDW (the command scanner's whitelist).
CMD_ACCESS = (
    {0x4180, 0x4280, 0x4380, 0x2148, 0x2180, 0x12198}
    | _ring(0x28, 0x134, 0x29C, 0x9C, 0xC0, 0x358, 0x35C, 0x44, 0x40, 0x244, 0x270)
    | {0x7008, 0x7000, 0x7004, 0x2120, 0x2124, 0x20DC, 0x2090, 0x2088, 0x20E4, 0x2470,
       0x4090, 0x7010, 0x7014, 0x9030, 0x20A0, 0x2420, 0x2430, 0x2434, 0x2438, 0x243C,
       0x7018, 0xE184, 0xE100}
    | {0x120000, 0x120008, 0x940C, 0x215C, 0x2178, 0x217C, 0x12178, 0x1217C, 0x2290,
       0x5200, 0x5240, 0x5280, 0x1C17C, 0x1C178, 0x22200, 0x4094, 0x4030, 0x2220,
       0x12220, 0x22220, 0x22178, 0x1A178, 0x1A17C, 0x2217C}
    | set(range(0x2300, 0x2358, 8))
    | {0x7300, 0xE4F0, 0xE4F4, 0x9430, 0xB1F0, 0xB1C0, 0xB118, 0xB100, 0xB10C, 0x24D0,
       0x83A4, 0x8430, 0xE194, 0xE188, 0xE180, 0x2580, 0x2248, 0xE220, 0xE230, 0xE240,
       0xE260, 0xE270, 0xE280, 0xE2A0, 0xE2B0, 0xE2C0, 0x21F0}
)
MODE_MASK = (
    _ring(0x29C, 0x9C, 0xC0, 0x3A0)
    | {0x7008, 0x7000, 0x7004, 0x2120, 0x2124, 0x20DC, 0x2090, 0x2088, 0x20E4, 0x2470,
       0x7010, 0x7014, 0x7018, 0xE184, 0xE100, 0x4030, 0x7300, 0xE4F0, 0xE4F4, 0xE194,
       0xE188, 0xE180, 0x2580}
)
GMADR = {0x4180, 0x4280, 0x4380, 0x2148, 0x2180, 0x12198} | _ring(0x38, 0x140, 0x80)
#: gen8_engine_mmio_list entries with in_context (mmio_context.c).
SR_IN_CTX = {0x20C0, 0x7004, 0x7008, 0x7000, 0x7010, 0x7300, 0x83A4}


@pytest.mark.parametrize(("flag", "expected"), [
    (F_CMD_ACCESS, CMD_ACCESS), (F_MODE_MASK, MODE_MASK), (F_GMADR, GMADR),
    (F_SR_IN_CTX, SR_IN_CTX), (F_CMD_WRITE_PATCH, _ring(0x29C) | {0x24D0}),
])
def test_flags_are_upstreams(flag: int, expected: set[int]) -> None:
    assert {i.offset for i in REGISTER_TABLE if i.flags & flag} == expected


def test_gm_address_masks_are_upstreams() -> None:
    by = {i.offset: i for i in REGISTER_TABLE}
    for off in (0x4180, 0x2148, 0x2180):
        assert by[off].addr_mask == 0xFFFF_F000  # MMIO_GM_RDR
    for off in _ring(0x38, 0x140, 0x80):
        assert by[off].addr_mask == 0xFFFF_0000  # MMIO_RING_GM


def test_every_handler_of_the_table_exists() -> None:
    from gvt_core.device.registers.handlers import RegisterHandlers

    names = {h for i in REGISTER_TABLE for h in (i.read, i.write) if h}
    assert all(callable(getattr(RegisterHandlers, n, None)) for n in names)


def test_records_are_named() -> None:
    names = [i.name for i in BDW_TABLE]
    assert len(set(names)) == len(names) == 885
    assert all(isinstance(i, MmioInfo) and i.name for i in BDW_TABLE)


def test_context_switched_registers_are_tracked_and_in_context_ones_flagged() -> None:
    by = {i.offset: i for i in REGISTER_TABLE}
    for e in ENGINE_MMIO_CONTEXT:
        info = by.get(e.offset) or next(i for i in REGISTER_TABLE if i.offset <= e.offset < i.end)
        assert bool(info.flags & F_SR_IN_CTX) == e.in_context, info.name
    assert {e.offset for e in ENGINE_MMIO_CONTEXT if e.in_context} == SR_IN_CTX
