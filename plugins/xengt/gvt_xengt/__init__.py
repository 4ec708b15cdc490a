"""gvt-xengt: the Xen device-model ABI backend (privcmd dm_op, ioreq server, event channels).

Registered as ``xengt`` in the ``gvt.mpt`` entry-point group. The ABI layer
is not written yet, so the backend only describes itself: unusable, with
the reason, and the capabilities XenGT has (facts 1.5), so ``gvt backends``
and the loader report it truthfully. It implements no other hook.
"""

from __future__ import annotations

import importlib.metadata

from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.info import BackendInfo, Capabilities, DmaMode, HypervisorType, PageTrackMode

NAME = "xengt"
REASON = (
    "the Xen device-model ABI layer (privcmd dm_op, ioreq server, event channels) "
    "is not implemented yet; it arrives with its own issue"
)

try:
    VERSION = importlib.metadata.version("gvt-xengt")
except importlib.metadata.PackageNotFoundError:  # imported from a source tree
    VERSION = "unknown (gvt-xengt is not installed)"

#: what XenGT declares: writes to p2m_ioreq_server pages arrive instead of
#: landing; dma_map_guest_page is pfn << PAGE_SHIFT (dom0 without IOMMU);
#: BAR0 is trapped per range on the ioreq server and the aperture slice is
#: mapped with XEN_DOMCTL_memory_mapping; guests come from the Xen toolstack.
CAPABILITIES = Capabilities(
    hypervisor=HypervisorType.XEN,
    page_track=PageTrackMode.WRITE_FORWARDED,
    dma=DmaMode.IDENTITY,
    needs_trap_area=True,
    needs_aperture_map=True,
    max_dma_page=4096,
    can_create_vm=False,
)


class XengtBackend:
    """The xengt backend as far as it exists: it says what it is and why it cannot run."""

    @hookimpl
    def backend_info(self) -> BackendInfo:
        return BackendInfo(
            name=NAME, version=VERSION, usable=False, reason=REASON, capabilities=CAPABILITIES
        )


__all__ = ["CAPABILITIES", "REASON", "XengtBackend"]
