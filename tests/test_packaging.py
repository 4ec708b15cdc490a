"""Every distribution builds a wheel, and gvt-core + gvt-sim install on their own.

Wheels are built from a copy of each source tree (nothing is written into
the checkout) and installed into a fresh virtual environment, dependencies
from the package index, exactly as ``pip install gvt-core gvt-sim`` would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: distribution -> (source folder, what to copy from it)
SOURCES = {
    "gvt_core": (ROOT, ["pyproject.toml", "README.md", "gvt_core"]),
    "gvt_sim": (ROOT / "plugins" / "sim", ["pyproject.toml", "gvt_sim"]),
    "gvt_kvmgt": (ROOT / "plugins" / "kvmgt", ["pyproject.toml", "gvt_kvmgt"]),
    "gvt_xengt": (ROOT / "plugins" / "xengt", ["pyproject.toml", "gvt_xengt"]),
    "gvt_acrngt": (ROOT / "plugins" / "acrngt", ["pyproject.toml", "gvt_acrngt"]),
}
ENTRY_POINTS = {"gvt_sim": "sim", "gvt_kvmgt": "kvmgt", "gvt_xengt": "xengt", "gvt_acrngt": "acrngt"}
_IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    built: dict[str, Path] = {}
    for dist, (src, parts) in SOURCES.items():
        tree = tmp_path_factory.mktemp(f"src-{dist}")
        for part in parts:
            path = src / part
            if path.is_dir():
                shutil.copytree(path, tree / part, ignore=_IGNORE)
            else:
                shutil.copy2(path, tree / part)
        proc = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                     "--no-build-isolation", "-w", str(out), str(tree)])
        assert proc.returncode == 0, f"building the {dist} wheel failed:\n{proc.stderr}"
        (wheel,) = out.glob(f"{dist}-*.whl")
        built[dist] = wheel
    return built


def test_every_distribution_builds_a_wheel_with_its_entry_point(wheels: dict[str, Path]) -> None:
    for dist, wheel in wheels.items():
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            assert any(n.startswith(f"{dist}/") and n.endswith(".py") for n in names)
            (eps,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
            text = zf.read(eps).decode()
        if dist == "gvt_core":
            assert "gvt = gvt_core.cli:main" in text
            assert "gvt = gvt_core.testing.plugin" in text
        else:
            assert "[gvt.mpt]" in text and f"{ENTRY_POINTS[dist]} = " in text
    with zipfile.ZipFile(wheels["gvt_kvmgt"]) as zf:
        assert "gvt_kvmgt/guest_programs/vgpu_bringup.c" in zf.namelist()


def _index_unreachable() -> str | None:
    probe = _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d",
                  str(ROOT / ".pytest_cache" / "probe"), "pluggy"], timeout=120)
    if probe.returncode != 0:
        return "the package index is not reachable, so dependencies cannot be installed: " + (
            probe.stderr.strip().splitlines() or ["pip download failed"]
        )[-1]
    return None


def test_core_and_sim_wheels_install_and_run_on_their_own(
    wheels: dict[str, Path], tmp_path: Path
) -> None:
    why = _index_unreachable()
    if why:
        pytest.skip(why)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    proc = _run([str(bin_dir / "pip"), "install", "-q", str(wheels["gvt_core"]),
                 str(wheels["gvt_sim"])], timeout=600)
    assert proc.returncode == 0, proc.stderr
    listing = _run([str(bin_dir / "gvt"), "backends", "--json"], cwd=tmp_path, timeout=120)
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert [(r["name"], r["usable"], r["distribution"]) for r in rows] == [("sim", True, "gvt-sim")]
    demo = _run([str(bin_dir / "gvt"), "demo", "--vgpus", "2", "--json"], cwd=tmp_path, timeout=300)
    assert demo.returncode == 0, demo.stderr
    assert [v["id"] for v in json.loads(demo.stdout)["vgpus"]] == [1, 2]
