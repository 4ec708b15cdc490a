"""Memory a device model shares with the HSM: guest RAM and the request buffer page.

Both are memfds mapped shared, as acrn-dm allocates them: the HSM pins the
pages behind the addresses it is given, and a memfd can be handed to another
process (the launcher handover) which then sees the very same pages.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os

from gvt_core.errors import GuestMemoryError
from gvt_core.hw.sysmem import PAGE_SIZE


class SharedMemory:
    """A memfd of ``size`` bytes mapped read-write and shared."""

    def __init__(self, size: int, name: str, fd: int | None = None, offset: int = 0) -> None:
        if size <= 0 or size % PAGE_SIZE or offset % PAGE_SIZE or offset < 0:
            raise ValueError(f"shared memory of {size} bytes at offset {offset}: not whole pages")
        self.size = size
        if fd is None:
            fd = os.memfd_create(name, os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, size)
            except BaseException:
                os.close(fd)
                raise
        self.fd = fd
        self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                             offset=offset)
        self.view = memoryview(self.map)
        self.address = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        self.closed = False

    def page(self, index: int) -> memoryview:
        return self.view[index * PAGE_SIZE : (index + 1) * PAGE_SIZE]

    def close(self) -> None:
        """Unmap and close the memfd. Views still exported keep the mapping alive
        until they go (the garbage collector unmaps it then)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(BufferError):
            self.view.release()
            self.map.close()
        os.close(self.fd)


class GuestRam(SharedMemory):
    """A User VM's RAM ``[0, size)``, as this process maps it."""

    def check(self, gpa: int, length: int, what: str) -> None:
        if length < 0:
            raise ValueError(f"guest {what} length must be >= 0, got {length}")
        if gpa < 0 or gpa + length > self.size:
            raise GuestMemoryError(gpa, length, self.size, what)

    def read(self, gpa: int, length: int) -> bytes:
        self.check(gpa, length, "read")
        return bytes(self.view[gpa : gpa + length])

    def write(self, gpa: int, data: bytes) -> None:
        self.check(gpa, len(data), "write")
        self.view[gpa : gpa + len(data)] = data
