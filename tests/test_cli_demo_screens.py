"""``gvt demo --screens``: every guest's screen, as people look at it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gvt_core.cli import main
from gvt_core.device.display.edid import builtin_edid
from gvt_core.guest.picture import colour_of, picture, render


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_seven_guests_seven_distinct_screens_and_a_mosaic(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "screens"
    assert main(["demo", "--vgpus", "7", "--rounds", "1", "--screens", str(out), "--json"]) == 0
    vgpus = json.loads(capsys.readouterr().out)["vgpus"]
    images = {}
    for v in vgpus:
        img = _png(out / f"vgpu{v['id']}.png")
        assert img.shape == (v["height"], v["width"], 3) == (768, 1024, 3)
        # the PNG is the decoded screen the JSON hashes
        assert hashlib.sha256(img.tobytes()).hexdigest() == v["screen_sha256"]
        # the guest's own picture: its colour, its number, on its own background
        want = render(picture(v["id"], 1024, 768), 1024, 768)
        drawn = want.any(axis=2)
        assert (img[drawn] == want[drawn]).all()
        c = colour_of(v["id"])
        assert tuple(img[400, 2]) == ((c >> 16) & 0xFF, (c >> 8) & 0xFF, c & 0xFF)  # border
        images[v["id"]] = img
    assert len({hashlib.sha256(i.tobytes()).digest() for i in images.values()}) == 7
    mosaic = _png(out / "mosaic.png")
    assert mosaic.shape[0] > 300 and mosaic.shape[1] > 4 * 300  # two rows of four tiles
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["mosaic.png", *(f"vgpu{i}.png" for i in range(1, 8))])


def test_cpu_drawing_through_the_aperture_shows_the_same_picture(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--vgpus", "2", "--rounds", "0", "--draw", "cpu",
                 "--screens", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "CPU stores via the aperture" in text and str(tmp_path) in text
    screens = [line for line in text.splitlines() if line.startswith(("screens:", "drawn"))]
    assert len(screens) == 2 and all(len(line) <= 80 for line in screens)
    for n in (1, 2):
        assert (_png(tmp_path / f"vgpu{n}.png") == render(picture(n, 1024, 768), 1024, 768)).all()


def test_a_monitor_from_an_edid_file_sets_the_guests_mode(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    edid = tmp_path / "big.edid"
    edid.write_bytes(builtin_edid((1920, 1200)).data)
    assert main(["demo", "--vgpus", "2", "--rounds", "0", "--edid", str(edid), "--json"]) == 0
    vgpus = json.loads(capsys.readouterr().out)["vgpus"]
    assert [(v["width"], v["height"]) for v in vgpus] == [(1920, 1200)] * 2


def test_a_bad_edid_file_is_a_usage_error(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.edid"
    bad.write_bytes(bytes(128))
    for path in (bad, tmp_path / "missing.edid"):
        with pytest.raises(SystemExit) as exc:
            main(["demo", "--edid", str(path)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--edid" in err and str(path) in err


def test_screens_at_a_file_is_refused_before_any_guest_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_dir = tmp_path / "screens.png"
    not_a_dir.write_bytes(b"")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--screens", str(not_a_dir)])
    assert exc.value.code == 2
    assert "exists and is not a directory" in capsys.readouterr().err
