"""gvt-example: the smallest complete gvt backend, to copy when you write your own.

A pure-Python hypervisor small enough to read in one sitting, yet complete:
it implements every mandatory MPT hook and ``create_vm`` (with the optional
hooks its model needs: ``host_init``, ``host_exit``, ``attach_vgpu``,
``detach_vgpu``, ``is_valid_gfn``, ``map_gfn_to_mfn``, ``set_trap_area``), so
the contract and scenario suites run on it in full::

    pip install -e 'templates/gvt-backend[test]'
    pytest --pyargs gvt_core.testing --gvt-backend example

How it models a hypervisor (replace each part with your hypervisor's calls):

* guest RAM is a ``bytearray``; the "host frame" of guest frame ``gfn`` is
  ``base_frame + gfn`` (frames are numbers handed out upwards from 4 GiB);
* DMA is identity-mapped (no IOMMU): a mapped page is registered in the
  host's system memory at its frame, reference counted per page;
* write tracking: a CPU store to a tracked page lands in RAM, then the core's
  ``page_track_write`` hears about it (KVM's timing, ``WRITE_LANDED``);
* BAR0 is trapped per range (``set_trap_area``), as on Xen and ACRN;
* MSIs wait in a queue where identical ones coalesce, bounded by
  ``MAX_PENDING_MSIS`` (an MSI is an edge, not a log).

Rules every backend follows (the contract suite checks them):
``backend_info().name`` is the entry-point name; hooks raise the typed errors
their hookspec documents; after ``detach_vgpu`` nothing reaches the core for
that vGPU, and release hooks on its handle are quiet no-ops.
"""

from __future__ import annotations

import threading
from typing import Any

from gvt_core.errors import (
    AddressSpaceError,
    BackendError,
    DmaMapError,
    GuestMemoryError,
    InvalidGfnError,
    PageTrackError,
    VgpuStateError,
    VmCreateError,
)
from gvt_core.guest.port import (
    MAX_PENDING_MSIS,
    HeldResources,
    check_cfg_access,
    check_cpu_access,
)
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE
from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.info import (
    BackendInfo,
    Capabilities,
    DmaMode,
    HypervisorType,
    PageTrackMode,
)
from gvt_core.mpt.ops import HostContext, Msi

#: the entry-point name; backend_info() must answer exactly this.
NAME = "example"
VERSION = "0.1.0"
#: largest guest RAM create_vm launches (RAM here is a plain bytearray).
MAX_GUEST_RAM = 1 << 30
#: first host frame handed out (4 GiB: below is the host's own memory and MMIO).
FIRST_FRAME = 0x10_0000


class ExampleHandle:
    """What ``attach_vgpu`` returns: one vGPU bound to one guest."""

    def __init__(self, vm: ExampleVm, vgpu: Any) -> None:
        self.vm = vm
        self.vgpu = vgpu
        self.live = True


