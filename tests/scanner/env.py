"""A vGPU's view for scanner tests: its partition, whitelist, planes, and host shadow memory."""

from __future__ import annotations

from typing import Any

import numpy as np

from gvt_core.device.execution.scanner import (
    AddressSpace,
    AuditContext,
    DisplayPlane,
    GmPartition,
    RingSection,
)
from gvt_core.hw import regs
from tests.scanner.arena import ShadowArena
from tests.scanner.memory import GuestGm

MiB = regs.MiB
#: the vGPU's graphics memory: 64 MiB of aperture and 128 MiB of hidden GM.
LOW_BASE, LOW_SIZE = 0x0800_0000, 64 * MiB
HIGH_BASE, HIGH_SIZE = 0x4000_0000, 128 * MiB
PARTITION = GmPartition.of((LOW_BASE, LOW_SIZE), (HIGH_BASE, HIGH_SIZE))
#: host-owned GM the shadows live in (never inside a vGPU's partition).
HOST_SHADOW_BASE, HOST_SHADOW_SIZE = 0x0100_0000, 8 * MiB
RING_GMA = LOW_BASE
RING_SIZE = 4 * regs.GTT_PAGE_SIZE
BATCH_GGTT = LOW_BASE + 0x10_0000  # a GGTT batch inside the partition
BATCH_PPGTT = 0x7_0000_0000  # a PPGTT batch (48-bit address space)
DATA_GGTT = HIGH_BASE + 0x1000  # a GGTT data target inside the partition
OUTSIDE = 0x2000_0000  # GGTT outside the partition
HWS_PGA = LOW_BASE + 0x20_0000

GPR0 = regs.RENDER_RING_BASE + 0x600  # CS_GPR(0): whitelisted in these tests
GPR1 = GPR0 + 8
SECRET_REG = 0x9400  # not whitelisted
NONPRIV0 = 0x24D0  # RING_FORCE_TO_NONPRIV(0)
MOCS0 = 0xC800
PS_DEPTH_COUNT = 0x2350
RCS_TIMESTAMP = 0x2358
DERRMR = 0x44050
WHITELIST = frozenset({GPR0, GPR1, GPR0 + 4, NONPRIV0, MOCS0, PS_DEPTH_COUNT, RCS_TIMESTAMP,
                       DERRMR, regs.FORCEWAKE_MT, regs.BLT_RING_BASE + 0x600})
OWNED_PLANES = frozenset({(0, DisplayPlane.PRIMARY), (0, DisplayPlane.SPRITE)})


def make_ctx(engine: int = regs.ENGINE_RCS, **over: Any) -> AuditContext:
    kw: dict[str, Any] = dict(
        engine=engine,
        partition=PARTITION,
        register_allowed=WHITELIST.__contains__,
        owns_plane=lambda pipe, plane: (pipe, plane) in OWNED_PLANES,
    )
    kw.update(over)
    return AuditContext(**kw)


def make_arena() -> ShadowArena:
    return ShadowArena(HOST_SHADOW_BASE, HOST_SHADOW_SIZE)


def ring_of(*cmds: list[int], start: int = RING_GMA, size: int = RING_SIZE,
            head: int = 0) -> RingSection:
    words: list[int] = []
    for c in cmds:
        words += c
    return RingSection(np.array(words, dtype=np.uint32), start, size, head)


def put(gm: GuestGm, space: AddressSpace, gma: int, *cmds: list[int]) -> int:
    """Write commands at ``gma``; the address after them."""
    words: list[int] = []
    for c in cmds:
        words += c
    gm.write(space, gma, words)
    return gma + 4 * len(words)
