"""Simulated host physical memory: frame numbers, and the guests' RAM.

Host frames are numbers handed out by :class:`FrameAllocator`; they cost
nothing until something is stored behind them. Guest RAM is one private
anonymous mapping per guest: the kernel materialises a page on its first
write, so a 4 GiB guest costs only the pages it touched, and a read of an
untouched page returns zeros without allocating anything.
"""

from __future__ import annotations

import mmap

import attrs

from gvt_core.errors import GuestMemoryError, InvalidGfnError
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE

#: first host frame sim hands out (4 GiB): everything below is the host's
#: low memory and MMIO hole, where the host GPU's aperture and BAR0 windows live.
HOST_FRAME_BASE = 0x10_0000
#: first frame of the simulated IOMMU's bus-address space (1 << 44 bytes),
#: disjoint from every host frame sim will ever hand out.
IOVA_FRAME_BASE = 1 << 32
#: frames per 2 MiB page.
FRAMES_PER_2M = 512
#: largest guest RAM ``create_vm`` launches. RAM itself costs only the pages
#: touched, but the DMA tables of a guest (allocated when its vGPU first maps a
#: page) hold a few bytes per guest page, up to ~400 MiB at this size.
MAX_GUEST_RAM = 64 << 30
#: mmap flag (Linux): reserve no swap for the mapping, so a large sparse guest is
#: not refused by the kernel's overcommit heuristic (Python 3.11 lacks the name).
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)


@attrs.define(eq=False)
class FrameAllocator:
    """Hands out frame numbers upwards from ``base``, never below it."""

    base: int
    limit: int
    _next: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._next = self.base

    def alloc(self, count: int, align: int = 1) -> int:
        """First frame of ``count`` consecutive fresh frames, aligned to ``align`` frames."""
        if count <= 0:
            raise ValueError(f"frame count must be positive, got {count}")
        first = -(-self._next // align) * align
        if first + count > self.limit:
            raise MemoryError(
                f"simulated frame space [{self.base:#x}, {self.limit:#x}) is exhausted"
            )
        self._next = first + count
        return first


@attrs.define(eq=False)
class GuestRam:
    """A guest's RAM, ``[0, size)``, sparse, backed by host frames ``base_frame + gfn``."""

    size: int
    #: host frame of guest frame 0; guest RAM is host-contiguous, so every
    #: 512-frame aligned range is a genuine 2 MiB host page.
    base_frame: int
    _map: mmap.mmap = attrs.field(init=False)
    _view: memoryview = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.size <= 0 or self.size % PAGE_SIZE:
            raise ValueError(
                f"guest RAM must be a positive multiple of {PAGE_SIZE} bytes, got {self.size}"
            )
        try:
            self._map = mmap.mmap(
                -1, self.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
            )
        except OSError as exc:
            raise MemoryError(
                f"the host refused to reserve {self.size >> 20} MiB of address space for "
                f"guest RAM ({exc.strerror}); choose a smaller guest"
            ) from exc
        self._view = memoryview(self._map)

    @property
    def pages(self) -> int:
        return self.size >> PAGE_SHIFT

    def contains(self, gpa: int, length: int) -> bool:
        return gpa >= 0 and length >= 0 and gpa + length <= self.size

    def check(self, gpa: int, length: int, what: str) -> None:
        if length < 0:
            raise ValueError(f"guest {what} length must be >= 0, got {length}")
        if not (gpa >= 0 and gpa + length <= self.size):
            raise GuestMemoryError(gpa, length, self.size, what)

    def check_gfn(self, gfn: int, count: int = 1) -> None:
        if not (gfn >= 0 and gfn + count <= self.pages):
            what = "guest frame" if count == 1 else f"{count}-frame range starting at guest frame"
            raise InvalidGfnError(
                gfn, f"{what} is outside guest RAM [0, {self.pages:#x}) frames"
            )

    def read(self, gpa: int, length: int) -> bytes:
        self.check(gpa, length, "read")
        return bytes(self._view[gpa : gpa + length])

    def write(self, gpa: int, data: bytes) -> None:
        """Write ``data``; nothing is written when any byte is outside RAM."""
        n = len(data)
        self.check(gpa, n, "write")
        self._view[gpa : gpa + n] = data

    def page(self, gfn: int) -> memoryview:
        """The live 4 KiB buffer of guest frame ``gfn`` (writes through)."""
        off = gfn << PAGE_SHIFT
        return self._view[off : off + PAGE_SIZE]

    def release(self) -> None:
        """Drop the mapping; unmapped for real once no page view is alive anymore."""
        try:
            self._view.release()
            self._map.close()
        except BufferError:
            # a page view handed out (to a sysmem user, a test) is still alive:
            # the mapping is freed by the garbage collector with the last one.
            pass
