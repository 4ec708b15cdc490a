"""The one seam between the backend and the two Xen device nodes.

Everything the backend does to Xen goes through a :class:`Transport`:
opening ``/dev/xen/privcmd`` and ``/dev/xen/evtchn``, ioctls carrying the
packed ABI structures of :mod:`gvt_xengt.abi`, ``mmap`` of privcmd regions,
and the read/write protocol of pending event-channel ports. On a Xen dom0
that is :class:`DeviceTransport` (``os``, ``fcntl.ioctl``, ``mmap``); the
emulated Xen (:mod:`gvt_xengt.emulated`) implements the same calls and
receives exactly the bytes the kernel would.

Failures are ``OSError`` with the errno the kernel (or Xen behind it)
returned, as from the real system calls.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
from typing import Protocol, runtime_checkable

PRIVCMD_DEVICE = "/dev/xen/privcmd"
EVTCHN_DEVICE = "/dev/xen/evtchn"

#: an ioctl argument: a ctypes structure (passed by address, written back) or None.
IoctlArg = ctypes.Structure | ctypes.Union | ctypes.Array | None


@runtime_checkable
class Transport(Protocol):
    """System calls on the Xen device nodes."""

    def open(self, path: str) -> int:
        """Open a device node; returns a file descriptor."""
        ...

    def close(self, fd: int) -> None:
        ...

    def ioctl(self, fd: int, request: int, arg: IoctlArg) -> int:
        """``ioctl(fd, request, &arg)``; the kernel may write ``arg`` back.
        Returns the ioctl's non-negative result."""
        ...

    def mmap(self, fd: int, pages: int) -> mmap.mmap:
        """A shared read/write mapping of ``pages`` pages of ``fd`` at offset 0
        (for privcmd: an empty region that a later ioctl populates)."""
        ...

    def read(self, fd: int, size: int) -> bytes:
        ...

    def write(self, fd: int, data: bytes) -> int:
        ...

    def pollable(self, fd: int) -> int:
        """A real file descriptor that ``select.poll`` reports readable when
        ``read(fd)`` has data (the fd itself for real devices)."""
        ...


class DeviceTransport:
    """The real device nodes of a Xen dom0 kernel."""

    def open(self, path: str) -> int:
        # non-blocking: an evtchn read with nothing queued answers EAGAIN, not a wait
        return os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)

    def close(self, fd: int) -> None:
        os.close(fd)

    def ioctl(self, fd: int, request: int, arg: IoctlArg) -> int:
        if arg is None:
            return int(fcntl.ioctl(fd, request, 0))
        return int(fcntl.ioctl(fd, request, arg, True))

    def mmap(self, fd: int, pages: int) -> mmap.mmap:
        return mmap.mmap(
            fd, pages * mmap.PAGESIZE, flags=mmap.MAP_SHARED,
            prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=0,
        )

    def read(self, fd: int, size: int) -> bytes:
        return os.read(fd, size)

    def write(self, fd: int, data: bytes) -> int:
        return os.write(fd, data)

    def pollable(self, fd: int) -> int:
        return fd
