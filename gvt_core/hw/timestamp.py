"""The GPU's command-streamer timestamp: what RING_TIMESTAMP reads on the host.

Gen6-8 count 12.5 MHz ticks (80 ns). The simulated GPU derives them from the
host's monotonic clock, so every vGPU reading its engines' timestamps sees the
same free-running counter, as guests on one physical GPU do.
"""

from __future__ import annotations

import time

from gvt_core.hw import regs

_NS_PER_S = 1_000_000_000


def cs_timestamp() -> int:
    """Ticks of the 64-bit command-streamer timestamp counter now."""
    return time.monotonic_ns() * regs.TIMESTAMP_FREQUENCY_HZ // _NS_PER_S
