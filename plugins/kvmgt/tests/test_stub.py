"""The pre-assembled guest stub is its source, and the firmware tables are well formed."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from gvt_kvmgt import stub


def test_stub_bytes_are_the_assembled_source(tmp_path: Path) -> None:
    as_, objcopy = shutil.which("as"), shutil.which("objcopy")
    if as_ is None or objcopy is None:
        pytest.skip("GNU as/objcopy (binutils) are not installed")
    (tmp_path / "stub.S").write_text(stub.STUB_SOURCE)
    subprocess.run([as_, "--64", "-o", str(tmp_path / "stub.o"), str(tmp_path / "stub.S")], check=True)
    subprocess.run(
        [objcopy, "-O", "binary", "-j", ".text", str(tmp_path / "stub.o"), str(tmp_path / "stub.bin")],
        check=True,
    )
    assert (tmp_path / "stub.bin").read_bytes() == stub.STUB_CODE


def test_source_constants_agree_with_python() -> None:
    defined = {
        m.group(1): int(m.group(2), 0)
        for m in re.finditer(r"^\s*\.set (\w+), (0x[0-9A-Fa-f]+)\s*$", stub.STUB_SOURCE, re.M)
    }
    assert defined.pop("LAPIC") == stub.LAPIC_BASE
    assert len(defined) == 15
    for name, value in defined.items():
        assert getattr(stub, name) == value, name


def test_firmware_maps_low_4g_and_points_gates_at_thunks() -> None:
    fw = bytearray(stub.FW_SIZE)
    stub.build_firmware(memoryview(fw))
    pdpt0 = struct.unpack_from("<Q", fw, stub.FW_PDPT)[0]
    assert pdpt0 & stub.PTE_P and pdpt0 & ~0xFFF == stub.FW_BASE + stub.FW_PD_LOW
    # the last 2 MiB page below 4 GiB is identity mapped
    last = struct.unpack_from("<Q", fw, stub.FW_PD_LOW + 3 * 0x1000 + 511 * 8)[0]
    assert last & ~0xFFF == (4 << 30) - (2 << 20)
    assert last & stub.PTE_PS
    for vector in (0, 14, 0x41, 255):
        lo, sel, _, attr, mid, hi, _ = struct.unpack_from("<HHBBHII", fw, stub.FW_IDT + 16 * vector)
        assert sel == stub.GDT_CODE64 and attr == 0x8E
        assert lo | (mid << 16) | (hi << 32) == stub.FW_BASE + stub.FW_THUNKS + 16 * vector
    assert fw[stub.FW_CODE : stub.FW_CODE + len(stub.STUB_CODE)] == stub.STUB_CODE


def test_page_directory_pool_maps_high_regions_once() -> None:
    fw = bytearray(stub.FW_SIZE)
    stub.build_firmware(memoryview(fw))
    pool = stub.PageDirectoryPool(memoryview(fw))
    pool.ensure(5 << 30, 8)
    pool.ensure((5 << 30) + 0x1000, 8)
    entry = struct.unpack_from("<Q", fw, stub.FW_PDPT + 8 * 5)[0]
    assert entry & stub.PTE_P
    with pytest.raises(ValueError):
        pool.ensure(stub.MAP_LIMIT, 4)
