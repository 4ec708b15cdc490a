"""``/dev/xen/privcmd``: device-model operations, foreign mappings, hypercalls.

One :class:`Privcmd` is one open of the device. A device model restricts
its file to the domain it serves (``IOCTL_PRIVCMD_RESTRICT``, as QEMU does):
dm_ops and mappings then work for that domain only and arbitrary
hypercalls are refused. The backend keeps one unrestricted file per host
for the few domctls XenGT issues (pause, iomem permission, memory mapping).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
from collections.abc import Sequence

import numpy as np

from gvt_core.errors import HypervisorCallError
from gvt_xengt import abi
from gvt_xengt.devicefile import NAME, DeviceFile
from gvt_xengt.transport import PRIVCMD_DEVICE, Transport


class Privcmd(DeviceFile):
    """One open file of ``/dev/xen/privcmd``."""

    DEVICE = PRIVCMD_DEVICE

    def __init__(self, transport: Transport, device: str | None = None) -> None:
        super().__init__(transport, device)
        self.restricted_to: int | None = None

    # --- restriction ----------------------------------------------------------------------
    def restrict(self, domid: int) -> None:
        """Limit this file to ``domid`` for good (dm_ops and mappings only)."""
        arg = abi.domid_t(domid)
        self._ioctl(f"IOCTL_PRIVCMD_RESTRICT to domain {domid}", abi.IOCTL_PRIVCMD_RESTRICT, arg)
        self.restricted_to = domid

    # --- dm_op ----------------------------------------------------------------------------
    def dm_op(self, domid: int, op: abi.xen_dm_op, extra: ctypes.Array | None = None) -> None:
        """Issue one device-model operation; Xen writes its OUT fields into ``op``."""
        count = 1 if extra is None else 2
        bufs = (abi.privcmd_dm_op_buf * count)()
        bufs[0].uptr = ctypes.addressof(op)
        bufs[0].size = ctypes.sizeof(op)
        if extra is not None:
            bufs[1].uptr = ctypes.addressof(extra)
            bufs[1].size = ctypes.sizeof(extra)
        arg = abi.privcmd_dm_op(dom=domid, num=count, ubufs=ctypes.addressof(bufs))
        name = abi.DMOP_NAMES.get(op.op, f"dm_op {op.op}")
        self._ioctl(f"{name} on domain {domid}", abi.IOCTL_PRIVCMD_DM_OP, arg)

    # --- hypercalls ------------------------------------------------------------------------
    def hypercall(self, call: str, op: int, *args: int) -> int:
        """``IOCTL_PRIVCMD_HYPERCALL``: Xen's return value (>= 0), or the error raised."""
        if len(args) > 5:
            raise ValueError("a hypercall takes at most five arguments")
        arg = abi.privcmd_hypercall(op=op)
        for i, value in enumerate(args):
            arg.arg[i] = value
        return self._ioctl(call, abi.IOCTL_PRIVCMD_HYPERCALL, arg)

    # --- mappings -------------------------------------------------------------------------
    def map_resource(self, domid: int, type_: int, id_: int, idx: int, pages: int) -> mmap.mmap:
        """Map ``pages`` frames of a Xen resource (an ioreq server's pages) into a
        fresh privcmd region (``IOCTL_PRIVCMD_MMAP_RESOURCE``)."""
        region = self._region(pages)
        arg = abi.privcmd_mmap_resource(
            dom=domid, type=type_, id=id_, idx=idx, num=pages, addr=_address(region)
        )
        try:
            self._ioctl(
                f"IOCTL_PRIVCMD_MMAP_RESOURCE (type {type_} id {id_} frame {idx}) of domain {domid}",
                abi.IOCTL_PRIVCMD_MMAP_RESOURCE, arg,
            )
        except BaseException:
            region.close()
            raise
        return region

    def map_foreign(self, domid: int, gfns: Sequence[int] | np.ndarray) -> tuple[mmap.mmap, np.ndarray]:
        """Map guest frames ``gfns`` of ``domid`` into one fresh region, page ``i``
        of the region showing ``gfns[i]`` (``IOCTL_PRIVCMD_MMAPBATCH_V2``).

        :returns: the region and one error code per frame (0, or a negative
            errno for a frame Xen would not map; such pages must not be touched).
        """
        frames = np.ascontiguousarray(gfns, dtype=np.uint64)
        n = int(frames.size)
        if n == 0:
            raise ValueError("map_foreign needs at least one frame")
        errs = np.zeros(n, dtype=np.int32)
        region = self._region(n)
        arg = abi.privcmd_mmapbatch_v2(
            num=n, dom=domid, addr=_address(region),
            arr=frames.ctypes.data, err=errs.ctypes.data,
        )
        try:
            self.transport.ioctl(self.fd, abi.IOCTL_PRIVCMD_MMAPBATCH_V2, arg)
        except OSError as exc:
            # ENOENT: mapped, but some frames are paged out; their codes say which
            if exc.errno != errno.ENOENT:
                region.close()
                raise HypervisorCallError(
                    NAME, f"IOCTL_PRIVCMD_MMAPBATCH_V2 of {n} frames of domain {domid}",
                    exc.errno or 0,
                ) from exc
        return region, errs

    def _region(self, pages: int) -> mmap.mmap:
        try:
            return self.transport.mmap(self.fd, pages)
        except OSError as exc:
            raise HypervisorCallError(
                NAME, f"mmap of {pages} pages of {self.device}", exc.errno or 0
            ) from exc


def _address(region: mmap.mmap) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(region))
