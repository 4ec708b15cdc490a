"""Frames of the simulated host machine that the xengt backend hands out.

The GPU is simulated, so the "machine frames" it reaches by DMA are those
of the simulated host's frame space, as with every backend here. xengt
gives out a window per attached domain (its RAM, for identity DMA) and one
frame per host page the core asks about (``from_virt_to_mfn``), upwards
from 4 GiB so they never meet the host GPU's aperture and BAR windows.
"""

from __future__ import annotations

import threading

#: first frame handed out (4 GiB); below lie the host's low memory and MMIO windows.
HOST_FRAME_BASE = 0x10_0000
#: frames of the simulated host's physical space (46-bit addresses).
HOST_FRAME_LIMIT = 1 << 34


class FrameAllocator:
    """Hands out frame numbers upwards, never twice."""

    def __init__(self, base: int = HOST_FRAME_BASE, limit: int = HOST_FRAME_LIMIT) -> None:
        self.base = base
        self.limit = limit
        self._next = base
        self._lock = threading.Lock()

    def alloc(self, count: int, align: int = 1) -> int:
        if count <= 0:
            raise ValueError(f"frame count must be positive, got {count}")
        with self._lock:
            first = -(-self._next // align) * align
            if first + count > self.limit:
                raise MemoryError(
                    f"simulated host frame space [{self.base:#x}, {self.limit:#x}) is exhausted"
                )
            self._next = first + count
            return first
