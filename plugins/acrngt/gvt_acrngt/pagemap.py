"""Physical frames of this process's pages, from ``/proc/self/pagemap``.

On an ACRN Service VM the HSM pins the pages user space hands it and gives
the hypervisor their physical addresses; a user-space device model that needs
the same addresses (identity DMA, mapping a guest page read-only) reads them
from pagemap, which reports frame numbers only to a process with
CAP_SYS_ADMIN. Pages are faulted in writable and locked with ``mlock`` first,
so the frame read is the one the page keeps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading

import numpy as np

from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE

PAGEMAP_PRESENT = 1 << 63
PAGEMAP_PFN_MASK = (1 << 55) - 1
MADV_POPULATE_WRITE = 23

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class FramesUnavailableError(OSError):
    """pagemap does not give this process frame numbers (the reason is the message)."""


class Pagemap:
    """Reads the frames of this process's pages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        try:
            self._fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise FramesUnavailableError(
                exc.errno, f"/proc/self/pagemap cannot be opened: {exc.strerror}"
            ) from exc

    def frames_pinned(self, vaddr: int, pages: int) -> np.ndarray:
        """Frames of ``pages`` pages from page-aligned ``vaddr``, resident and locked."""
        if vaddr % PAGE_SIZE or pages < 0:
            raise ValueError(f"frames of {pages} pages from {vaddr:#x}: not page aligned")
        length = pages * PAGE_SIZE
        with self._lock:
            if pages and _libc.madvise(vaddr, length, MADV_POPULATE_WRITE) != 0:
                # kernels before 5.14: mlock populates writable private mappings too
                pass
            if pages and _libc.mlock(vaddr, length) != 0:
                err = ctypes.get_errno()
                raise FramesUnavailableError(
                    err, f"cannot lock {pages} pages at {vaddr:#x} ({os.strerror(err)}); "
                    "raise RLIMIT_MEMLOCK or run with CAP_IPC_LOCK"
                )
            raw = os.pread(self._fd, 8 * pages, (vaddr >> PAGE_SHIFT) * 8)
        entries = np.frombuffer(raw, dtype="<u8")
        frames = (entries & np.uint64(PAGEMAP_PFN_MASK)).astype(np.int64)
        if pages and (not bool((entries & np.uint64(PAGEMAP_PRESENT)).all()) or not frames.all()):
            raise FramesUnavailableError(
                0, "/proc/self/pagemap hides frame numbers from this process (the PFN "
                "field reads 0 without CAP_SYS_ADMIN); run the device model with CAP_SYS_ADMIN"
            )
        return frames

    def close(self) -> None:
        os.close(self._fd)
