"""Helpers of the engine tests."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from gvt_core.hw.gm_heap import GmBlock


def put(block: GmBlock, dwords: Sequence[int], offset: int = 0) -> None:
    block.write(offset, struct.pack(f"<{len(dwords)}I", *dwords))


def get(block: GmBlock, count: int, offset: int = 0) -> tuple[int, ...]:
    return struct.unpack(f"<{count}I", block.read(offset, 4 * count))
