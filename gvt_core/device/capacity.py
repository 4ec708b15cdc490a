"""How many more vGPUs of a type fit a host, and what limits them.

The allocator counts instances (facts 2.2); a user who asked for more also
needs to know *why* no more fit, in words: which resource, how much each
vGPU takes, how much the host keeps for itself.
"""

from __future__ import annotations

import attrs

from gvt_core.device.allocator import FENCES, HIGH_GM, IDS, LOW_GM, ResourceAllocator
from gvt_core.device.types import VgpuType
from gvt_core.hw import regs


@attrs.frozen
class Capacity:
    """``count`` more vGPUs of ``type_name`` fit; ``limited_by`` runs out first."""

    type_name: str
    count: int
    #: one of the allocator's resource names (``allocator.IDS``, ``LOW_GM``, ...).
    limited_by: str
    #: why, in a sentence a user can act on.
    reason: str


def capacity(allocator: ResourceAllocator, vtype: VgpuType) -> Capacity:
    """The instances of ``vtype`` that still fit and the resource that caps them."""
    guest_ids = regs.GVT_MAX_VGPU - 1
    terms = [
        (len(allocator.free_ids), IDS,
         f"a host has {guest_ids} vGPU ids whatever the type, GVT_MAX_VGPU "
         f"{regs.GVT_MAX_VGPU} less the idle vGPU's id 0; {len(allocator.free_ids)} are free"),
        (allocator.low_avail // vtype.low_gm_size, LOW_GM,
         f"each {vtype.name} takes {vtype.low_gm_size >> 20} MiB of aperture; "
         f"{allocator.low_avail >> 20} MiB is free (the host keeps "
         f"{regs.HOST_LOW_GM_SIZE >> 20} MiB of the {allocator.aperture_size >> 20} MiB aperture)"),
        (allocator.high_avail // vtype.high_gm_size, HIGH_GM,
         f"each {vtype.name} takes {vtype.high_gm_size >> 20} MiB of hidden graphics memory; "
         f"{allocator.high_avail >> 20} MiB is free"),
        (allocator.fence_avail // vtype.fences, FENCES,
         f"each {vtype.name} takes {vtype.fences} fence registers; {allocator.fence_avail} are "
         f"free (the host keeps {regs.HOST_FENCE})"),
    ]
    count, resource, reason = min(terms, key=lambda t: t[0])
    return Capacity(vtype.name, count, resource, reason)
