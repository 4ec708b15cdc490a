"""Per-vGPU event counters.

Plain int attributes on a slots class: the trap paths increment them on
every access, so an increment must cost no more than an attribute store.
"""

from __future__ import annotations

import attrs


@attrs.define(slots=True)
class VgpuStats:
    """What happened to one vGPU since creation (never reset by a vGPU reset)."""

    cfg_reads: int = 0
    cfg_writes: int = 0
    mmio_reads: int = 0
    mmio_writes: int = 0
    ggtt_reads: int = 0
    ggtt_writes: int = 0
    #: guest GGTT entries the core pointed at the scratch page (invalid or foreign frames).
    ggtt_to_scratch: int = 0
    #: accesses to registers the table does not know.
    unknown_mmio: int = 0
    #: accesses the device answered with all ones / dropped: bad size, alignment or range.
    bad_accesses: int = 0
    #: SWSCI requests the guest triggered through config space.
    swsci_requests: int = 0
    #: BAR trap/aperture (un)map requests the backend refused.
    bar_map_errors: int = 0
    #: guest pages the backend could not DMA-map (refused, out of pin quota): the
    #: entry was pointed at scratch instead (the first one of each vGPU is logged).
    dma_map_failures: int = 0
    #: accesses that reached the vGPU after ``destroy_vgpu`` (a vCPU or thread that
    #: was mid-access): reads answered all ones, writes dropped, nothing touched.
    dead_accesses: int = 0
    resets: int = 0

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)
