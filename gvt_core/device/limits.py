"""Bounds on what a guest can make the device model hold.

Everything a guest can grow is bounded; the bounds of the device model that
are not a property of one subsystem's data structure live here (the PPGTT's
shadow-page and root-set limits are :data:`~gvt_core.device.memory.ppgtt.
DEFAULT_MAX_SHADOW_PAGES` and ``DEFAULT_MAX_MMS``, the out-of-sync pool's is
:data:`~gvt_core.device.memory.oos.DEFAULT_OOS_PAGES`). docs/architecture.md
("Limits") lists every bound of the project with its value and what happens
when it is reached.
"""

from __future__ import annotations

#: distinct untracked MMIO offsets a vGPU remembers (and logs, once each). Reached:
#: further untracked offsets are still served from the vreg and counted in
#: ``stats.unknown_mmio``, but neither remembered nor logged.
MAX_LOGGED_OFFSETS = 1024

#: times one guest-triggered log message (per format string and vGPU) is logged;
#: the last one says so, later ones are dropped (``gvt_core.device.guest_log``).
MAX_LOG_REPEATS = 5
