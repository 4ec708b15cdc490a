"""Sim's side of the PPGTT tests: the shared guest/oracle kit of
:mod:`gvt_core.testing.ppgtt_machine`, on sim in each of its page-track and
DMA modes (sim-specific options, hence kept here)."""

from __future__ import annotations

from gvt_core.hw import regs
from gvt_core.testing.ppgtt_machine import (
    IPS,
    PAGE,
    PS,
    Expect,
    P,
    Stack,
    check_tables,
    check_tracking,
    check_walk,
    oracle_walk,
    reachable_tables,
    read_or_none,
)
from gvt_core.testing.ppgtt_machine import open_stack as open_backend_stack

__all__ = [
    "IPS",
    "MODES",
    "PAGE",
    "PS",
    "Expect",
    "P",
    "Stack",
    "check_tables",
    "check_tracking",
    "check_walk",
    "open_stack",
    "oracle_walk",
    "reachable_tables",
    "read_or_none",
]

#: (page_track, dma) options of sim: both page-track timings, both DMA models.
MODES = [
    ("forwarded", "iommu"),
    ("forwarded", "identity"),
    ("landed", "iommu"),
    ("landed", "identity"),
]


def open_stack(page_track: str = "forwarded", dma: str = "iommu",
               mem: int = 8 * regs.MiB) -> Stack:
    """A sim host in one of :data:`MODES`, its guest and a GVTg_V4_8 vGPU."""
    return open_backend_stack("sim", mem=mem, type_name="GVTg_V4_8", page_track=page_track, dma=dma)
