"""``gvt types``: the type table of a fresh host, as a user sees it."""

from __future__ import annotations

import json

import pytest

from gvt_core.cli import main

KEYS = {"name", "description", "low_gm_size", "high_gm_size", "fences", "weight", "resolution",
        "available_instances"}


def test_types_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["types", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["GVTg_V4_8", "GVTg_V4_4", "GVTg_V4_2", "GVTg_V4_1"]
    assert all(set(r) == KEYS for r in rows)
    small = rows[0]
    assert small == {
        "name": "GVTg_V4_8",
        "description": "low_gm_size: 64MB\nhigh_gm_size: 384MB\nfence: 4\n"
                       "resolution: 1024x768\nweight: 2\n",
        "low_gm_size": 64 << 20,
        "high_gm_size": 384 << 20,
        "fences": 4,
        "weight": 2,
        "resolution": "1024x768",
        "available_instances": 7,
    }
    assert [r["available_instances"] for r in rows] == [7, 5, 2, 1]
    assert [r["resolution"] for r in rows[1:]] == ["1920x1200"] * 3


def test_types_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["types"]) == 0
    out = capsys.readouterr().out
    for name in ("GVTg_V4_8", "GVTg_V4_4", "GVTg_V4_2", "GVTg_V4_1"):
        assert name in out
    # the table says what the description says: no repeat of it under the table
    assert "low_gm_size" not in out and "description" in out


def test_unknown_backend_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["types", "--backend", "nosuch"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuch" in err[0] and "sim" in err[0]
