"""Memory of the emulated machine: domain RAM, Xen's own pages, machine frames.

Domain RAM and the pages Xen allocates for itself (ioreq pages) live in
memfds, so that a foreign mapping through the emulated privcmd is a real
shared mapping of the same pages (``mmap(MAP_FIXED)`` of the memfd over
the caller's privcmd region), exactly as a dom0 mapping shares the guest's
frames: a store by the device model is seen by the guest and vice versa.

Machine frames outside RAM (what ``XEN_DOMCTL_memory_mapping`` puts into a
guest, e.g. the GPU aperture) are the simulated host's frames: they
resolve through the host's :class:`~gvt_core.hw.sysmem.SystemMemory` at
each access, like a bus cycle. An unbacked machine address reads all
ones and drops writes (a master abort).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import threading

from gvt_core.errors import DmaFault
from gvt_core.hw.sysmem import SystemMemory
from gvt_xengt.abi import PAGE_SHIFT, PAGE_SIZE

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long,
]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_MAP_FAILED = ctypes.c_void_p(-1).value
MAP_FIXED = 0x10
PROT_NONE = 0


def map_fixed(address: int, length: int, fd: int, offset: int) -> None:
    """Replace ``[address, address + length)`` of this process with ``fd`` at ``offset``."""
    got = _libc.mmap(
        address, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | MAP_FIXED, fd, offset
    )
    if got == _MAP_FAILED or got != address:
        err = ctypes.get_errno()
        raise OSError(err, f"mmap(MAP_FIXED) at {address:#x}: {os.strerror(err)}")


def make_inaccessible(address: int, length: int) -> None:
    """Pages of a privcmd region Xen did not populate fault on access, as in Linux."""
    if _libc.mprotect(address, length, PROT_NONE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mprotect at {address:#x}: {os.strerror(err)}")


class MemfdPages:
    """``pages`` pages in one memfd, with this process's own view of them."""

    def __init__(self, name: str, pages: int) -> None:
        self.pages = pages
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, pages * PAGE_SIZE)
            self._map = mmap.mmap(self.fd, pages * PAGE_SIZE, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(self.fd)
            raise
        self.view = memoryview(self._map)

    def page(self, index: int) -> memoryview:
        return self.view[index << PAGE_SHIFT : (index + 1) << PAGE_SHIFT]

    def release_fd(self) -> None:
        """Close the memfd; mappings made from it (ours, dom0's) stay valid."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        if self.fd < 0:
            return
        self.view.release()
        self._map.close()
        os.close(self.fd)
        self.fd = -1


class XenHeap(MemfdPages):
    """Pages Xen allocates for itself and may share with dom0 (ioreq pages).

    A page is never handed out twice: a dom0 mapping of a freed page would
    otherwise alias its next owner (Xen keeps such a page alive by its
    reference count until dom0 unmaps it).
    """

    def __init__(self, pages: int) -> None:
        super().__init__("emulated-xen-heap", pages)
        self._next = 0
        self._lock = threading.Lock()

    def alloc(self) -> int:
        """A fresh zeroed page; ``OSError(ENOMEM)`` when the heap is used up."""
        with self._lock:
            if self._next >= self.pages:
                raise OSError(errno.ENOMEM, "emulated Xen heap exhausted")
            index = self._next
            self._next += 1
        return index


class MachineMemory:
    """Machine frames that are not RAM of a domain: the simulated host's frames."""

    def __init__(self) -> None:
        self.sysmem: SystemMemory | None = None

    def _page(self, frame: int) -> memoryview | None:
        if self.sysmem is None:
            return None
        try:
            return self.sysmem.page(frame)
        except DmaFault:
            return None

    def read(self, address: int, length: int) -> bytes:
        page = self._page(address >> PAGE_SHIFT)
        if page is None:
            return b"\xff" * length
        off = address & (PAGE_SIZE - 1)
        return bytes(page[off : off + length])

    def write(self, address: int, data: bytes) -> None:
        page = self._page(address >> PAGE_SHIFT)
        if page is not None:
            off = address & (PAGE_SIZE - 1)
            page[off : off + len(data)] = data
