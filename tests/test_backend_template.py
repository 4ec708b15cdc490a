"""The backend template the README points to is a complete backend: the whole
contract, scenario and hostile-guest suites pass on it, installed as a user
would install it (an entry point in the ``gvt.mpt`` group)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "gvt-backend"


def test_template_entry_point_is_its_backend_name() -> None:
    project = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())
    (name, target), = project["project"]["entry-points"]["gvt.mpt"].items()
    assert target == "gvt_example:ExampleBackend"
    source = (TEMPLATE / "gvt_example" / "__init__.py").read_text()
    assert f'NAME = "{name}"' in source


def test_every_suite_passes_on_the_template(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = pytester.mkdir("site")
    dist = site / "gvt_example-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gvt-example\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[gvt.mpt]\nexample = gvt_example:ExampleBackend\n")
    monkeypatch.setenv("PYTHONPATH", f"{site}:{TEMPLATE}")
    result = pytester.runpytest_subprocess(
        "--pyargs", "gvt_core.testing", "--gvt-backend", "example", "-p", "no:cacheprovider",
        "-rs",
    )
    outcomes = result.parseoutcomes()
    assert not {"failed", "errors", "error"} & set(outcomes), outcomes
    assert outcomes.get("passed", 0) >= 70
    assert outcomes.get("skipped", 0) <= 1  # no pin quota: by design
