"""gvt-acrngt: AcrnGT, the ACRN backend, over the HSM character device.

Registered as ``acrngt`` in the ``gvt.mpt`` entry-point group. The backend
(:mod:`gvt_acrngt.backend`) is a user-space ioreq client of the ACRN
Hypervisor Service Module (``/dev/acrn_hsm``, ``linux/acrn.h``, as ctypes in
:mod:`gvt_acrngt.abi`), as acrn-dm is; :mod:`gvt_acrngt.emulated` is a strict
emulated ACRN behind the same transport seam, used where no ACRN runs.
"""

from gvt_acrngt.backend import AcrngtBackend

__all__ = ["AcrngtBackend"]