class ExampleVm:
    """One guest: RAM, tracked pages, trapped ranges, DMA maps, MSI queue."""

    def __init__(self, host: HostContext, vm_id: int, mem_size: int, name: str,
                 base_frame: int) -> None:
        self.host = host
        self.vm_id = vm_id
        self.mem_size = mem_size
        self.name = name
        self.base_frame = base_frame
        self.ram = bytearray(mem_size)
        self._view = memoryview(self.ram)
        self.handle: ExampleHandle | None = None
        self.tracked: set[int] = set()
        self.traps: list[tuple[int, int]] = []
        #: (first gfn, page count, first host frame): the vGPU's aperture slice in BAR2.
        self.gfn_maps: list[tuple[int, int, int]] = []
        self.dma_refs: dict[int, int] = {}
        self._msis: dict[Msi, None] = {}
        self._msi_ready = threading.Condition()
        self._ended = threading.Event()
        self.closed = False

    # --- GuestVm ---------------------------------------------------------------------
    def held(self) -> HeldResources:
        return HeldResources(page_tracks=len(self.tracked), dma_maps=len(self.dma_refs),
                             trap_areas=len(self.traps), gfn_maps=len(self.gfn_maps))

    def port(self) -> ExamplePort:
        if self.closed or self.handle is None:
            raise VgpuStateError(f"example guest {self.name!r} has no vGPU attached (or was "
                                 "closed); create a vGPU for it first")
        return ExamplePort(self, self.handle)

    def close(self) -> None:
        if self.closed:
            return
        self.detach()
        self.closed = True
        self._ended.set()

    def wait_ended(self, timeout: float) -> bool:
        return self._ended.wait(timeout)

    # --- binding -----------------------------------------------------------------------
    def attach(self, vgpu: Any) -> ExampleHandle:
        if self.closed or self.handle is not None:
            raise VgpuStateError(f"example guest {self.name!r} is closed or has a vGPU already")
        self.handle = ExampleHandle(self, vgpu)
        return self.handle

    def detach(self) -> None:
        """Release everything held for the vGPU (tracks, maps, traps, MSIs)."""
        if self.handle is not None:
            self.handle.live = False
        self.handle = None
        for gfn in self.dma_refs:
            self.host.sysmem.unregister(self.base_frame + gfn)
        self.dma_refs.clear()
        self.tracked.clear()
        self.traps.clear()
        self.gfn_maps.clear()
        with self._msi_ready:
            self._msis.clear()

    # --- memory ------------------------------------------------------------------------
    def check(self, gpa: int, length: int, what: str) -> None:
        if length < 0:
            raise ValueError(f"a guest memory {what} needs a length >= 0, got {length}")
        if gpa < 0 or gpa + length > self.mem_size:
            raise GuestMemoryError(gpa, length, self.mem_size, what)

    def host_frame_of(self, gpa: int) -> int | None:
        """The host frame a gfn map puts at ``gpa`` (the aperture slice), or None."""
        gfn = gpa >> PAGE_SHIFT
        for first, count, mfn in self.gfn_maps:
            if first <= gfn < first + count:
                return mfn + gfn - first
        return None

    def check_gfn(self, gfn: int) -> None:
        if not 0 <= gfn < self.mem_size >> PAGE_SHIFT:
            raise InvalidGfnError(gfn, f"guest {self.name!r} has {self.mem_size >> PAGE_SHIFT} "
                                       "RAM frames")

    def read(self, gpa: int, length: int) -> bytes:
        self.check(gpa, length, "read")
        return bytes(self._view[gpa : gpa + length])

    def write(self, gpa: int, data: bytes) -> None:
        self.check(gpa, len(data), "write")
        self._view[gpa : gpa + len(data)] = data

    # --- interrupts ----------------------------------------------------------------------
    def push_msi(self, msi: Msi) -> None:
        with self._msi_ready:
            if msi not in self._msis and len(self._msis) < MAX_PENDING_MSIS:
                self._msis[msi] = None
                self._msi_ready.notify_all()

    def pop_msi(self, timeout: float) -> Msi | None:
        with self._msi_ready:
            self._msi_ready.wait_for(lambda: bool(self._msis), max(timeout, 0.0))
            if not self._msis:
                return None
            msi = next(iter(self._msis))
            del self._msis[msi]
            return msi


