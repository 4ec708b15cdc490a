"""Hypercalls XenGT makes outside the dm_op interface, on an unrestricted privcmd file.

``XENMEM_maximum_gpfn`` (how far a domain's physical map goes),
``XEN_DOMCTL_pausedomain``/``unpausedomain`` (fatal emulation errors, the
pause hooks) and ``XEN_DOMCTL_iomem_permission`` +
``XEN_DOMCTL_memory_mapping`` (the aperture slice shown in BAR2). domctl is
Xen's unstable toolstack interface: each call carries
:data:`~gvt_xengt.abi.XEN_DOMCTL_INTERFACE_VERSION` and Xen refuses
another version with EACCES.
"""

from __future__ import annotations

import ctypes
import errno

from gvt_core.errors import HypervisorCallError
from gvt_xengt import abi
from gvt_xengt.privcmd import Privcmd

#: frames per XEN_DOMCTL_memory_mapping call before halving on E2BIG (XenGT's chunk).
MEMORY_MAPPING_CHUNK = 64


class HostControl:
    """Toolstack-level hypercalls through one unrestricted privcmd file."""

    def __init__(self, privcmd: Privcmd) -> None:
        if privcmd.restricted_to is not None:
            raise ValueError("host control needs an unrestricted privcmd file")
        self.privcmd = privcmd

    # --- memory_op ------------------------------------------------------------------------
    def maximum_gpfn(self, domid: int) -> int:
        dom = abi.domid_t(domid)
        return self.privcmd.hypercall(
            f"XENMEM_maximum_gpfn of domain {domid}", abi.HYPERVISOR_memory_op,
            abi.XENMEM_maximum_gpfn, ctypes.addressof(dom),
        )

    # --- domctl -------------------------------------------------------------------------------
    def _domctl(self, call: str, domid: int, cmd: int, fill: str | None = None,
                **fields: int) -> None:
        d = abi.xen_domctl(cmd=cmd, interface_version=abi.XEN_DOMCTL_INTERFACE_VERSION,
                           domain=domid)
        if fill is not None:
            member = getattr(d.u, fill)
            for key, value in fields.items():
                setattr(member, key, value)
        self.privcmd.hypercall(call, abi.HYPERVISOR_domctl, ctypes.addressof(d))

    def pause(self, domid: int) -> None:
        self._domctl(f"XEN_DOMCTL_pausedomain of domain {domid}", domid,
                     abi.XEN_DOMCTL_pausedomain)

    def unpause(self, domid: int) -> None:
        self._domctl(f"XEN_DOMCTL_unpausedomain of domain {domid}", domid,
                     abi.XEN_DOMCTL_unpausedomain)

    def iomem_permission(self, domid: int, first_mfn: int, nr: int, allow: bool) -> None:
        self._domctl(
            f"XEN_DOMCTL_iomem_permission of {nr} frames at {first_mfn:#x} for domain {domid}",
            domid, abi.XEN_DOMCTL_iomem_permission, "iomem_permission",
            first_mfn=first_mfn, nr_mfns=nr, allow_access=1 if allow else 0,
        )

    def memory_mapping(self, domid: int, gfn: int, mfn: int, nr: int, add: bool) -> None:
        """Map (or unmap) ``nr`` machine frames at ``gfn``, in chunks Xen accepts:
        start with :data:`MEMORY_MAPPING_CHUNK` frames, halve on E2BIG."""
        done, chunk = 0, MEMORY_MAPPING_CHUNK
        while done < nr:
            n = min(chunk, nr - done)
            try:
                self._domctl(
                    f"XEN_DOMCTL_memory_mapping ({'add' if add else 'remove'} {n} frames "
                    f"{mfn + done:#x} at gfn {gfn + done:#x}) for domain {domid}",
                    domid, abi.XEN_DOMCTL_memory_mapping, "memory_mapping",
                    first_gfn=gfn + done, first_mfn=mfn + done, nr_mfns=n,
                    add_mapping=abi.DPCI_ADD_MAPPING if add else abi.DPCI_REMOVE_MAPPING,
                )
            except HypervisorCallError as exc:
                if exc.errno == errno.E2BIG and chunk > 1:
                    chunk //= 2
                    continue
                raise
            done += n
