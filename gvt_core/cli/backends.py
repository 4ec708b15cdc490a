"""``gvt backends``: every installed hypervisor backend and whether it works here."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gvt_core.mpt.hookspecs import MANDATORY_HOOKS, MPT_HOOKS
from gvt_core.mpt.loader import BackendReport, describe_backends


def _usable_cell(report: BackendReport) -> str:
    if report.usable:
        return "[green]yes[/green]" + (f": {report.detail}" if report.detail else "")
    return f"[red]no[/red]: {report.reason}"


def _hooks_cell(report: BackendReport, verbose: bool) -> str:
    mandatory = sum(1 for h in report.hooks if h in MANDATORY_HOOKS)
    text = (
        f"{len(report.hooks)}/{len(MPT_HOOKS)} "
        f"({mandatory}/{len(MANDATORY_HOOKS)} mandatory)"
    )
    if report.missing:
        text += f"\n[red]missing mandatory:[/red] {', '.join(report.missing)}"
    if verbose and report.hooks:
        text += "\n[bold]implemented:[/bold] " + ", ".join(report.hooks)
    return text


def print_table(reports: list[BackendReport], verbose: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="gvt hypervisor backends (entry-point group gvt.mpt)")
    table.add_column("name", style="bold")
    table.add_column("distribution")
    table.add_column("usable here")
    table.add_column("MPT hooks")
    for r in reports:
        table.add_row(
            r.name, f"{r.distribution} {r.version}", _usable_cell(r), _hooks_cell(r, verbose)
        )
    console = Console()
    if reports:
        console.print(table)
    else:
        console.print("no gvt backend is installed; install one, e.g. 'pip install gvt-sim'")


def cmd_backends(args: argparse.Namespace) -> int:
    reports = describe_backends()
    if args.json:
        print(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        print_table(reports, args.verbose)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "backends",
        help="list installed hypervisor backends, whether they work here and their hooks",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="list every implemented hook by name"
    )
    p.set_defaults(func=cmd_backends)