class ExamplePort:
    """The guest CPU of an :class:`ExampleVm` (a :class:`gvt_core.guest.port.GuestPort`)."""

    def __init__(self, vm: ExampleVm, handle: ExampleHandle) -> None:
        self.vm = vm
        self.mem_size = vm.mem_size
        self._handle = handle
        self._ops = vm.host.ops

    def _vgpu(self) -> Any:
        """The vGPU while it is attached; None once detached (accesses then go nowhere)."""
        return self._handle.vgpu if self._handle.live else None

    # --- config space at 00:02.0 -----------------------------------------------------------
    def cfg_read(self, offset: int, size: int) -> int:
        check_cfg_access(offset, size)
        vgpu = self._vgpu()
        return (1 << 8 * size) - 1 if vgpu is None else self._ops.emulate_cfg_read(
            vgpu, offset, size)

    def cfg_write(self, offset: int, value: int, size: int) -> None:
        check_cfg_access(offset, size, value)
        vgpu = self._vgpu()
        if vgpu is not None:
            self._ops.emulate_cfg_write(vgpu, offset, value, size)

    # --- loads and stores --------------------------------------------------------------------
    def _trapped(self, gpa: int) -> Any:
        vgpu = self._vgpu()
        if vgpu is not None and any(lo <= gpa < hi for lo, hi in self.vm.traps):
            return vgpu
        return None

    def _chunks(self, gpa: int, size: int) -> list[tuple[int, int, memoryview | None]]:
        """``(address, length, host page or None)`` per page the access touches: a gfn
        map (the aperture slice) shows a host page, anything else is RAM or nothing."""
        out, pos = [], 0
        while pos < size:
            addr = gpa + pos
            n = min(size - pos, PAGE_SIZE - (addr & PAGE_MASK))
            frame = self.vm.host_frame_of(addr) if self._vgpu() is not None else None
            out.append((addr, n, None if frame is None else self.vm.host.sysmem.page(frame)))
            pos += n
        return out

    def mmio_read(self, gpa: int, size: int) -> int:
        check_cpu_access(gpa, size)
        vgpu = self._trapped(gpa)
        if vgpu is not None:
            return self._ops.emulate_mmio_read(vgpu, gpa, size)
        data = bytearray()
        for addr, n, page in self._chunks(gpa, size):
            if page is not None:
                data += page[addr & PAGE_MASK : (addr & PAGE_MASK) + n]
            elif addr + n <= self.mem_size:
                data += self.vm.read(addr, n)
            else:
                data += b"\xff" * n  # nothing decodes this address
        return int.from_bytes(data, "little")

    def mmio_write(self, gpa: int, value: int, size: int) -> None:
        check_cpu_access(gpa, size, value)
        vgpu = self._trapped(gpa)
        if vgpu is not None:
            self._ops.emulate_mmio_write(vgpu, gpa, value, size)
            return
        data, pos = value.to_bytes(size, "little"), 0
        for addr, n, page in self._chunks(gpa, size):
            if page is not None:
                page[addr & PAGE_MASK : (addr & PAGE_MASK) + n] = data[pos : pos + n]
            elif addr + n <= self.mem_size:
                self._ram_store(addr, data[pos : pos + n])
            pos += n

    def mem_read(self, gpa: int, length: int) -> bytes:
        return self.vm.read(gpa, length)

    def _ram_store(self, gpa: int, data: bytes) -> None:
        """One store inside one page: it lands, then the core hears of a tracked page."""
        self.vm.write(gpa, data)
        vgpu = self._vgpu()
        if vgpu is not None and (gpa >> PAGE_SHIFT) in self.vm.tracked:
            self._ops.page_track_write(vgpu, gpa, data)

    def store(self, gpa: int, value: int, size: int) -> None:
        check_cpu_access(gpa, size, value)
        self.vm.check(gpa, size, "store")
        data = value.to_bytes(size, "little")
        split = PAGE_SIZE - (gpa & PAGE_MASK)
        if split >= size:
            self._ram_store(gpa, data)
        else:  # a store across a page boundary reaches each page on its own
            self._ram_store(gpa, data[:split])
            self._ram_store(gpa + split, data[split:])

    def mem_write(self, gpa: int, data: bytes) -> None:
        """Naturally aligned stores, 8 bytes where possible (each may trap)."""
        self.vm.check(gpa, len(data), "write")
        pos = 0
        while pos < len(data):
            addr, size = gpa + pos, 8
            while addr % size or size > len(data) - pos:
                size >>= 1
            self._ram_store(addr, bytes(data[pos : pos + size]))
            pos += size

    def wait_msi(self, timeout: float) -> Msi | None:
        return self.vm.pop_msi(timeout)


