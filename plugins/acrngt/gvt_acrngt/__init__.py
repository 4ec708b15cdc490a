"""gvt-acrngt: the ACRN HSM ABI backend (``/dev/acrn_hsm``, ``linux/acrn.h``).

Registered as ``acrngt`` in the ``gvt.mpt`` entry-point group. The ABI layer
is not written yet, so the backend only describes itself: unusable, with
the reason, and the capabilities AcrnGT has (facts 1.6), so ``gvt backends``
and the loader report it truthfully. It implements no other hook.
"""

from __future__ import annotations

import importlib.metadata

from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.info import BackendInfo, Capabilities, DmaMode, HypervisorType, PageTrackMode

NAME = "acrngt"
REASON = (
    "the ACRN HSM ABI layer (/dev/acrn_hsm ioctls, ioreq client, write-protect and "
    "memory-region requests) is not implemented yet; it arrives with its own issue"
)

try:
    VERSION = importlib.metadata.version("gvt-acrngt")
except importlib.metadata.PackageNotFoundError:  # imported from a source tree
    VERSION = "unknown (gvt-acrngt is not installed)"

#: what AcrnGT declares: writes to write-protected pages arrive as REQ_WP
#: requests instead of landing; DMA addresses are host physical addresses;
#: BAR0 is an MMIO io-range on the ioreq client and the aperture slice is
#: mapped with add_memory_region; guests come from acrn-dm.
CAPABILITIES = Capabilities(
    hypervisor=HypervisorType.ACRN,
    page_track=PageTrackMode.WRITE_FORWARDED,
    dma=DmaMode.IDENTITY,
    needs_trap_area=True,
    needs_aperture_map=True,
    max_dma_page=4096,
    can_create_vm=False,
)


class AcrngtBackend:
    """The acrngt backend as far as it exists: it says what it is and why it cannot run."""

    @hookimpl
    def backend_info(self) -> BackendInfo:
        return BackendInfo(
            name=NAME, version=VERSION, usable=False, reason=REASON, capabilities=CAPABILITIES
        )


__all__ = ["CAPABILITIES", "REASON", "AcrngtBackend"]
