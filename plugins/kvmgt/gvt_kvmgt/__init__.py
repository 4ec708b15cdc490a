"""gvt-kvmgt: a real KVM backend for gvt, a user-space VMM over /dev/kvm.

Entry point ``kvmgt = "gvt_kvmgt:KvmgtBackend"`` in the ``gvt.mpt`` group.
"""

from gvt_kvmgt.backend import KvmgtBackend, KvmgtHandle, probe
from gvt_kvmgt.port import KvmGuestPort
from gvt_kvmgt.vm import KvmGuestVm, ProgramStatus

__all__ = ["KvmGuestPort", "KvmGuestVm", "KvmgtBackend", "KvmgtHandle", "ProgramStatus", "probe"]
