"""The per-vGPU PPGTT scratch page tree (facts 4.6).

One host page per level: a scratch data page, a scratch PT whose 512 entries
point at it, a scratch PD pointing at the scratch PT, a scratch PDP pointing
at the scratch PD and a scratch PML4 pointing at the scratch PDP. A shadow
entry that cannot follow the guest (non-present, invalid frame, refused huge
page) points at the scratch table of the next level down, so a GPU walk,
including one the hardware starts speculatively (prefetch), always runs
through present entries into harmless per-vGPU memory and never meets a zero
or a stale address. The pages are write-ignored in system memory: a GPU
store through a scratch entry is discarded, so the tree never changes and
carries nothing (the host's GGTT scratch page is the same).
"""

from __future__ import annotations

import attrs
import numpy as np

from gvt_core.device.memory.ppgtt_entry import TableKind
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SHIFT, HostPagePool

#: scratch entries are present and writable, as the host driver writes them.
SCRATCH_FLAGS = regs.PPGTT_PRESENT | regs.PPGTT_RW


@attrs.define(eq=False)
class ScratchTree:
    """Scratch tables of one vGPU, registered in system memory under ``owner``."""

    pool: HostPagePool
    owner: str
    #: host frames by level: 0 = data page, 1 = PT, 2 = PD, 3 = PDP, 4 = PML4.
    frames: list[int] = attrs.field(factory=list, init=False)
    _bufs: list[memoryview] = attrs.field(factory=list, init=False)
    #: for each level 1..4, the entry value a table of that level holds where
    #: the guest has nothing valid (index 0 unused).
    fill_by_level: list[int] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        self.fill_by_level = [0]
        for level in range(5):
            frame, buf = self.pool.alloc(owner=self.owner, writable=False)
            self.frames.append(frame)
            self._bufs.append(buf)
            if level:
                entry = (self.frames[level - 1] << PAGE_SHIFT) | SCRATCH_FLAGS
                np.frombuffer(buf, dtype="<u8")[:] = entry
                self.fill_by_level.append(entry)

    def fill(self, kind: TableKind) -> int:
        """The entry every unused slot of a ``kind`` shadow table holds."""
        return self.fill_by_level[kind.level]

    @property
    def data_frame(self) -> int:
        return self.frames[0]

    def table_address(self, level: int) -> int:
        """Bus address of the scratch table of ``level`` (1 = PT .. 4 = PML4)."""
        return self.frames[level] << PAGE_SHIFT

    def is_scratch(self, bus_addr: int) -> bool:
        """Whether ``bus_addr`` lies in one of the scratch pages."""
        return (bus_addr >> PAGE_SHIFT) in self.frames

    def release(self) -> None:
        """Give the pages back (vGPU destroy); the GPU can no longer reach them."""
        for frame, buf in zip(self.frames, self._bufs, strict=True):
            self.pool.free(frame, buf)
        self.frames.clear()
        self._bufs.clear()
        self.fill_by_level = [0]
