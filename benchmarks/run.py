"""Run gvt's benchmarks: ``python benchmarks/run.py [NAME ...] [--json] [--quick]``.

Each benchmark module in this folder exposes ``BENCHMARKS: list[Benchmark]``
and is listed in :data:`MODULES`. Figures are printed as ratios against a
baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Benchmark, Result

#: benchmark modules, in the order they run.
MODULES = ["sim_mmio", "ppgtt", "kvm_mmio", "kvm_page_track", "execution"]


def available() -> dict[str, Benchmark]:
    found: dict[str, Benchmark] = {}
    for mod in MODULES:
        if not (Path(__file__).parent / f"{mod}.py").exists():
            continue
        for bench in importlib.import_module(mod).BENCHMARKS:
            found[bench.name] = bench
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of results")
    parser.add_argument("--quick", action="store_true", help="short runs, for smoke tests")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    benches = available()
    if args.list:
        for name, bench in benches.items():
            why = bench.unavailable()
            print(name if why is None else f"{name} (unavailable: {why})")
        return 0
    unknown = [n for n in args.names if n not in benches]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(benches)}",
              file=sys.stderr)
        return 2
    results: list[Result] = []
    skipped: list[tuple[str, str]] = []
    for name in args.names or list(benches):
        bench = benches[name]
        why = bench.unavailable()
        if why is not None:
            skipped.append((name, why))
            continue
        results.extend(bench.run(args.quick))
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="gvt benchmarks")
        for col in ("name", "value", "unit", "baseline", "ratio", "goal", "note"):
            table.add_column(col)
        for r in results:
            ok = "" if r.met is None else (" ok" if r.met else " MISSED")
            goal = "" if r.goal is None else (
                f"{r.goal_of} {'>=' if r.higher_is_better else '<='} {r.goal}{ok}")
            table.add_row(r.name, f"{r.value:.4g}", r.unit, f"{r.baseline:.4g}",
                          f"{r.ratio:.2f}", goal, r.note)
        Console().print(table)
        for name, why in skipped:
            print(f"skipped {name}: {why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
