"""Which backend a command uses when the user names none."""

from __future__ import annotations

from typing import Any

import pytest

from gvt_core.cli import backend_args, main
from gvt_core.mpt.loader import installed_backends


def _installed(names: set[str]) -> Any:
    return lambda: [e for e in installed_backends() if e.name in names]


def test_sim_when_it_is_installed() -> None:
    assert backend_args.default_backend() == "sim"


def test_the_only_usable_backend_when_sim_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    """gvt-core and gvt-kvmgt installed, no gvt-sim: demo and types use kvmgt."""
    monkeypatch.setattr(backend_args, "installed_backends", _installed({"kvmgt", "xengt"}))
    monkeypatch.setattr(backend_args, "usable_backends", lambda: ["kvmgt"])
    assert backend_args.default_backend() == "kvmgt"


def test_without_sim_and_without_one_usable_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(backend_args, "installed_backends", _installed({"xengt"}))
    monkeypatch.setattr(backend_args, "usable_backends", list)
    assert backend_args.default_backend() == "sim"
    monkeypatch.setattr("gvt_core.mpt.loader.installed_backends", _installed({"xengt"}))
    assert main(["types"]) == 1
    err = capsys.readouterr().err
    assert "pip install gvt-sim" in err and err.count("\n") == 1
