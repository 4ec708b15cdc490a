"""The emulated ``/dev/xen/privcmd``: the Linux driver's checks in front of the emulated Xen.

Each ioctl is decoded from the bytes of its argument, following its
pointers into the caller's memory like ``copy_from_user``; Linux's own
checks come first (drivers/xen/privcmd.c): a file restricted to a domain
refuses others (EPERM) and refuses ``IOCTL_PRIVCMD_HYPERCALL`` outright;
a dm_op with more than 16 buffers or a buffer over 4096 bytes is E2BIG;
a mapping must target a privcmd region of this file, and a first mapping
of a region must cover it exactly (EINVAL). Foreign frames are mapped for
real: the caller's region pages become the domain's RAM pages.
"""

from __future__ import annotations

import errno
import mmap
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from gvt_xengt import abi
from gvt_xengt.emulated import layouts as L
from gvt_xengt.emulated.memory import make_inaccessible, map_fixed
from gvt_xengt.emulated.usermem import UserFault

if TYPE_CHECKING:
    from gvt_xengt.emulated.xen import EmulatedXen

#: ``privcmd_dm_op_max_num`` and ``privcmd_dm_op_buf_max_size`` (module defaults).
DM_OP_MAX_NUM = 16
DM_OP_BUF_MAX_SIZE = 4096
#: frames one MMAPBATCH may name before gathering them runs out of memory (64 GiB).
MAX_BATCH_FRAMES = 1 << 24


def _fail(code: int, what: str) -> OSError:
    return OSError(code, f"emulated privcmd: {what}")


@attrs.define(eq=False)
class PrivcmdRegion:
    """A region of the caller's address space mmap()ed from this file."""

    start: int
    length: int
    #: a first mapping populated it (``vm_private_data`` set).
    used: bool = False
    mapped: np.ndarray = attrs.field(factory=lambda: np.zeros(0, dtype=bool))

    def __attrs_post_init__(self) -> None:
        self.mapped = np.zeros(self.length >> abi.PAGE_SHIFT, dtype=bool)

    def covers(self, addr: int, length: int) -> bool:
        return self.start <= addr and addr + length <= self.start + self.length


