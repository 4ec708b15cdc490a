"""``gvt types``: the vGPU types a fresh host offers, as the mdev sysfs shows them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gvt_core.cli.backend_args import add_backend_arguments, backend_options, chosen_backend
from gvt_core.device.types import TypeAvailability
from gvt_core.errors import GvtError


def fresh_host_types(backend: str, options: dict[str, Any] | None = None) -> list[TypeAvailability]:
    """The types of a fresh default host on ``backend``."""
    from gvt_core.device.gvt import Gvt

    with Gvt.open(backend, **(options or {})) as gvt:
        return gvt.types()


def _mib(n: int) -> str:
    return f"{n >> 20} MiB"


def print_table(backend: str, rows: list[TypeAvailability]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"vGPU types of a fresh host on {backend}")
    for col in ("name", "low GM", "high GM", "fences", "weight", "resolution", "available"):
        table.add_column(col, justify="left" if col in ("name", "resolution") else "right")
    for r in rows:
        table.add_row(
            r.name, _mib(r.low_gm_size), _mib(r.high_gm_size), str(r.fences), str(r.weight),
            r.type.resolution_text, str(r.available_instances),
        )
    table.caption = "available: how many fit a fresh host; --json adds descriptions"
    Console().print(table)


def cmd_types(args: argparse.Namespace) -> int:
    backend = chosen_backend(args)
    try:
        rows = fresh_host_types(backend, backend_options(args))
    except GvtError as exc:
        print(f"gvt types: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print_table(backend, rows)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "types", help="list the vGPU types and how many instances of each fit a fresh host"
    )
    add_backend_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_types)
