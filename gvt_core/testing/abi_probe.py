"""Compile and run a C probe against installed headers, for the backends' ABI tests.

Each backend's ``tests/test_abi.py`` generates a C program that prints every
size, offset, ioctl number and constant its ctypes ABI layer mirrors, one
``KIND NAME VALUE`` line each; this builds it with gcc, runs it and reads
those lines back, so what the C compiler says is parsed the same way for all.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path


def run_c_probe(
    gcc: str, source: str, workdir: Path, cflags: Sequence[str] = ()
) -> dict[str, int]:
    """Build ``source`` in ``workdir`` (``gcc -O0 CFLAGS``), run it, and return what it
    printed as ``{"KIND NAME": VALUE}``."""
    (workdir / "probe.c").write_text(source)
    subprocess.run(
        [gcc, "-O0", *cflags, "-o", str(workdir / "probe"), str(workdir / "probe.c")],
        check=True,
    )
    out = subprocess.run([str(workdir / "probe")], check=True, capture_output=True,
                         text=True).stdout
    result = {}
    for line in out.splitlines():
        kind, name, value = line.split()
        result[f"{kind} {name}"] = int(value)
    return result
