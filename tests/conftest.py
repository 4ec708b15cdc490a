"""Session-wide reporting for the project's own tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

_COVERAGE_TEST = Path(__file__).resolve().parent / "device" / "test_bdw_coverage.py"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Keep the BDW register coverage figure visible in every run (also under xdist,
    where the test's own print stays on a worker)."""
    spec = importlib.util.spec_from_file_location("_bdw_coverage", _COVERAGE_TEST)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    terminalreporter.write_line(module.coverage_line())
