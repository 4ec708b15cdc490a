"""``gvt backends``: what is installed, what works here, and why not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gvt_core.cli import build_parser, main
from gvt_core.mpt import hookspecs

SCRIPT = Path(sys.executable).with_name("gvt")


def test_json_lists_every_installed_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"sim", "kvmgt", "xengt", "acrngt"} <= set(rows)
    for row in rows.values():
        assert {"name", "distribution", "version", "usable", "reason", "hooks"} <= set(row)
        assert isinstance(row["usable"], bool)
        assert row["usable"] == (row["reason"] == "")
    sim = rows["sim"]
    assert (sim["distribution"], sim["usable"]) == ("gvt-sim", True)
    assert sorted(sim["hooks"]) == sorted(set(hookspecs.MPT_HOOKS) - {"open_vm"})
    for shell in ("xengt", "acrngt"):
        assert rows[shell]["usable"] is False
        assert "not implemented yet" in rows[shell]["reason"]
        assert rows[shell]["hooks"] == ["backend_info"]
        assert "inject_msi" in rows[shell]["missing_hooks"]


def test_table_shows_names_usability_and_hook_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in ("sim", "xengt", "acrngt", "gvt-sim"):
        assert name in out
    total = len(hookspecs.MPT_HOOKS)
    assert f"{total - 1}/{total}" in out  # sim implements every hook but open_vm
    assert f"1/{total}" in out  # the shells implement backend_info only
    assert "missing mandatory" in out


def test_verbose_table_names_the_hooks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends", "--verbose"]) == 0
    out = capsys.readouterr().out.replace("\n", " ")
    assert "dma_map_guest_pages" in out and "implemented:" in out


def test_no_subcommand_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "backends" in capsys.readouterr().err


def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert "backends" in sub.choices  # type: ignore[attr-defined]


def test_console_script_prints_json() -> None:
    if not SCRIPT.exists():
        pytest.skip(f"the gvt console script is not installed next to {sys.executable}")
    proc = subprocess.run(
        [str(SCRIPT), "backends", "--json"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    names = [r["name"] for r in json.loads(proc.stdout)]
    assert names == sorted(names) and "sim" in names
