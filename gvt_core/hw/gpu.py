"""The simulated GEN8 (Broadwell-class) host GPU that vGPUs are carved from.

What the device model needs of the physical GPU: the GGTT (1M 8-byte PTEs,
4 GiB of graphics memory) whose entries hold bus addresses resolved through
the host's :class:`~gvt_core.hw.sysmem.SystemMemory`, the aperture (the
CPU-visible low part of graphics memory), 32 fence registers, a scratch page
(write-ignored: it is shared by every vGPU's unmapped entries, so nothing
stored into it may reach another guest), and the host's golden config space.
The engines that execute commands (:mod:`gvt_core.hw.engine`) reach memory
only through the GGTT and the PPGTT tables of their context, and the sysmem
registry.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np

from gvt_core.errors import DmaFault
from gvt_core.hw import regs
from gvt_core.hw.engine.engine import HostEngines
from gvt_core.hw.gm_heap import HostGm
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, HostPagePool, SystemMemory

#: where the host firmware placed the GPU's BARs in host physical space.
HOST_BAR0_PA = 0xF000_0000
HOST_APERTURE_PA = 0xC000_0000


@attrs.define(eq=False)
class HostGpu:
    """The physical GPU as the host driver sees it."""

    #: the backend's ``from_virt_to_mfn``, to learn frames of host pages.
    frame_of: Callable[[int], int]
    aperture_size: int = regs.DEFAULT_APERTURE_SIZE
    num_fences: int = regs.MAX_NUM_FENCES
    device_id: int = regs.BDW_GT2_DEVICE_ID
    revision: int = regs.BDW_REVISION_ID
    sysmem: SystemMemory = attrs.field(factory=SystemMemory)
    #: host GGTT: one 64-bit PTE per 4 KiB page of graphics memory.
    ggtt: np.ndarray = attrs.field(init=False)
    #: host fence registers (64-bit values).
    fences: list[int] = attrs.field(init=False)
    pages: HostPagePool = attrs.field(init=False)
    scratch_frame: int = attrs.field(init=False)
    scratch_pte: int = attrs.field(init=False)
    #: the five engines (RCS, BCS, VCS, VCS2, VECS) that execute command buffers.
    engines: HostEngines = attrs.field(init=False)
    #: the host's hidden-GM reservation, for shadow rings and native contexts.
    host_gm: HostGm = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.aperture_size % regs.MiB or not (
            regs.HOST_LOW_GM_SIZE < self.aperture_size < regs.GM_TOTAL
        ):
            raise ValueError(
                f"aperture size {self.aperture_size:#x} must be a whole number of MiB, "
                f"larger than the host's {regs.HOST_LOW_GM_SIZE >> 20} MiB and below 4 GiB"
            )
        if not 0 < self.num_fences <= regs.MAX_NUM_FENCES:
            raise ValueError(f"fence count must be 1..{regs.MAX_NUM_FENCES}")
        self.pages = HostPagePool(self.sysmem, self.frame_of, owner="host")
        # write-ignored: every vGPU's unmapped GGTT entries and aperture pages lead here
        self.scratch_frame, _ = self.pages.alloc(owner="host-scratch", writable=False)
        self.scratch_pte = (self.scratch_frame << PAGE_SHIFT) | regs.GEN8_PAGE_PRESENT
        self.ggtt = np.full(regs.GGTT_ENTRIES, self.scratch_pte, dtype=np.uint64)
        self.fences = [0] * self.num_fences
        self.engines = HostEngines(self.sysmem)
        self.host_gm = HostGm(self.ggtt, self.pages, self.scratch_pte,
                              self.aperture_size, regs.HOST_HIGH_GM_SIZE)
        self.sysmem.register_window(
            HOST_APERTURE_PA >> PAGE_SHIFT, self.aperture_size >> PAGE_SHIFT, self._aperture_page
        )

    def _aperture_page(self, frame: int) -> memoryview:
        """CPU access through the aperture BAR: the page the GGTT maps there."""
        gm = (frame - (HOST_APERTURE_PA >> PAGE_SHIFT)) << PAGE_SHIFT
        return self.sysmem.page(self.gm_to_bus(gm) >> PAGE_SHIFT)

    # --- graphics memory geometry (facts 2.2) -----------------------------------
    @property
    def gm_total(self) -> int:
        return regs.GM_TOTAL

    @property
    def hidden_base(self) -> int:
        """High (non-mappable) GM starts where the aperture ends."""
        return self.aperture_size

    @property
    def hidden_size(self) -> int:
        return regs.GM_TOTAL - self.aperture_size

    # --- GGTT -------------------------------------------------------------------------
    def set_pte(self, index: int, pte: int) -> None:
        self.ggtt[index] = pte

    def gm_to_bus(self, gm: int) -> int:
        """Translate a graphics-memory address through the host GGTT."""
        if not 0 <= gm < regs.GM_TOTAL:
            raise DmaFault(gm, 1, who="ggtt")
        pte = int(self.ggtt[gm >> PAGE_SHIFT])
        if not pte & regs.GEN8_PAGE_PRESENT:
            raise DmaFault(gm, 1, who="ggtt (non-present PTE)")
        return (pte & regs.GTT_ADDR_MASK) | (gm & PAGE_MASK)

    def gm_read(self, gm: int, length: int) -> bytes:
        """GPU read of graphics memory through the GGTT (may span pages)."""
        out = bytearray()
        while length > 0:
            n = min(length, PAGE_SIZE - (gm & PAGE_MASK))
            out += self.sysmem.read(self.gm_to_bus(gm), n)
            gm += n
            length -= n
        return bytes(out)

    def gm_write(self, gm: int, data: bytes) -> None:
        """GPU write of graphics memory through the GGTT."""
        pos = 0
        while pos < len(data):
            n = min(len(data) - pos, PAGE_SIZE - (gm & PAGE_MASK))
            self.sysmem.write(self.gm_to_bus(gm), data[pos : pos + n])
            gm += n
            pos += n

    # --- fences ---------------------------------------------------------------------------
    def write_fence(self, index: int, value: int) -> None:
        self.fences[index] = value & 0xFFFF_FFFF_FFFF_FFFF