class PrivcmdFile:
    """One open of the emulated privcmd device."""

    def __init__(self, xen: EmulatedXen) -> None:
        self.xen = xen
        self.restrict = abi.DOMID_INVALID
        self.regions: list[PrivcmdRegion] = []

    def add_region(self, region: mmap.mmap, address: int) -> None:
        length = len(region)
        # the kernel reuses the addresses of regions the caller unmapped
        self.regions = [r for r in self.regions
                        if r.start + r.length <= address or address + length <= r.start]
        self.regions.append(PrivcmdRegion(address, length))

    def _region(self, addr: int) -> PrivcmdRegion | None:
        for r in self.regions:
            if r.start <= addr < r.start + r.length:
                return r
        return None

    def release(self) -> None:
        self.regions.clear()

    # --- dispatch --------------------------------------------------------------------------
    def ioctl(self, request: int, arg: memoryview | None) -> int:
        handlers = {
            abi.IOCTL_PRIVCMD_HYPERCALL: (L.PRIVCMD_HYPERCALL, self._hypercall),
            abi.IOCTL_PRIVCMD_MMAPBATCH_V2: (L.PRIVCMD_MMAPBATCH_V2, self._mmapbatch_v2),
            abi.IOCTL_PRIVCMD_DM_OP: (L.PRIVCMD_DM_OP, self._dm_op),
            abi.IOCTL_PRIVCMD_RESTRICT: (L.DOMID, self._restrict),
            abi.IOCTL_PRIVCMD_MMAP_RESOURCE: (L.PRIVCMD_MMAP_RESOURCE, self._mmap_resource),
        }
        entry = handlers.get(request)
        if entry is None:
            raise _fail(errno.ENOTTY, f"unknown ioctl {request:#x}")
        layout, handler = entry
        if arg is None or len(arg) < layout.size:
            raise _fail(errno.EFAULT, "argument shorter than its structure")
        return handler(layout.unpack(arg), arg)

    def _restricted_from(self, domid: int) -> bool:
        return self.restrict != abi.DOMID_INVALID and self.restrict != domid

    # --- ioctls ----------------------------------------------------------------------------------
    def _restrict(self, a: Any, arg: memoryview) -> int:
        if self.restrict == abi.DOMID_INVALID:
            self.restrict = a.domid
        elif self.restrict != a.domid:
            raise _fail(errno.EINVAL, "already restricted to another domain")
        return 0

    def _hypercall(self, a: Any, arg: memoryview) -> int:
        if self.restrict != abi.DOMID_INVALID:
            raise _fail(errno.EPERM, "hypercalls are refused on a restricted file")
        rc = self.xen.hypercall(a.op, a.arg)
        if rc < 0:
            raise _fail(-rc, f"hypercall {a.op} failed")
        return rc

    def _dm_op(self, a: Any, arg: memoryview) -> int:
        if self._restricted_from(a.dom):
            raise _fail(errno.EPERM, f"file restricted to domain {self.restrict}")
        if a.num == 0:
            return 0
        if a.num > DM_OP_MAX_NUM:
            raise _fail(errno.E2BIG, f"{a.num} dm_op buffers")
        mem = self.xen.usermem
        layout = L.PRIVCMD_DM_OP_BUF
        try:
            raw = mem.read(a.ubufs, layout.size * a.num)
        except UserFault:
            raise _fail(errno.EFAULT, "dm_op buffer array") from None
        bufs = [layout.unpack(raw, i * layout.size) for i in range(a.num)]
        for b in bufs:
            if b.size > DM_OP_BUF_MAX_SIZE:
                raise _fail(errno.E2BIG, f"dm_op buffer of {b.size} bytes")
        for b in bufs:  # lock_pages(): every buffer must be in the caller's memory
            try:
                mem.read(b.uptr, b.size)
            except UserFault:
                raise _fail(errno.EFAULT, f"dm_op buffer at {b.uptr:#x}") from None
        with self.xen.lock:
            rc = self.xen.dm_op(a.dom, [(b.uptr, b.size) for b in bufs])
        if rc < 0:
            raise _fail(-rc, "HYPERVISOR_dm_op")
        return rc

    def _mmapbatch_v2(self, a: Any, arg: memoryview) -> int:
        mem = self.xen.usermem
        if a.err == 0:
            raise _fail(errno.EINVAL, "MMAPBATCH_V2 without an error array")
        if self._restricted_from(a.dom):
            raise _fail(errno.EPERM, f"file restricted to domain {self.restrict}")
        if a.num == 0:
            raise _fail(errno.EINVAL, "no frames")
        if a.num > MAX_BATCH_FRAMES:
            raise _fail(errno.ENOMEM, f"cannot gather {a.num} frame numbers")
        try:
            gfns = np.frombuffer(mem.read(a.arr, 8 * a.num), dtype=np.uint64)
            mem.read(a.err, 4 * a.num)
        except UserFault:
            raise _fail(errno.EFAULT, "frame or error array") from None
        region = self._region(a.addr)
        length = a.num << abi.PAGE_SHIFT
        if region is None:
            raise _fail(errno.EINVAL, f"{a.addr:#x} is not a privcmd region of this file")
        if not region.used:
            if a.addr != region.start or length != region.length:
                raise _fail(errno.EINVAL, "a first mapping must cover its region exactly")
        elif not region.covers(a.addr, length):
            raise _fail(errno.EINVAL, "mapping outside the region")
        first = (a.addr - region.start) >> abi.PAGE_SHIFT
        if region.used and region.mapped[first : first + a.num].any():
            raise _fail(errno.EINVAL, "range already mapped")
        errs = np.zeros(a.num, dtype=np.int32)
        with self.xen.lock:
            d = self.xen.lookup(a.dom)
            if d is None:
                errs[:] = -errno.ESRCH
            else:
                self._map_frames(d, gfns, a.addr, errs)
        region.used = True
        region.mapped[first : first + a.num] |= errs == 0
        try:
            mem.write(a.err, errs.tobytes())
        except UserFault:
            raise _fail(errno.EFAULT, "error array") from None
        if (errs == -errno.ENOENT).any():
            raise _fail(errno.ENOENT, "some frames are paged out")
        return 0

    @staticmethod
    def _map_frames(d: object, gfns: np.ndarray, addr: int, errs: np.ndarray) -> None:
        """Map RAM frames of ``d`` (runs of consecutive frames in one call) and its
        special frames; other frames get -EINVAL and stay inaccessible."""
        from gvt_xengt.emulated.domain import HvmDomain

        assert isinstance(d, HvmDomain)
        n = int(gfns.size)
        ok = gfns < d.pages
        ok[ok] = d.p2m[gfns[ok].astype(np.int64)] != abi.HVMMEM_mmio_dm  # holes are not RAM
        errs[~ok] = -errno.EINVAL
        i = 0
        while i < n:
            j = i + 1
            if ok[i]:
                while j < n and ok[j] and gfns[j] == gfns[j - 1] + 1:
                    j += 1
                map_fixed(addr + (i << abi.PAGE_SHIFT), (j - i) << abi.PAGE_SHIFT, d.ram.fd,
                          int(gfns[i]) << abi.PAGE_SHIFT)
            else:
                while j < n and not ok[j]:
                    j += 1
                make_inaccessible(addr + (i << abi.PAGE_SHIFT), (j - i) << abi.PAGE_SHIFT)
            i = j
        for k in np.flatnonzero(~ok):  # Xen's special pages (legacy ioreq pages) map too
            page = d.special.get(int(gfns[k]))
            if page is not None:
                map_fixed(addr + (int(k) << abi.PAGE_SHIFT), abi.PAGE_SIZE, d.xen.heap.fd,
                          page << abi.PAGE_SHIFT)
                errs[k] = 0

    def _mmap_resource(self, a: Any, arg: memoryview) -> int:
        if self._restricted_from(a.dom):
            raise _fail(errno.EPERM, f"file restricted to domain {self.restrict}")
        if bool(a.addr) != bool(a.num):
            raise _fail(errno.EINVAL, "addr and num must both be set or both be zero")
        with self.xen.lock:
            if not a.addr:
                got = self.xen.acquire_resource(a.dom, a.type, a.id, a.idx, 0)
                if isinstance(got, int):
                    raise _fail(-got, "XENMEM_acquire_resource (size query)")
                arg[L.PRIVCMD_MMAP_RESOURCE.offsets["num"] :][:8] = got[0].to_bytes(8, "little")
                return 0
            region = self._region(a.addr)
            if region is None:
                raise _fail(errno.EINVAL, f"{a.addr:#x} is not a privcmd region of this file")
            if not region.covers(a.addr, a.num << abi.PAGE_SHIFT):
                raise _fail(errno.EINVAL, "resource larger than the region")
            got = self.xen.acquire_resource(a.dom, a.type, a.id, a.idx, a.num)
            if isinstance(got, int):
                raise _fail(-got, "XENMEM_acquire_resource")
            heap = self.xen.heap
            for i, page in enumerate(got):
                map_fixed(a.addr + (i << abi.PAGE_SHIFT), abi.PAGE_SIZE, heap.fd,
                          page << abi.PAGE_SHIFT)
            region.used = True
        return 0
