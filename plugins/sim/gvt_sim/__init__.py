"""gvt-sim: a pure-software hypervisor backend for gvt (the embedded default).

Entry point ``sim = "gvt_sim:SimBackend"`` in the ``gvt.mpt`` group.
"""

from gvt_sim.backend import SimBackend
from gvt_sim.port import SimGuestPort
from gvt_sim.vm import SimHandle, SimVm

__all__ = ["SimBackend", "SimGuestPort", "SimHandle", "SimVm"]
