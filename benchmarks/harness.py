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
    #: what the goal bounds: "ratio" (default) or "value".
    goal_of: str = "ratio"
    #: the goal is a floor (>=) rather than a ceiling (<=).
    higher_is_better: bool = False

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    @property
    def met(self) -> bool | None:
        """Whether the goal is met (None without a goal)."""
        if self.goal is None:
            return None
        x = self.value if self.goal_of == "value" else self.ratio
        return x >= self.goal if self.higher_is_better else x <= self.goal

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "goal": self.goal,
            "goal_of": self.goal_of,
            "higher_is_better": self.higher_is_better,
            "met": self.met,
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
