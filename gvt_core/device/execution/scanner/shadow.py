"""Shadow batch buffers (facts 8.5): host copies the engine executes instead of guest memory.

Every batch buffer a workload reaches is copied out of guest memory *before* it
is decoded (the walker decodes its own copy, fetched once), audited, patched,
and written into host memory from a :class:`ShadowAllocator`. Each
MI_BATCH_BUFFER_START that reached it, in the ring section or in another shadow,
is relocated (a :class:`Relocation`) to the shadow's host address in GGTT space,
so the engine follows the copies and a guest rewriting its batch afterwards
changes nothing that runs.

The allocator is an interface because where shadows live is the host's choice:
:class:`ShadowArena` is a bounded window of host-owned graphics memory backed
by host RAM (the host keeps the first 128 MiB of aperture and 384 MiB of hidden
GM for itself, facts 2.2); the execution pipeline binds it to the host GPU.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs
import numpy as np

from gvt_core.device.allocator import RangeAllocator
from gvt_core.errors import ShadowAllocError
from gvt_core.hw import regs

SHADOW_ALIGN = regs.GTT_PAGE_SIZE
_NO_DWORDS = np.zeros(0, dtype=np.uint32)
_NO_DWORDS.flags.writeable = False


class AddressSpace(enum.Enum):
    """Where a guest graphics address is translated."""

    GGTT = "ggtt"
    PPGTT = "ppgtt"  # the workload context's PPGTT (its shadow)


class HostBuffer(Protocol):
    """Host memory holding one shadow, reachable by the engine at :attr:`gma`."""

    @property
    def gma(self) -> int:
        """Host GGTT address of the first byte."""
        ...

    @property
    def nbytes(self) -> int: ...

    def write(self, offset: int, dwords: np.ndarray) -> None:
        """Store ``dwords`` (uint32) at byte ``offset``."""
        ...

    def read(self, offset: int, nbytes: int) -> np.ndarray:
        """``nbytes`` at byte ``offset`` as uint32 dwords (a copy)."""
        ...

    def free(self) -> None:
        """Give the memory back; the buffer is unusable afterwards."""
        ...


class ShadowAllocator(Protocol):
    """Source of host memory for shadow batch buffers."""

    def allocate(self, nbytes: int) -> HostBuffer:
        """A buffer of at least ``nbytes``; :class:`ShadowAllocError` when none is left."""
        ...


@attrs.define(eq=False)
class ShadowBatch:
    """One guest batch buffer and its host copy."""

    index: int
    space: AddressSpace
    #: guest graphics address of its first dword (in :attr:`space`).
    guest_gma: int
    #: 1 = first level (started from the ring), 2 = second level.
    level: int
    #: PPGTT batches are non-privileged; GGTT ones privileged (the hardware's rule).
    privileged: bool
    #: the copy, from the first dword to the end of its last command; patched in place.
    dwords: np.ndarray = _NO_DWORDS
    host: HostBuffer | None = None

    @property
    def nbytes(self) -> int:
        return int(self.dwords.size) * 4

    @property
    def host_gma(self) -> int:
        if self.host is None:
            raise ValueError(f"shadow batch {self.index} has no host memory yet")
        return self.host.gma


@attrs.frozen(slots=True)
class Relocation:
    """An MI_BATCH_BUFFER_START redirected to a shadow."""

    #: buffer holding the MI_BATCH_BUFFER_START: -1 = the ring section, else a shadow index.
    parent: int
    #: dword index of its header in the parent.
    offset: int
    #: the shadow it now starts.
    target: int
    #: the guest address (and space) it named before.
    guest_gma: int
    space: AddressSpace


BB_START_PPGTT = 1 << 8  # MI_BATCH_BUFFER_START dword 0: address space indicator


def relocate(dwords: np.ndarray, offset: int, host_gma: int) -> None:
    """Point the MI_BATCH_BUFFER_START at ``offset`` at ``host_gma`` in GGTT space."""
    dwords[offset] = int(dwords[offset]) & ~BB_START_PPGTT
    dwords[offset + 1] = host_gma & 0xFFFF_FFFC
    dwords[offset + 2] = (int(dwords[offset + 2]) & ~0xFFFF) | ((host_gma >> 32) & 0xFFFF)


# --- a concrete allocator: a window of host graphics memory backed by host RAM -------------------
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
