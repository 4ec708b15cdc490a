"""A domain's RAM as the device model sees it: one foreign mapping of every frame.

XenGT maps all of a guest's RAM into dom0 when it attaches and copies
through that mapping (``read_gpa``/``write_gpa``); so does this backend,
with ``IOCTL_PRIVCMD_MMAPBATCH_V2`` over the domain's low physical map.
Which frames are RAM is learned from Xen itself: the domain's map ends at
``XENMEM_maximum_gpfn``; a frame Xen refuses to map is not RAM. Guest RAM is
taken to be ``[0, end)`` where ``end`` is the first refused frame at or
above 1 MiB (the legacy VGA hole below it is allowed, and marked invalid),
capped at the lowest PCI hole hvmloader places (:data:`LOW_RAM_LIMIT_GFN`).
"""

from __future__ import annotations

import contextlib
import mmap

import numpy as np

from gvt_core.errors import GuestMemoryError, InvalidGfnError
from gvt_xengt.abi import PAGE_SHIFT
from gvt_xengt.privcmd import Privcmd

#: hvmloader never puts RAM below 4 GiB above 0xF0000000 (its smallest PCI hole).
LOW_RAM_LIMIT_GFN = 0xF0000
#: frames below 1 MiB may be holes (legacy VGA) inside RAM.
LEGACY_AREA_GFNS = 0x100


class ForeignRam:
    """Guest RAM ``[0, size)`` of one domain, mapped into this process."""

    def __init__(self, privcmd: Privcmd, domid: int, max_gpfn: int) -> None:
        limit = min(max_gpfn + 1, LOW_RAM_LIMIT_GFN)
        if limit <= 0:
            raise InvalidGfnError(0, f"domain {domid} has no guest frames")
        self._region, errs = privcmd.map_foreign(domid, np.arange(limit, dtype=np.uint64))
        bad = np.flatnonzero(errs[LEGACY_AREA_GFNS:] != 0)
        pages = LEGACY_AREA_GFNS + int(bad[0]) if bad.size else limit
        pages = min(pages, limit)
        self.pages = pages
        self.size = pages << PAGE_SHIFT
        self.valid = errs[:pages] == 0
        self.all_valid = bool(self.valid.all())
        self.view = memoryview(self._region)[: self.size]

    def close(self) -> None:
        self.view.release()
        close_region(self._region)

    # --- frames ---------------------------------------------------------------------------
    def is_valid(self, gfn: int) -> bool:
        return 0 <= gfn < self.pages and (self.all_valid or bool(self.valid[gfn]))

    def check_gfn(self, gfn: int) -> None:
        if not 0 <= gfn < self.pages:
            raise InvalidGfnError(gfn, f"outside guest RAM [0, {self.pages:#x})")
        if not self.all_valid and not self.valid[gfn]:
            raise InvalidGfnError(gfn, "Xen refused to map it (a hole in guest RAM)")

    def page(self, gfn: int) -> memoryview:
        return self.view[gfn << PAGE_SHIFT : (gfn + 1) << PAGE_SHIFT]

    # --- bytes --------------------------------------------------------------------------------
    def check(self, gpa: int, length: int, what: str) -> None:
        if length < 0:
            raise ValueError(f"a guest memory {what} needs a length >= 0, got {length}")
        if gpa < 0 or gpa + length > self.size:
            raise GuestMemoryError(gpa, length, self.size, what)
        if not self.all_valid and length:
            first, last = gpa >> PAGE_SHIFT, (gpa + length - 1) >> PAGE_SHIFT
            if not self.valid[first : last + 1].all():
                raise GuestMemoryError(gpa, length, self.size, what)

    def read(self, gpa: int, length: int) -> bytes:
        self.check(gpa, length, "read")
        return bytes(self.view[gpa : gpa + length])

    def write(self, gpa: int, data: bytes) -> None:
        self.check(gpa, len(data), "write")
        self.view[gpa : gpa + len(data)] = data


def close_region(region: mmap.mmap) -> None:
    """Unmap a privcmd region; if a page of it is still referenced somewhere (a view
    handed to the GPU model), the mapping goes when the last reference does."""
    with contextlib.suppress(BufferError):
        region.close()
