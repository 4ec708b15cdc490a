"""Host memory facts for a user-space VMM: frames from /proc/self/pagemap, pinning.

KVMGT in the kernel gets host frames with ``gfn_to_pfn``/``__pa``; from user
space the same answer comes from ``/proc/self/pagemap``, which reports frame
numbers only to a process with CAP_SYS_ADMIN (others read 0 in the PFN
field). Pages are pinned with ``mlock`` so their frame stays put while the
GPU may use it (the kernel pins with ``vfio_pin_pages``); ``mlock`` keeps a
page resident but the kernel may still migrate it during compaction unless
``vm.compact_unevictable_allowed`` is 0 -- the same caveat any user-space
pinning without VFIO has.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import resource
import struct
import threading

from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE, buffer_address

PAGEMAP_PRESENT = 1 << 63
PAGEMAP_PFN_MASK = (1 << 55) - 1
MADV_HUGEPAGE = 14
MADV_POPULATE_WRITE = 23

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.munlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class FramesUnavailableError(Exception):
    """pagemap does not reveal frame numbers to this process (reason in the message)."""


def mlock(addr: int, length: int) -> int:
    """Pin ``[addr, addr+length)``; returns 0 or the errno (ENOMEM/EPERM past RLIMIT_MEMLOCK)."""
    if _libc.mlock(addr, length) != 0:
        return ctypes.get_errno()
    return 0


def munlock(addr: int, length: int) -> int:
    """Unpin ``[addr, addr+length)``; returns 0 or the errno."""
    if _libc.munlock(addr, length) != 0:
        return ctypes.get_errno()
    return 0


#: the CAP_IPC_LOCK bit of /proc/self/status CapEff: mlock ignores RLIMIT_MEMLOCK.
CAP_IPC_LOCK = 14


def _status_field(name: str) -> str | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def memlock_limit() -> int | None:
    """Bytes this process may pin with mlock, or None when it is not limited
    (RLIMIT_MEMLOCK unlimited, or CAP_IPC_LOCK in the effective set)."""
    cap = _status_field("CapEff")
    if cap is not None and int(cap, 16) >> CAP_IPC_LOCK & 1:
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def locked_bytes() -> int:
    """Memory this process has pinned right now (VmLck of /proc/self/status)."""
    field = _status_field("VmLck")
    if field is None:
        return 0
    value, _, unit = field.partition(" ")
    return int(value) * (1024 if unit.strip().lower() == "kb" else 1)


def madvise(addr: int, length: int, advice: int) -> int:
    if _libc.madvise(addr, length, advice) != 0:
        return ctypes.get_errno()
    return 0


def populate_write(addr: int, length: int) -> None:
    """Fault pages in writable without changing their contents (a read fault would map
    the shared zero page, whose frame is not the page's own)."""
    if madvise(addr, length, MADV_POPULATE_WRITE) == 0:
        return
    # kernels before 5.14: an mlock populates writable private mappings too
    if mlock(addr, length) == 0:
        return
    raise FramesUnavailableError(
        f"cannot fault in {length} bytes at {addr:#x} (MADV_POPULATE_WRITE and mlock both failed)"
    )


class Pagemap:
    """Reads host frame numbers of this process's pages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd = -1
        self.reason = ""
        try:
            self._fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.reason = f"/proc/self/pagemap cannot be opened: {exc.strerror}"
            return
        probe = mmap.mmap(-1, PAGE_SIZE)
        try:
            probe[0] = 1
            entry = self._entry(buffer_address(probe))
            if not entry & PAGEMAP_PRESENT or not entry & PAGEMAP_PFN_MASK:
                self.reason = (
                    "/proc/self/pagemap hides frame numbers from this process "
                    "(the PFN field reads 0 without CAP_SYS_ADMIN); run the VMM with CAP_SYS_ADMIN"
                )
        finally:
            probe.close()

    @property
    def usable(self) -> bool:
        return not self.reason

    def _entry(self, vaddr: int) -> int:
        raw = os.pread(self._fd, 8, (vaddr >> PAGE_SHIFT) * 8)
        return struct.unpack("<Q", raw)[0]

    def frames(self, vaddr: int, count: int) -> list[int]:
        """Frames of ``count`` consecutive pages from page-aligned ``vaddr``; the pages
        must be present (callers fault or pin them first)."""
        if self.reason:
            raise FramesUnavailableError(self.reason)
        raw = os.pread(self._fd, 8 * count, (vaddr >> PAGE_SHIFT) * 8)
        out = []
        for i, (entry,) in enumerate(struct.iter_unpack("<Q", raw)):
            pfn = entry & PAGEMAP_PFN_MASK
            if not entry & PAGEMAP_PRESENT or pfn == 0:
                raise FramesUnavailableError(
                    f"host page at {vaddr + i * PAGE_SIZE:#x} is not resident (pagemap entry {entry:#x})"
                )
            out.append(pfn)
        return out

    def frame_of(self, vaddr: int, pin: bool = True) -> int:
        """Frame of the page holding ``vaddr``, faulted in writable (and, with
        ``pin``, pinned: the host's own pages the GPU reaches stay put). Guest
        pages are pinned only while DMA-mapped, and accounted then (see
        :mod:`gvt_kvmgt.dma`), so ``gfn_to_mfn`` asks with ``pin=False``."""
        page = vaddr & ~(PAGE_SIZE - 1)
        with self._lock:
            populate_write(page, PAGE_SIZE)
            if pin:
                mlock(page, PAGE_SIZE)
            return self.frames(page, 1)[0]


_PAGEMAP: Pagemap | None = None
_PAGEMAP_LOCK = threading.Lock()


def pagemap() -> Pagemap:
    """The process-wide pagemap reader."""
    global _PAGEMAP
    with _PAGEMAP_LOCK:
        if _PAGEMAP is None:
            _PAGEMAP = Pagemap()
        return _PAGEMAP
