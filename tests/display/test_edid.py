"""The virtual monitor's EDIDs (facts 9.2): byte-exact built-ins, choice by type, user EDIDs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gvt_core.device.display.edid import (
    EDID_1024_768,
    EDID_1920_1200,
    Edid,
    builtin_edid,
    fix_checksum,
    load_edid,
)
from gvt_core.device.types import TYPE_TABLE
from gvt_core.errors import EdidError

_COMMON_HEAD = "00ffffffffffff00 22f0542900000000 0417 0104 a534207823 fc81a4554d9d25125054 210800"
_COMMON_TAIL = (
    "23403020360006442100001a"
    " 000000fd00183c1850110 00a202020202020"
    " 000000fc0048 50205a5232343430770a2020"
    " 000000ff00434e3433303430 44585 10a2020"
    " 00"
)
#: upstream's virtual_dp_monitor_edid (gvt/display.c), transcribed as hex dumps
UPSTREAM_1024_768 = bytes.fromhex(
    (_COMMON_HEAD + " 00c000c0004000800000 004000000001" + " 000080a070b0" + _COMMON_TAIL
     + " ef").replace(" ", ""))
UPSTREAM_1920_1200 = bytes.fromhex(
    (_COMMON_HEAD + " d1c081c081408180 9500a940b3000101" + " 283c80a070b0" + _COMMON_TAIL
     + " 45").replace(" ", ""))


def test_builtins_are_byte_exact_with_upstream() -> None:
    assert EDID_1024_768 == UPSTREAM_1024_768
    assert EDID_1920_1200 == UPSTREAM_1920_1200


@pytest.mark.parametrize(("data", "checksum"), [(EDID_1024_768, 0xEF), (EDID_1920_1200, 0x45)])
def test_builtin_checksums(data: bytes, checksum: int) -> None:
    assert len(data) == 128
    assert data[127] == checksum
    assert sum(data) % 256 == 0
    assert fix_checksum(data) == data
    assert Edid.from_bytes(data).data == data  # passes its own validation


def test_identity() -> None:
    edid = builtin_edid((1920, 1200))
    assert edid.manufacturer == "HWP" and edid.product == 0x2954
    assert edid.name == "HP ZR2440w" and edid.serial == "CN43040DXQ"
    assert edid.version == (1, 4)


def test_1920_1200_modes() -> None:
    edid = builtin_edid((1920, 1200))
    best = edid.best_mode()
    assert best.size == (1920, 1200) and best.source == "detailed"
    assert best.pixel_clock_khz == 154000 and (best.htotal, best.vtotal) == (2080, 1235)
    assert best.refresh_mhz == 59950
    sizes = {m.size for m in edid.standard_modes()}
    # the standard timings upstream's comment lists
    assert sizes == {(1920, 1080), (1280, 720), (1280, 960), (1280, 1024), (1440, 900),
                     (1600, 1200), (1680, 1050)}


def test_1024_768_modes() -> None:
    edid = builtin_edid((1024, 768))
    assert edid.preferred_mode is None  # no detailed timing: the largest mode wins
    assert edid.best_mode().size == (1024, 768)
    assert {m.size for m in edid.modes()} == {(640, 480), (800, 600), (1024, 768)}


@pytest.mark.parametrize("vtype", TYPE_TABLE, ids=lambda t: t.name)
def test_choice_by_type_resolution(vtype: object) -> None:
    edid = builtin_edid(vtype.resolution)  # type: ignore[attr-defined]
    assert edid.best_mode().size == vtype.resolution  # type: ignore[attr-defined]


def test_unknown_resolution() -> None:
    with pytest.raises(EdidError, match="no built-in EDID"):
        builtin_edid((800, 600))


def _extension() -> bytes:
    ext = bytearray(128)
    ext[0], ext[1] = 0x02, 0x03  # CEA-861 extension, revision 3
    return fix_checksum(bytes(ext))


def _with_extension() -> bytes:
    base = bytearray(EDID_1920_1200)
    base[126] = 1
    return fix_checksum(bytes(base)) + _extension()


def test_user_edid_with_extension(tmp_path: Path) -> None:
    path = tmp_path / "monitor.edid"
    path.write_bytes(_with_extension())
    edid = load_edid(path)
    assert len(edid.data) == 256 and edid.source == str(path)
    assert edid.best_mode().size == (1920, 1200)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "whole number"),
        (EDID_1024_768[:100], "whole number"),
        (EDID_1024_768 + b"\0", "whole number"),
        (_with_extension() + _extension(), "at most 2"),
        (b"\x01" + EDID_1024_768[1:-1] + bytes([(EDID_1024_768[-1] - 1) & 0xFF]), "bad header"),
        (EDID_1024_768[:-1] + b"\x00", "block 0 checksum"),
        (_with_extension()[:-1] + b"\x00", "block 1 checksum"),
        (EDID_1024_768 + _extension(), "declares 0 extension blocks but 1"),
    ],
)
def test_invalid_edids(data: bytes, reason: str) -> None:
    with pytest.raises(EdidError, match=reason) as info:
        Edid.from_bytes(data, "test")
    assert info.value.source == "test"


def test_load_edid_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.edid"
    path.write_bytes(bytes(1000))
    with pytest.raises(EdidError, match="larger than 256"):
        load_edid(path)


@settings(deadline=None)
@given(st.integers(0, 127), st.integers(1, 255))
def test_any_corrupted_byte_is_refused(index: int, delta: int) -> None:
    data = bytearray(EDID_1920_1200)
    data[index] = (data[index] + delta) & 0xFF
    with pytest.raises(EdidError):
        Edid.from_bytes(bytes(data))


@pytest.mark.parametrize(("data", "reason"), [(bytes(1 << 20), "whole number|at most 2"),
                                              (b"", "whole number"),
                                              (EDID_1024_768[:-1] + b"\x00", "checksum")])
def test_an_edid_made_directly_is_checked_too(data: bytes, reason: str) -> None:
    """Every Edid is valid, not only those from ``from_bytes`` or a file."""
    with pytest.raises(EdidError, match=reason):
        Edid(data, "direct")


def test_an_edid_keeps_its_own_copy_of_the_bytes() -> None:
    raw = bytearray(EDID_1024_768)
    edid = Edid(raw)  # type: ignore[arg-type]
    raw[0] = 0x42
    assert edid.data == EDID_1024_768
