"""What a benchmark is and how it reports, shared by every module in ``benchmarks/``.

A benchmark measures its own baseline in the same run, so figures are ratios
that survive a noisy or slower machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs


@attrs.frozen
class Result:
    name: str
    value: float
    unit: str
    baseline: float
    #: the issue's goal for ``ratio`` (value / baseline), where one is set.
    goal: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "goal": self.goal,
            "note": self.note,
        }


@attrs.frozen
class Benchmark:
    name: str
    #: runs the benchmark; ``quick`` asks for a short run (smoke test).
    run: Callable[[bool], list[Result]]
    #: why this benchmark cannot run here, or None.
    unavailable: Callable[[], str | None] = lambda: None


def best_of(fn: Callable[[], None], repeat: int) -> float:
    """Fastest of ``repeat`` timings of ``fn`` in seconds (least disturbed by noise)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
