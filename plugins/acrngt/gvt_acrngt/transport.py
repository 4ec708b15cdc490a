"""The one seam between the backend and an ACRN Service VM kernel.

Everything the backend asks of the Service VM goes through a
:class:`HsmTransport`: opening an HSM file (``/dev/acrn_hsm``), issuing an
ioctl with the packed bytes of its argument, closing the file, and the
Service VM physical frame of one of this process's pages (what the HSM pins
and hands to the hypervisor). :class:`DeviceTransport` is the real one:
``os.open``, ``fcntl.ioctl``, ``os.close`` and ``/proc/self/pagemap``. The
emulated ACRN implements the same protocol and receives exactly the bytes
the kernel would (:mod:`gvt_acrngt.emulated`).

The memory the HSM shares with user space (the request buffer page, guest
RAM) is real memory in both cases: the backend maps memfds and passes their
addresses, as acrn-dm does.
"""

from __future__ import annotations

import fcntl
import os
from typing import Protocol, runtime_checkable

import numpy as np

from gvt_acrngt.pagemap import Pagemap

#: the HSM character device of an ACRN Service VM.
HSM_DEVICE = "/dev/acrn_hsm"


@runtime_checkable
class HsmTransport(Protocol):
    """File, ioctl and frame access to one Service VM kernel's HSM."""

    #: what the transport talks to, for messages ("/dev/acrn_hsm", "emulated ACRN").
    label: str

    def open(self) -> int:
        """A new HSM file (``open("/dev/acrn_hsm", O_RDWR)``): a file descriptor."""
        ...

    def ioctl(self, fd: int, request: int, arg: bytearray | int = 0) -> int:
        """One ioctl. ``arg`` is the packed argument (updated in place for _IOWR
        ioctls) or an integer for ioctls that take none. Raises :class:`OSError`
        with the kernel's errno; returns the kernel's non-negative result."""
        ...

    def close(self, fd: int) -> None:
        """Close an HSM file descriptor (the last close releases the file's VM)."""
        ...

    def frames_of(self, vaddr: int, pages: int) -> np.ndarray:
        """Service VM physical frames of ``pages`` consecutive pages of this process
        from the page-aligned ``vaddr`` (int64 array); the pages are made resident
        and locked first."""
        ...


class DeviceTransport:
    """The real Service VM: ``/dev/acrn_hsm`` through the standard library."""

    def __init__(self, device: str = HSM_DEVICE) -> None:
        self.device = device
        self.label = device
        self._pagemap: Pagemap | None = None

    def open(self) -> int:
        return os.open(self.device, os.O_RDWR | os.O_CLOEXEC)

    def ioctl(self, fd: int, request: int, arg: bytearray | int = 0) -> int:
        if isinstance(arg, bytearray):
            return fcntl.ioctl(fd, request, arg, True)
        return fcntl.ioctl(fd, request, arg)

    def close(self, fd: int) -> None:
        os.close(fd)

    def frames_of(self, vaddr: int, pages: int) -> np.ndarray:
        if self._pagemap is None:
            self._pagemap = Pagemap()
        return self._pagemap.frames_pinned(vaddr, pages)


def probe_device(device: str = HSM_DEVICE) -> str:
    """Empty when ``device`` opens read-write (an ACRN Service VM), else why not."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{device} does not exist: this is not an ACRN Service VM (no HSM driver)"
    except OSError as exc:
        return f"{device} cannot be opened: {exc.strerror or exc}"
    os.close(fd)
    return ""
