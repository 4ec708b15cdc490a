"""The ``gvt`` command line.

Each subcommand lives in its own module exposing ``register(subparsers)``,
which adds its parser and sets ``func`` (``args -> exit status``). Adding a
subcommand is one line in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from gvt_core import __version__
from gvt_core.cli import backends, demo, serve, types

#: the subcommand modules, in the order ``gvt --help`` lists them.
COMMANDS: tuple[Callable[[Any], None], ...] = (
    backends.register,
    demo.register,
    serve.register,
    types.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gvt",
        description="Intel GVT-g mediated pass-through GPU virtualization, in Python.",
    )
    parser.add_argument("--version", action="version", version=f"gvt {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gvt``; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return int(func(args))
