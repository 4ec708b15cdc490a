"""The Service VM's physical memory, as the emulated hypervisor and HSM see it.

On a real ACRN system this process runs in the Service VM; the HSM pins the
pages user space hands it (``pin_user_pages_fast``) and gives the hypervisor
their physical addresses, and the hypervisor maps those addresses into User
VMs. The emulated ACRN runs in this same process, so it models that
physical memory over the process's real pages:

* A page's identity is what backs it, read from ``/proc/self/maps``: a
  shared file page (a memfd, a shared anonymous mapping) is (device, inode,
  offset), so two mappings of one memfd have the same frames, as they do on
  a real kernel; a private anonymous page is its address.
* Frames are handed out in blocks, one per mapping first seen, from
  :data:`ASSIGNED_BASE` (high RAM) upwards, and never change.
* The emulator reaches a frame's bytes through its own mapping of the
  backing file (``/proc/self/map_files``, which needs CAP_SYS_ADMIN), so a
  page it mapped into a guest stays valid however user space maps it later,
  like a pinned page. Without that access it uses the user's mapping.
* The Service VM's physical map: RAM below :data:`HV_RESERVED` and from
  4 GiB to :data:`RAM_TOP`, the hypervisor's own memory (never mappable),
  and the host GPU's BARs (resolved through the host's system-memory
  registry). RAM frames no page of this process backs are other Service VM
  memory: zero pages, created when first touched, at most
  :data:`MAX_FOREIGN_PAGES`.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import errno
import mmap
import os
import threading
from collections.abc import Callable

import attrs
import numpy as np

from gvt_core.errors import DmaFault
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE, SystemMemory

#: Service VM RAM below the hypervisor's reserved range (frames).
LOW_RAM = (0x100, 0xB_0000)
#: the hypervisor's image and data: never present in the Service VM's EPT.
HV_RESERVED = (0xB_0000, 0xC_0000)
#: the host GPU's aperture (BAR2) and GTTMMADR (BAR0), as gvt_core.hw.gpu places them.
GPU_WINDOWS = ((0xC_0000, 0x10_0000),)
#: high RAM: [4 GiB, 64 GiB).
HIGH_RAM = (0x10_0000, 0x100_0000)
#: first frame handed to a page of this process.
ASSIGNED_BASE = HIGH_RAM[0]
#: Service VM RAM frames outside this process that a guest may touch (zero pages).
MAX_FOREIGN_PAGES = 4096


@attrs.frozen
class Vma:
    """One line of ``/proc/self/maps``."""

    start: int
    end: int
    writable: bool
    shared: bool
    offset: int
    dev: tuple[int, int]
    ino: int

    @property
    def file_backed(self) -> bool:
        return self.ino != 0 and self.shared


def read_maps() -> list[Vma]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            lo, hi = parts[0].split("-")
            major, minor = parts[3].split(":")
            out.append(
                Vma(
                    start=int(lo, 16), end=int(hi, 16), writable=parts[1][1] == "w",
                    shared=parts[1][3] == "s", offset=int(parts[2], 16),
                    dev=(int(major, 16), int(minor, 16)), ino=int(parts[4]),
                )
            )
    return out


@attrs.define(eq=False)
class Block:
    """Consecutive frames backing consecutive pages of one mapping."""

    first_frame: int
    pages: int
    #: where the emulator reads and writes the block's bytes.
    address: int
    #: the emulator's own mapping of the backing file (keeps ``address`` valid), or None.
    keep: mmap.mmap | None = None


class ServiceVmMemory:
    """Frames of this process's pages and physical accesses to them."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._vmas: list[Vma] = []
        self._vma_starts: list[int] = []
        #: (dev, ino) -> sorted [(first file page, pages, first frame)]
        self._file_keys: dict[tuple[tuple[int, int], int], list[tuple[int, int, int]]] = {}
        #: sorted [(first virtual page, pages, first frame)] of private anonymous memory
        self._anon_keys: list[tuple[int, int, int]] = []
        self._blocks: list[Block] = []
        self._block_starts: list[int] = []
        self._next_frame = ASSIGNED_BASE
        self._foreign: dict[int, bytearray] = {}
        self._own_mappings = True
        self.devices: SystemMemory | None = None
        #: when set, GPU window accesses resolve through this registry
        self.device_resolver: Callable[[int], memoryview] | None = None

    # --- /proc/self/maps ------------------------------------------------------------------
    def refresh(self) -> None:
        with self._lock:
            self._vmas = read_maps()
            self._vma_starts = [v.start for v in self._vmas]

    def _vma(self, vaddr: int) -> Vma | None:
        i = bisect.bisect_right(self._vma_starts, vaddr) - 1
        if i >= 0 and vaddr < self._vmas[i].end:
            return self._vmas[i]
        return None

    def _current_vma(self, vaddr: int) -> Vma | None:
        """The mapping holding ``vaddr`` now (re-reading maps when the cached one moved)."""
        vma = self._vma(vaddr)
        if vma is not None and vma.file_backed and not self._still_there(vma):
            vma = None
        if vma is None:
            self.refresh()
            vma = self._vma(vaddr)
        return vma

    def _still_there(self, vma: Vma) -> bool:
        try:
            st = os.stat(f"/proc/self/map_files/{vma.start:x}-{vma.end:x}")
        except FileNotFoundError:
            return False
        except OSError:
            return True  # no access to map_files: trust the cache
        return st.st_ino == vma.ino

    # --- frames --------------------------------------------------------------------------------
    def _alloc(self, pages: int) -> int:
        first = self._next_frame
        if first + pages > HIGH_RAM[1]:
            raise OSError(errno.ENOMEM, "the emulated Service VM has no physical memory left")
        self._next_frame = first + pages
        return first

    @property
    def unassigned_bytes(self) -> int:
        """High RAM no page of this process was given yet (what is left to pin)."""
        with self._lock:
            return (HIGH_RAM[1] - self._next_frame) << PAGE_SHIFT

    def _add_block(self, block: Block) -> None:
        i = bisect.bisect_right(self._block_starts, block.first_frame)
        self._blocks.insert(i, block)
        self._block_starts.insert(i, block.first_frame)

    def _own_mapping(self, vma: Vma, file_page: int, pages: int) -> mmap.mmap | None:
        if not self._own_mappings:
            return None
        try:
            fd = os.open(f"/proc/self/map_files/{vma.start:x}-{vma.end:x}",
                         os.O_RDWR if vma.writable else os.O_RDONLY)
        except OSError:
            self._own_mappings = False  # no CAP_SYS_ADMIN: use the user's mappings
            return None
        try:
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if vma.writable else 0)
            return mmap.mmap(fd, pages * PAGE_SIZE, mmap.MAP_SHARED, prot,
                             offset=file_page * PAGE_SIZE)
        finally:
            os.close(fd)

    def _frames_in(self, vma: Vma, vaddr: int, pages: int) -> np.ndarray:
        """Frames of ``pages`` pages from ``vaddr``, all inside ``vma``, assigning blocks
        for the parts of the mapping seen for the first time."""
        out = np.empty(pages, dtype=np.int64)
        if vma.file_backed:
            key: tuple = (vma.dev, vma.ino)
            runs = self._file_keys.setdefault(key, [])  # type: ignore[arg-type]
            first_page = (vma.offset >> PAGE_SHIFT) + ((vaddr - vma.start) >> PAGE_SHIFT)
            whole = (vma.offset >> PAGE_SHIFT, (vma.end - vma.start) >> PAGE_SHIFT)
            base_va = vma.start - vma.offset
        else:
            runs = self._anon_keys
            first_page = vaddr >> PAGE_SHIFT
            whole = (vma.start >> PAGE_SHIFT, (vma.end - vma.start) >> PAGE_SHIFT)
            base_va = 0
        done = 0
        while done < pages:
            page = first_page + done
            i = bisect.bisect_right(runs, (page, 1 << 62, 0)) - 1
            if i >= 0 and page < runs[i][0] + runs[i][1]:
                start, n, frame = runs[i]
                take = min(pages - done, start + n - page)
                out[done : done + take] = np.arange(frame + page - start,
                                                    frame + page - start + take)
                done += take
                continue
            # a fresh run: up to the next known run, within the whole mapping
            nxt = runs[i + 1][0] if i + 1 < len(runs) else whole[0] + whole[1]
            lo = max(whole[0], runs[i][0] + runs[i][1] if i >= 0 else whole[0])
            hi = min(whole[0] + whole[1], nxt)
            frame = self._alloc(hi - lo)
            keep = self._own_mapping(vma, lo, hi - lo) if vma.file_backed and vma.writable else None
            address = (
                ctypes.addressof(ctypes.c_char.from_buffer(keep)) if keep is not None
                else base_va + (lo << PAGE_SHIFT)
            )
            self._add_block(Block(frame, hi - lo, address, keep))
            runs.insert(i + 1, (lo, hi - lo, frame))
        return out

    def frames_of(self, vaddr: int, pages: int) -> np.ndarray:
        """Frames of ``pages`` pages of this process from page-aligned ``vaddr``;
        OSError(EFAULT) where any of them is not mapped."""
        if vaddr % PAGE_SIZE or pages < 0:
            raise ValueError(f"frames of {pages} pages from {vaddr:#x}: not page aligned")
        with self._lock:
            out = np.empty(pages, dtype=np.int64)
            done = 0
            while done < pages:
                va = vaddr + done * PAGE_SIZE
                vma = self._current_vma(va)
                if vma is None:
                    raise OSError(errno.EFAULT, f"no mapping at {va:#x}")
                n = min(pages - done, (vma.end - va) >> PAGE_SHIFT)
                out[done : done + n] = self._frames_in(vma, va, n)
                done += n
            return out

    def pin(self, vaddr: int, pages: int, write: bool) -> np.ndarray:
        """``pin_user_pages_fast``: frames of the pages, EFAULT where one is not mapped
        (or, for ``write``, not writable)."""
        with self._lock:
            self.refresh()
            start = vaddr & ~(PAGE_SIZE - 1)
            end = start + pages * PAGE_SIZE
            va = start
            while va < end:
                vma = self._vma(va)
                if vma is None or (write and not vma.writable):
                    raise OSError(errno.EFAULT, f"cannot pin the page at {va:#x}")
                va = vma.end
            return self.frames_of(start, pages)

    # --- the Service VM's physical map ----------------------------------------------------------------
    def _block(self, frame: int) -> Block | None:
        i = bisect.bisect_right(self._block_starts, frame) - 1
        if i >= 0 and frame < self._blocks[i].first_frame + self._blocks[i].pages:
            return self._blocks[i]
        return None

    @staticmethod
    def _in(frame: int, ranges: tuple[tuple[int, int], ...]) -> bool:
        return any(lo <= frame < hi for lo, hi in ranges)

    def is_mapped(self, pa: int, size: int) -> bool:
        """``ept_is_valid_mr`` on the Service VM: every page of ``[pa, pa + size)`` is
        present in the Service VM's EPT (RAM or the GPU's BARs, never the hypervisor's)."""
        first, last = pa >> PAGE_SHIFT, (pa + size - 1) >> PAGE_SHIFT
        if size <= 0:
            return True
        return any(lo <= first and last < hi for lo, hi in (LOW_RAM, HIGH_RAM, *GPU_WINDOWS))

    def address_of(self, frame: int) -> int | None:
        """Where the emulator reaches a frame backed by a page of this process, or None."""
        with self._lock:
            block = self._block(frame)
            if block is None:
                return None
            return block.address + ((frame - block.first_frame) << PAGE_SHIFT)

    def page(self, frame: int) -> memoryview | None:
        """The 4 KiB behind a Service VM frame, or None (a BAR page nothing backs)."""
        with self._lock:
            block = self._block(frame)
            if block is not None:
                address = block.address + ((frame - block.first_frame) << PAGE_SHIFT)
                return memoryview((ctypes.c_char * PAGE_SIZE).from_address(address)).cast("B")
            if self._in(frame, GPU_WINDOWS):
                if self.devices is None:
                    return None
                try:
                    return self.devices.page(frame)
                except DmaFault:
                    return None
            if self._in(frame, (LOW_RAM, HIGH_RAM)):
                page = self._foreign.get(frame)
                if page is None:
                    if len(self._foreign) >= MAX_FOREIGN_PAGES:
                        return None
                    page = self._foreign[frame] = bytearray(PAGE_SIZE)
                return memoryview(page)
            return None

    def close(self) -> None:
        with self._lock:
            for block in self._blocks:
                if block.keep is not None:
                    with contextlib.suppress(BufferError):
                        block.keep.close()
            self._blocks.clear()
            self._block_starts.clear()
            self._file_keys.clear()
            self._anon_keys.clear()
            self._foreign.clear()
