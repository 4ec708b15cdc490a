"""``gvt demo``: the main job, as a user runs it."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gvt_core.cli import main


def test_demo_seven_vgpus_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--vgpus", "7", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    vgpus = out["vgpus"]
    assert [v["id"] for v in vgpus] == [1, 2, 3, 4, 5, 6, 7]
    for v in vgpus:
        assert v["type"] == "GVTg_V4_8"
        assert v["mmio_traps"] > 0 and v["cfg_traps"] > 0
        # framebuffer (768 pages at 1024x768x4) + ring (8 pages)
        assert v["ggtt_writes"] >= 768 + 8
        assert v["ggtt_to_scratch"] == 0
    lows = sorted((v["low_gm"]["base"], v["low_gm"]["base"] + v["low_gm"]["size"]) for v in vgpus)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(lows)), "aperture ranges overlap"
    # every guest ran its workload mix: one RCS and one BCS workload per round
    assert all(v["workloads_completed"] == 2 * 10 and v["faults"] == 0 for v in vgpus)
    assert all(v["gpu_time_ns"] > 0 for v in vgpus)
    assert sum(v["share"] for v in vgpus) == pytest.approx(1.0, abs=0.01)
    assert out["gpu_time_ns"] > 0 and out["clock"] == "simulated"


def test_demo_trace_is_chrome_trace_events(tmp_path: Path) -> None:
    trace = tmp_path / "gpu.json"
    assert main(["demo", "--vgpus", "2", "--rounds", "3", "--trace", str(trace)]) == 0
    doc = json.loads(trace.read_text())
    slices = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["cat"] == "completed"]
    assert len(slices) == 2 * 2 * 3
    assert {e["tid"] for e in slices} == {1, 2}  # the RCS and BCS tracks
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["ph"] == "M"}
    assert {"RCS", "BCS", "scheduler"} <= names
    for e in slices:
        assert e["dur"] >= 0 and e["ts"] >= 0 and e["name"].startswith("vgpu")


def test_demo_eight_vgpus_fails_naming_the_resource(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--vgpus", "8"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("gvt demo: not enough ")


def test_demo_unknown_type_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--vgpus", "1", "--type", "GVTg_V9_3"]) != 0
    err = capsys.readouterr().err
    assert "GVTg_V9_3" in err and "GVTg_V4_8" in err


def test_demo_table_through_the_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gvt_core.cli", "demo", "--vgpus", "2"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "GVTg_V4_8" in proc.stdout and "MMIO traps" in proc.stdout
