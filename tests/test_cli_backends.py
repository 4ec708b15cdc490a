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
    assert sim["detail"] == ""
    # xengt runs here on its emulated Xen and says why not on a real one
    xengt = rows["xengt"]
    assert (xengt["distribution"], xengt["usable"], xengt["reason"]) == ("gvt-xengt", True, "")
    assert xengt["missing_hooks"] == []
    assert {"open_vm", "create_vm", "map_gfn_to_mfn", "set_trap_area"} <= set(xengt["hooks"])
    if not Path("/dev/xen/privcmd").exists():
        assert "emulated Xen" in xengt["detail"]
        assert "/dev/xen/privcmd does not exist" in xengt["detail"]
    acrn = rows["acrngt"]
    assert (acrn["distribution"], acrn["usable"], acrn["reason"]) == ("gvt-acrngt", True, "")
    assert set(hookspecs.MANDATORY_HOOKS) <= set(acrn["hooks"]) and not acrn["missing_hooks"]
    if not Path("/dev/acrn_hsm").exists():  # not an ACRN Service VM: the emulated ACRN, and why
        assert "emulated ACRN" in acrn["detail"] and "/dev/acrn_hsm" in acrn["detail"]


def test_table_shows_names_usability_and_hook_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    for name in ("sim", "xengt", "acrngt", "gvt-sim"):
        assert name in out
    total = len(hookspecs.MPT_HOOKS)
    assert f"{total - 1}/{total}" in out  # sim implements every hook but open_vm
    # the usable column wraps the backends' detail text: look for its key words
    if not Path("/dev/xen/privcmd").exists():
        assert "emulated Xen" in out and "/dev/xen/privcmd" in out
    if not Path("/dev/acrn_hsm").exists():
        assert "/dev/acrn_hsm" in out


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
