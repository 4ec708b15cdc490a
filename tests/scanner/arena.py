"""A shadow allocator for the scanner's unit tests: a numpy window standing for host GM.

The execution pipeline allocates shadows from the host's graphics memory
(``scanner.stage.GmShadows``); these tests exercise the scanner alone, so they
give it a bounded arena with the same contract (page-granular, bounded, a
:class:`ShadowAllocError` when full).
"""

from __future__ import annotations

import attrs
import numpy as np

from gvt_core.device.allocator import RangeAllocator
from gvt_core.errors import ShadowAllocError
from gvt_core.hw import regs

SHADOW_ALIGN = regs.GTT_PAGE_SIZE


@attrs.define(eq=False)
class ArenaBuffer:
    """A page-aligned piece of a :class:`ShadowArena`."""

    arena: ShadowArena
    gma: int
    nbytes: int
    freed: bool = False

    def _view(self, offset: int, nbytes: int) -> np.ndarray:
        if self.freed:
            raise ValueError(f"shadow buffer at {self.gma:#x} was freed")
        if offset < 0 or offset % 4 or nbytes < 0 or offset + nbytes > self.nbytes:
            raise ValueError(
                f"[{offset:#x}, {offset + nbytes:#x}) is outside the {self.nbytes}-byte buffer"
            )
        start = self.gma - self.arena.base + offset
        return self.arena.memory[start // 4:(start + nbytes) // 4]

    def write(self, offset: int, dwords: np.ndarray) -> None:
        data = np.asarray(dwords, dtype=np.uint32)
        self._view(offset, data.size * 4)[:] = data

    def read(self, offset: int, nbytes: int) -> np.ndarray:
        return self._view(offset, nbytes).copy()

    def free(self) -> None:
        if not self.freed:
            self.freed = True
            self.arena.release(self)


@attrs.define(eq=False)
class ShadowArena:
    """Shadow memory: ``size`` bytes of host-owned graphics memory at ``base``.

    Page-granular first-fit; :attr:`used` is what live shadows hold, bounded by
    ``size``. :meth:`read` serves an engine fetching from the window.
    """

    base: int
    size: int
    memory: np.ndarray = attrs.field(init=False)
    _ranges: RangeAllocator = attrs.field(init=False)
    used: int = 0

    def __attrs_post_init__(self) -> None:
        if self.base % SHADOW_ALIGN or self.size % SHADOW_ALIGN or self.size <= 0:
            raise ValueError("a shadow arena must be a positive whole number of pages")
        self.memory = np.zeros(self.size // 4, dtype=np.uint32)
        self._ranges = RangeAllocator(self.base, self.size, SHADOW_ALIGN)

    def allocate(self, nbytes: int) -> ArenaBuffer:
        size = max(-(-nbytes // SHADOW_ALIGN) * SHADOW_ALIGN, SHADOW_ALIGN)
        start = self._ranges.alloc(size)
        if start is None:
            raise ShadowAllocError(nbytes, self.size - self.used)
        self.used += size
        return ArenaBuffer(self, start, size)

    def release(self, buf: ArenaBuffer) -> None:
        self._ranges.free(buf.gma, buf.nbytes)
        self.used -= buf.nbytes

    def contains(self, gma: int, nbytes: int) -> bool:
        return self.base <= gma and gma + nbytes <= self.base + self.size

    def read(self, gma: int, nbytes: int) -> np.ndarray:
        """What the engine fetches at host address ``gma`` (inside the window)."""
        if not self.contains(gma, nbytes) or gma % 4 or nbytes % 4:
            raise ValueError(f"[{gma:#x}, {gma + nbytes:#x}) is not inside the shadow arena")
        start = (gma - self.base) // 4
        return self.memory[start:start + nbytes // 4].copy()
