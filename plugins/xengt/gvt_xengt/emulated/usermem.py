"""The emulated kernel's ``copy_from_user``/``copy_to_user``.

ioctl arguments carry pointers into the caller's memory (dm_op buffers,
frame lists, error arrays). The kernel reads and writes them through the
caller's page tables and answers EFAULT for an address that is not mapped;
the emulated kernel does the same through ``/proc/self/mem``, which fails
with EIO (reported as EFAULT) instead of crashing on a bad pointer.
"""

from __future__ import annotations

import errno
import os
import threading


class UserFault(Exception):
    """An access to an address that is not mapped in the caller (EFAULT)."""

    def __init__(self, address: int, length: int) -> None:
        super().__init__(f"bad user address {address:#x} (+{length})")
        self.address = address
        self.length = length
        self.errno = errno.EFAULT


class UserMemory:
    """Reads and writes this process's memory by address, failing cleanly."""

    def __init__(self) -> None:
        self._fd = os.open("/proc/self/mem", os.O_RDWR | os.O_CLOEXEC)
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read(self, address: int, length: int) -> bytes:
        if length == 0:
            return b""
        if address <= 0 or address + length > 1 << 47:
            raise UserFault(address, length)
        try:
            data = os.pread(self._fd, length, address)
        except OSError:
            raise UserFault(address, length) from None
        if len(data) != length:
            raise UserFault(address, length)
        return data

    def write(self, address: int, data: bytes) -> None:
        if not data:
            return
        if address <= 0 or address + len(data) > 1 << 47:
            raise UserFault(address, len(data))
        try:
            done = os.pwrite(self._fd, data, address)
        except OSError:
            raise UserFault(address, len(data)) from None
        if done != len(data):
            raise UserFault(address, len(data))
