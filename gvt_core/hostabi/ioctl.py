"""Linux ioctl request numbers: ``<asm-generic/ioctl.h>`` (the x86-64 layout).

The backends' ABI layers (``gvt_kvmgt.abi``, ``gvt_xengt.abi``,
``gvt_acrngt.abi``) *compute* every ioctl number from its C definition with
these helpers and the ctypes argument structure, rather than copying magic
numbers: a wrong structure size then shows up as a wrong ioctl number, which
their gcc probe tests (``plugins/*/tests/test_abi.py``) catch. The names are
the C macros without the leading underscore.
"""

from __future__ import annotations

import ctypes

IOC_NRBITS, IOC_TYPEBITS, IOC_SIZEBITS = 8, 8, 14
IOC_NRSHIFT = 0
IOC_TYPESHIFT = IOC_NRSHIFT + IOC_NRBITS
IOC_SIZESHIFT = IOC_TYPESHIFT + IOC_TYPEBITS
IOC_DIRSHIFT = IOC_SIZESHIFT + IOC_SIZEBITS

#: the direction bits: no argument copied, user -> kernel, kernel -> user.
IOC_NONE, IOC_WRITE, IOC_READ = 0, 1, 2


def IOC(direction: int, type_: int | str, nr: int, size: int) -> int:
    """``_IOC``: one ioctl number. ``type_`` is the magic number, or the
    character C headers write it as (``'P'``)."""
    if isinstance(type_, str):
        type_ = ord(type_)
    if size >= 1 << IOC_SIZEBITS:
        raise ValueError(f"ioctl argument of {size} bytes does not fit the size field")
    return (
        (direction << IOC_DIRSHIFT)
        | (type_ << IOC_TYPESHIFT)
        | (nr << IOC_NRSHIFT)
        | (size << IOC_SIZESHIFT)
    )


def IO(type_: int | str, nr: int) -> int:
    """``_IO``: an ioctl without an argument structure."""
    return IOC(IOC_NONE, type_, nr, 0)


def IOR(type_: int | str, nr: int, struct: type) -> int:
    """``_IOR``: the kernel fills ``struct``."""
    return IOC(IOC_READ, type_, nr, ctypes.sizeof(struct))


def IOW(type_: int | str, nr: int, struct: type) -> int:
    """``_IOW``: the kernel reads ``struct``."""
    return IOC(IOC_WRITE, type_, nr, ctypes.sizeof(struct))


def IOWR(type_: int | str, nr: int, struct: type) -> int:
    """``_IOWR``: the kernel reads ``struct`` and writes it back."""
    return IOC(IOC_READ | IOC_WRITE, type_, nr, ctypes.sizeof(struct))


def ioc_size(request: int) -> int:
    """``_IOC_SIZE``: the argument size an ioctl number encodes."""
    return (request >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)


def ioc_dir(request: int) -> int:
    """``_IOC_DIR``: the direction bits (IOC_NONE / IOC_WRITE / IOC_READ) it encodes."""
    return request >> IOC_DIRSHIFT
