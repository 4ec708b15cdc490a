"""The emulated side of the transport seam: the two device nodes, served by an EmulatedXen.

Implements :class:`gvt_xengt.transport.Transport`. Every open file is
identified by a real eventfd (so ``poll`` works on it as on the real
device); ioctls receive the caller's argument buffer itself, as bytes, and
the emulated driver writes its answers back into it.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading

from gvt_xengt.abi import PAGE_SIZE
from gvt_xengt.emulated.evtchn_dev import EvtchnFile
from gvt_xengt.emulated.privcmd import PrivcmdFile
from gvt_xengt.emulated.xen import EmulatedXen
from gvt_xengt.transport import EVTCHN_DEVICE, PRIVCMD_DEVICE, IoctlArg


def _buffer_address(region: mmap.mmap) -> int:
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(region))


class EmulatedTransport:
    """``/dev/xen/privcmd`` and ``/dev/xen/evtchn`` of one emulated machine."""

    def __init__(self, xen: EmulatedXen) -> None:
        self.xen = xen
        self._files: dict[int, PrivcmdFile | EvtchnFile] = {}
        self._lock = threading.Lock()

    def open(self, path: str) -> int:
        if path not in (PRIVCMD_DEVICE, EVTCHN_DEVICE):
            raise FileNotFoundError(errno.ENOENT, f"no such emulated device: {path}")
        if self.xen.closed:
            raise OSError(errno.ENODEV, "the emulated machine is shut down")
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        file: PrivcmdFile | EvtchnFile = (
            PrivcmdFile(self.xen) if path == PRIVCMD_DEVICE else EvtchnFile(self.xen, fd)
        )
        with self._lock:
            self._files[fd] = file
        return fd

    def _file(self, fd: int) -> PrivcmdFile | EvtchnFile:
        file = self._files.get(fd)
        if file is None:
            raise OSError(errno.EBADF, f"fd {fd} is not an open emulated Xen device")
        return file

    def close(self, fd: int) -> None:
        with self._lock:
            file = self._files.pop(fd, None)
        if file is None:
            raise OSError(errno.EBADF, f"fd {fd} is not an open emulated Xen device")
        file.release()
        os.close(fd)

    def ioctl(self, fd: int, request: int, arg: IoctlArg) -> int:
        file = self._file(fd)
        view = None if arg is None else memoryview(arg).cast("B")
        try:
            return file.ioctl(request, view)
        finally:
            if view is not None:
                view.release()

    def mmap(self, fd: int, pages: int) -> mmap.mmap:
        file = self._file(fd)
        if not isinstance(file, PrivcmdFile):
            raise OSError(errno.ENODEV, "the event-channel device cannot be mapped")
        region = mmap.mmap(-1, pages * PAGE_SIZE, flags=mmap.MAP_SHARED,
                           prot=mmap.PROT_READ | mmap.PROT_WRITE)
        file.add_region(region, _buffer_address(region))
        return region

    def read(self, fd: int, size: int) -> bytes:
        file = self._file(fd)
        if not isinstance(file, EvtchnFile):
            raise OSError(errno.EINVAL, "privcmd cannot be read")
        return file.read(size)

    def write(self, fd: int, data: bytes) -> int:
        file = self._file(fd)
        if not isinstance(file, EvtchnFile):
            raise OSError(errno.EINVAL, "privcmd cannot be written")
        return file.write(data)

    def pollable(self, fd: int) -> int:
        self._file(fd)
        return fd
