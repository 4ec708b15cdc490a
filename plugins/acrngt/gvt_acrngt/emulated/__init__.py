"""An emulated ACRN: hypervisor, Service VM memory and HSM, strict about every byte.

It runs where no ACRN hypervisor does, so the backend, the contract suite and
the scenario suites run unchanged: the backend talks to it through the same
transport seam (:class:`~gvt_acrngt.transport.HsmTransport`) as to
``/dev/acrn_hsm``, with the same packed ioctl arguments and the same shared
request buffer page.
"""

from gvt_acrngt.emulated.machine import EmulatedAcrn, EmulatedTransport

__all__ = ["EmulatedAcrn", "EmulatedTransport"]
