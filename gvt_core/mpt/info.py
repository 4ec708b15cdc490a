"""What a backend says about itself: identity, usability and capabilities.

Capabilities are the differences between hypervisors that change what the
core does, declared by the backend instead of guessed from its name.
"""

from __future__ import annotations

import enum

import attrs


class PageTrackMode(enum.Enum):
    """When a trapped write to a tracked guest page reaches the core."""

    #: KVM: the write is already in guest RAM when the core's handler runs;
    #: the handler only updates its shadow.
    WRITE_LANDED = "landed"
    #: Xen (p2m_ioreq_server) and ACRN (write-protected pages): the write is
    #: delivered *instead of* being performed; the core shadows it and then
    #: commits the bytes to guest RAM with ``write_gpa``.
    WRITE_FORWARDED = "forwarded"


class DmaMode(enum.Enum):
    """How ``dma_map_guest_page`` addresses relate to host frames."""

    #: no IOMMU: the DMA address of a guest page is its host physical address.
    IDENTITY = "identity"
    #: an IOMMU (or a simulation of one) hands out bus addresses unrelated to
    #: host frames.
    IOMMU = "iommu"


class HypervisorType(enum.IntEnum):
    """The kernel's ``INTEL_GVT_HYPERVISOR_*`` values, plus ours."""

    XEN = 0
    KVM = 1
    ACRN = 2
    SIM = 3


@attrs.frozen
class Capabilities:
    """Backend properties the core adapts to."""

    hypervisor: HypervisorType
    page_track: PageTrackMode
    dma: DmaMode
    #: the backend must be told which guest range is BAR0 (``set_trap_area``)
    #: because its traps are set per range (Xen, ACRN); KVM/VFIO traps the
    #: whole region anyway.
    needs_trap_area: bool = False
    #: the backend maps the vGPU's aperture slice into the guest's BAR2
    #: (``map_gfn_to_mfn``); with VFIO the BAR2 region is served otherwise.
    needs_aperture_map: bool = False
    #: largest page ``dma_map_guest_page`` accepts, in bytes (4096 or 2 MiB).
    max_dma_page: int = 4096
    #: the backend can launch guests for generic tooling (``create_vm``).
    can_create_vm: bool = False
    #: its guests run on real CPUs in real time (their own timers are wall-clock
    #: time), so a host on it defaults to the real-time host clock; guests that
    #: are models driven by their callers default to the simulated clock.
    realtime_guests: bool = False
    #: bytes of guest RAM one VM may hold pinned for DMA (a map beyond it raises
    #: DmaMapError); 0 when the backend keeps no quota (it pins nothing, as Xen and
    #: ACRN, whose guest memory is resident anyway, or at most the guest's RAM).
    pin_quota: int = 0


@attrs.frozen
class BackendInfo:
    """Answer of the ``backend_info`` hook."""

    name: str
    version: str
    usable: bool
    #: why the backend cannot work here; empty when ``usable``.
    reason: str
    capabilities: Capabilities
    #: how it works here when that is worth saying, e.g. on an emulated hypervisor
    #: and why not on the real one; empty otherwise.
    detail: str = ""

    def __attrs_post_init__(self) -> None:
        if not self.usable and not self.reason:
            raise ValueError(f"backend {self.name!r} says it is unusable without a reason")
