"""The ``--edid FILE`` argument of the commands that plug a monitor (demo, serve)."""

from __future__ import annotations

import argparse


def edid_file(path: str) -> str:
    """argparse type: a readable file holding a valid EDID (checked now, so a bad
    one is a usage error naming the file); the command reads it again when it plugs."""
    from gvt_core.device.display.edid import load_edid
    from gvt_core.errors import EdidError

    try:
        load_edid(path)
    except (OSError, EdidError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return path
