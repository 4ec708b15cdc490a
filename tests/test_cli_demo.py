"""``gvt demo``: the main job, as a user runs it."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gvt_core.cli import main


def _picture_commands(number: int, width: int = 1024, height: int = 768) -> int:
    """Commands of guest ``number``'s drawing workload: a background blit and one per
    visible rectangle of its picture, MI_FLUSH_DW, MI_DISPLAY_FLIP, the breadcrumb,
    and an MI_NOOP pad after each part of odd dword length."""
    from gvt_core.guest import commands as cmd
    from gvt_core.guest.picture import picture

    blits = 1 + sum(1 for r in picture(number, width, height)
                    if max(r.x, 0) < min(r.x + r.width, width)
                    and max(r.y, 0) < min(r.y + r.height, height))
    words = (blits * len(cmd.color_blt(0, 4 * width, 0, 0, 1, 1, 0)) + len(cmd.flush_dw())
             + len(cmd.display_flip(0, 0, 4 * width)))
    seal = len(cmd.store_dword_index(0, 0, pphwsp=True))
    return blits + 2 + words % 2 + 1 + seal % 2


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
    # every guest drew its picture (one BCS workload) and ran its workload mix: one RCS
    # and one BCS workload per round
    assert all(v["workloads_completed"] == 1 + 2 * 10 and v["faults"] == 0 for v in vgpus)
    # and shows it: seven different screens of the mode the built-in monitor offers
    assert {(v["width"], v["height"], v["format"]) for v in vgpus} == {(1024, 768, "XRGB8888")}
    assert len({v["screen_sha256"] for v in vgpus}) == 7
    assert all(v["gpu_time_ns"] > 0 for v in vgpus)
    # every command of them went through the command scanner, none was refused: the
    # picture's workload and, per round, the RCS ring (batch start, PIPE_CONTROL,
    # breadcrumb, two MI_NOOP pads), its batch (16 stores and its end), the BCS ring
    # (3 blit commands, breadcrumb, 2 pads)
    assert all(v["commands_scanned"] == _picture_commands(v["id"]) + 10 * (5 + 17 + 6)
               and v["commands_rejected"] == 0 for v in vgpus)
    assert sum(v["share"] for v in vgpus) == pytest.approx(1.0, abs=0.01)
    assert out["gpu_time_ns"] > 0 and out["clock"] == "simulated"


def test_demo_trace_is_chrome_trace_events(tmp_path: Path) -> None:
    trace = tmp_path / "gpu.json"
    assert main(["demo", "--vgpus", "2", "--rounds", "3", "--trace", str(trace)]) == 0
    doc = json.loads(trace.read_text())
    slices = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["cat"] == "completed"]
    assert len(slices) == 2 * (1 + 2 * 3)  # the picture, then three rounds of RCS + BCS
    assert {e["tid"] for e in slices} == {1, 2}  # the RCS and BCS tracks
    names = {e["args"]["name"] for e in doc["traceEvents"] if e["ph"] == "M"}
    assert {"RCS", "BCS", "scheduler"} <= names
    for e in slices:
        assert e["dur"] >= 0 and e["ts"] >= 0 and e["name"].startswith("vgpu")


def test_demo_eight_vgpus_fails_saying_how_many_fit_and_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--vgpus", "8"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("gvt demo: 8 vGPUs of GVTg_V4_8 do not fit one host: at most 7")
    assert "vGPU ids" in err[0] and "idle vGPU" in err[0] and "--vgpus 7 or fewer" in err[0]


def test_demo_too_many_of_a_large_type_names_the_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--vgpus", "3", "--type", "GVTg_V4_2"]) == 1
    err = capsys.readouterr().err
    assert "at most 2" in err and "hidden (high) graphics memory" in err
    assert "1024 MiB" in err and "less graphics memory" in err


@pytest.mark.parametrize("argv", [["--vgpus", "0"], ["--vgpus", "-1"], ["--vgpus", "two"],
                                  ["--type", ""], ["--type", "  "], ["--rounds", "-1"],
                                  ["--rounds", "ten"]])
def test_demo_refuses_arguments_that_make_no_demo(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", *argv])
    assert exc.value.code == 2
    assert "gvt demo: error: argument" in capsys.readouterr().err


@pytest.mark.parametrize("width", [80, 100, 60])
def test_demo_table_fits_the_terminal_with_a_legend(
    width: int, capsys: pytest.CaptureFixture[str]
) -> None:
    from gvt_core.cli.demo import COLUMNS, LEGEND, print_table, print_work, run_demo

    _, rows, run = run_demo("sim", 7, "GVTg_V4_8", rounds=1)
    print_table("sim", rows, width=width)
    print_work(rows, run, width=width)
    out = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in out) <= width
    assert "GVTg_V4_8" in "\n".join(out) and len(LEGEND) <= 80
    assert any(line.startswith("traps:") for line in out)
    if width >= 86:
        assert not any("left out" in line for line in out)
    else:
        first = next(i for i, line in enumerate(out) if line.startswith("left out"))
        tail = " ".join(out[first:])
        assert "fences" in tail and "--json" in tail
    assert len(COLUMNS) >= 9


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
    assert "GVTg_V4_8" in proc.stdout and "MMIO" in proc.stdout and "to scratch" in proc.stdout
