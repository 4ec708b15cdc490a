"""Shadow batch buffers (facts 8.5): host copies the engine executes instead of guest memory.

Every batch buffer a workload reaches is copied out of guest memory *before* it
is decoded (the walker decodes its own copy, fetched once), audited, patched,
and written into host memory from a :class:`ShadowAllocator`. Each
MI_BATCH_BUFFER_START that reached it, in the ring section or in another shadow,
is relocated (a :class:`Relocation`) to the shadow's host address in GGTT space,
so the engine follows the copies and a guest rewriting its batch afterwards
changes nothing that runs.

The allocator is an interface because where shadows live is the host's choice;
the execution pipeline's is :class:`~gvt_core.device.execution.scanner.stage.GmShadows`:
blocks of the host's own graphics memory (``hw.gm_heap``, in the hidden-GM
reservation no vGPU gets, facts 2.2), mapped for command fetch only and
counted against the vGPU's shadow budget.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs
import numpy as np

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
