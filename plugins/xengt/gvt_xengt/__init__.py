"""gvt-xengt: XenGT as a dom0 user-space device model (privcmd dm_op, ioreq server,
event channels), on a Xen host or on the emulated Xen shipped with it.

Entry point ``xengt = "gvt_xengt:XengtBackend"`` in the ``gvt.mpt`` group.
"""

from gvt_xengt.backend import XengtBackend, native_reason
from gvt_xengt.domain import XenDomain, XengtHandle
from gvt_xengt.port import XenGuestPort

__all__ = ["XenDomain", "XenGuestPort", "XengtBackend", "XengtHandle", "native_reason"]