class ExampleBackend:
    """One object per host (the loader builds a fresh one for each ``Gvt``)."""

    def __init__(self) -> None:
        self.host: HostContext | None = None
        self._vms: dict[int, ExampleVm] = {}
        self._next_frame = FIRST_FRAME
        self._virt_frames: dict[int, int] = {}

    def _frames(self, count: int) -> int:
        first = self._next_frame
        self._next_frame += count
        return first

    @staticmethod
    def _vm(handle: Any) -> ExampleVm:
        if not isinstance(handle, ExampleHandle):
            raise BackendError(NAME, f"gvt backend 'example' got handle {handle!r}")
        if not handle.live:
            raise VgpuStateError(f"vGPU {handle.vgpu.id} was detached from guest "
                                 f"{handle.vm.name!r}")
        return handle.vm

    # --- identity and host ----------------------------------------------------------------
    @hookimpl
    def backend_info(self) -> BackendInfo:
        return BackendInfo(
            name=NAME, version=VERSION, usable=True, reason="",
            capabilities=Capabilities(
                hypervisor=HypervisorType.SIM, page_track=PageTrackMode.WRITE_LANDED,
                dma=DmaMode.IDENTITY, needs_trap_area=True, needs_aperture_map=True,
                can_create_vm=True,
            ),
        )

    @hookimpl
    def host_init(self, host: HostContext) -> None:
        self.host = host

    @hookimpl
    def host_exit(self, host: HostContext) -> None:
        self.host = None

    # --- guests -------------------------------------------------------------------------------
    @hookimpl
    def create_vm(self, host: HostContext, mem_size: int, name: str) -> ExampleVm:
        if type(mem_size) is not int or mem_size <= 0 or mem_size % PAGE_SIZE:
            raise VmCreateError(NAME, name, mem_size, "RAM must be a positive multiple of 4096")
        if mem_size > MAX_GUEST_RAM:
            raise VmCreateError(NAME, name, mem_size,
                                f"example guests have at most {MAX_GUEST_RAM >> 20} MiB of RAM")
        vm = ExampleVm(host, len(self._vms) + 1, mem_size, name,
                       self._frames(mem_size >> PAGE_SHIFT))
        self._vms[vm.vm_id] = vm
        return vm

    @hookimpl
    def attach_vgpu(self, vgpu: Any, vm: Any) -> ExampleHandle:
        if not isinstance(vm, ExampleVm) or self._vms.get(vm.vm_id) is not vm:
            raise BackendError(NAME, f"{vm!r} is not a guest this backend launched")
        return vm.attach(vgpu)

    @hookimpl
    def detach_vgpu(self, handle: Any) -> None:
        if isinstance(handle, ExampleHandle) and handle.live:
            handle.vm.detach()

    # --- interrupts and memory ------------------------------------------------------------------
    @hookimpl
    def inject_msi(self, handle: Any, address: int, data: int) -> None:
        self._vm(handle).push_msi(Msi(address, data))

    @hookimpl
    def read_gpa(self, handle: Any, gpa: int, length: int) -> bytes:
        return self._vm(handle).read(gpa, length)

    @hookimpl
    def write_gpa(self, handle: Any, gpa: int, data: bytes) -> None:
        self._vm(handle).write(gpa, data)

    @hookimpl
    def gfn_to_mfn(self, handle: Any, gfn: int) -> int:
        vm = self._vm(handle)
        vm.check_gfn(gfn)
        return vm.base_frame + gfn

    @hookimpl
    def is_valid_gfn(self, handle: Any, gfn: int) -> bool:
        return 0 <= gfn < self._vm(handle).mem_size >> PAGE_SHIFT

    @hookimpl
    def from_virt_to_mfn(self, vaddr: int) -> int:
        if vaddr < 0 or vaddr & PAGE_MASK:
            raise ValueError(f"from_virt_to_mfn takes a page-aligned address, got {vaddr:#x}")
        page = vaddr >> PAGE_SHIFT
        if page not in self._virt_frames:
            self._virt_frames[page] = self._frames(1)
        return self._virt_frames[page]

    # --- write tracking ------------------------------------------------------------------------------
    @hookimpl
    def enable_page_track(self, handle: Any, gfn: int) -> None:
        vm = self._vm(handle)
        vm.check_gfn(gfn)
        if gfn in vm.tracked:
            raise PageTrackError(f"guest frame {gfn:#x} is already write-tracked")
        vm.tracked.add(gfn)

    @hookimpl
    def disable_page_track(self, handle: Any, gfn: int) -> None:
        if isinstance(handle, ExampleHandle) and not handle.live:
            return  # released by detach already: quietly nothing to do
        vm = self._vm(handle)
        if gfn not in vm.tracked:
            raise PageTrackError(f"guest frame {gfn:#x} is not write-tracked")
        vm.tracked.remove(gfn)

    # --- DMA (identity: bus address = host frame << 12) ----------------------------------------------
    @hookimpl
    def dma_map_guest_page(self, handle: Any, gfn: int, size: int) -> int:
        vm = self._vm(handle)
        if size != PAGE_SIZE:
            raise DmaMapError(f"the example backend maps 4096-byte pages, not {size}")
        vm.check_gfn(gfn)
        frame = vm.base_frame + gfn
        if gfn not in vm.dma_refs:
            page = memoryview(vm.ram)[gfn << PAGE_SHIFT : (gfn + 1) << PAGE_SHIFT]
            vm.host.sysmem.register(frame, page, f"example:{vm.name}")
            vm.dma_refs[gfn] = 0
        vm.dma_refs[gfn] += 1
        return frame << PAGE_SHIFT

    @hookimpl
    def dma_unmap_guest_page(self, handle: Any, dma_addr: int) -> None:
        if isinstance(handle, ExampleHandle) and not handle.live:
            return  # released by detach already
        vm = self._vm(handle)
        gfn = (dma_addr >> PAGE_SHIFT) - vm.base_frame
        if dma_addr & PAGE_MASK or gfn not in vm.dma_refs:
            raise DmaMapError(f"no DMA mapping starts at {dma_addr:#x} for guest {vm.name!r}")
        vm.dma_refs[gfn] -= 1
        if not vm.dma_refs[gfn]:
            del vm.dma_refs[gfn]
            vm.host.sysmem.unregister(vm.base_frame + gfn)

    # --- BAR0 traps --------------------------------------------------------------------------------
    @hookimpl
    def set_trap_area(self, handle: Any, start: int, end: int, map: bool) -> None:
        if not map and isinstance(handle, ExampleHandle) and not handle.live:
            return
        vm = self._vm(handle)
        if not 0 <= start < end:
            raise ValueError(f"trap area [{start:#x}, {end:#x}) is empty or negative")
        if map:
            if any(start < hi and lo < end for lo, hi in vm.traps):
                raise AddressSpaceError(f"trap area [{start:#x}, {end:#x}) overlaps another")
            vm.traps.append((start, end))
        elif (start, end) in vm.traps:
            vm.traps.remove((start, end))
        else:
            raise AddressSpaceError(f"no trap area [{start:#x}, {end:#x}) to unmap")

    # --- the aperture slice in BAR2 ----------------------------------------------------------------
    @hookimpl
    def map_gfn_to_mfn(self, handle: Any, gfn: int, mfn: int, nr_pages: int, map: bool) -> None:
        """Show host frames (the vGPU's aperture slice) at guest frames: the port serves
        loads and stores there from the host's pages (``host.sysmem``)."""
        if not map and isinstance(handle, ExampleHandle) and not handle.live:
            return
        vm = self._vm(handle)
        if gfn < 0 or mfn < 0 or nr_pages <= 0:
            raise ValueError(f"bad gfn map: gfn {gfn:#x}, mfn {mfn:#x}, {nr_pages} pages")
        entry = (gfn, nr_pages, mfn)
        if map:
            if any(gfn < g + n and g < gfn + nr_pages for g, n, _ in vm.gfn_maps):
                raise AddressSpaceError(f"guest frames at {gfn:#x} are mapped already")
            vm.gfn_maps.append(entry)
        elif entry in vm.gfn_maps:
            vm.gfn_maps.remove(entry)
        else:
            raise AddressSpaceError(f"no mapping of {nr_pages} frames at guest frame {gfn:#x}")


__all__ = ["ExampleBackend", "ExampleHandle", "ExamplePort", "ExampleVm"]
