"""The ``--backend`` and ``--backend-option`` arguments every host-building command shares."""

from __future__ import annotations

import argparse
from typing import Any

from gvt_core.mpt.loader import installed_backends, usable_backends

#: the embedded default backend, used whenever it is installed.
DEFAULT_BACKEND = "sim"


def default_backend() -> str:
    """``sim`` when installed; otherwise the only usable installed backend.

    With ``gvt-core gvt-kvmgt`` installed and no sim, ``gvt demo`` should use
    kvmgt rather than fail on a backend the user never asked for. With none or
    several usable, the answer stays ``sim`` and loading it says what to install.
    """
    names = {entry.name for entry in installed_backends()}
    if DEFAULT_BACKEND in names:
        return DEFAULT_BACKEND
    usable = usable_backends()
    return usable[0] if len(usable) == 1 else DEFAULT_BACKEND


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value


def _backend_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the backend name is empty; 'gvt backends' lists them")
    return text.strip()


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", type=_backend_name, default=None,
        help="hypervisor backend (default: sim, or the only usable one installed)",
    )
    parser.add_argument(
        "--backend-option", dest="backend_options", type=_option, action="append",
        default=[], metavar="KEY=VALUE",
        help="an option for the backend's factory, e.g. page_track=landed (repeatable)",
    )


def chosen_backend(args: argparse.Namespace) -> str:
    return args.backend or default_backend()


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--backend-option`` pairs as keyword arguments (the last of a repeated key wins)."""
    return dict(args.backend_options)
