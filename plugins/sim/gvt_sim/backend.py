"""The sim backend: every MPT hook, answered by a pure-software hypervisor.

One :class:`SimBackend` object serves one host (the loader builds a fresh one
per host). It simulates the host's physical memory (frame numbers from
:data:`~gvt_sim.memory.HOST_FRAME_BASE`), an optional IOMMU, and the guests
it launches with ``create_vm``.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from typing import Any

import numpy as np

from gvt_core.errors import BackendError, HookUnsupportedError, VgpuStateError, VmCreateError
from gvt_core.hw import regs
from gvt_core.hw.gpu import HOST_APERTURE_PA
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT
from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.info import (
    BackendInfo,
    Capabilities,
    DmaMode,
    HypervisorType,
    PageTrackMode,
)
from gvt_core.mpt.ops import HostContext, Msi
from gvt_sim.dma import SIZE_2M
from gvt_sim.memory import HOST_FRAME_BASE, IOVA_FRAME_BASE, MAX_GUEST_RAM, FrameAllocator
from gvt_sim.vm import SimHandle, SimVm

NAME = "sim"

#: where sim shows a vGPU's OpRegion: the two pages just below 3 GiB, under the
#: window [HOST_APERTURE_PA, 4 GiB) a guest's BAR2 decodes at its power-on value
#: (the host's address), so no aperture slice can cross it; the guest-driver
#: model's BARs go above RAM and 3 GiB. In a guest with more than 3 GiB of RAM
#: these pages are the firmware's (reserved RAM, as a BIOS reserves the IGD
#: OpRegion). ACRN's 0xDFFFD000 (acrngt keeps it: the ACRN device model's PCI
#: window ends below it) lies inside that window.
OPREGION_GPA = HOST_APERTURE_PA - regs.OPREGION_SIZE

try:
    VERSION = importlib.metadata.version("gvt-sim")
except importlib.metadata.PackageNotFoundError:  # imported from a source tree
    VERSION = "unknown (gvt-sim is not installed)"


def _mode(enum: type[Any], value: Any, option: str) -> Any:
    try:
        return enum(value.value if isinstance(value, enum) else value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise BackendError(
            NAME, f"gvt backend 'sim' option {option}={value!r} is invalid; use one of {allowed}"
        ) from None


class SimBackend:
    """A complete software hypervisor for gvt.

    :param page_track: ``"forwarded"`` (default: a store to a tracked page is
        delivered *instead of* landing; the core commits it, as on Xen/ACRN) or
        ``"landed"`` (written to guest RAM first, as on KVM).
    :param dma: ``"iommu"`` (default: DMA addresses come from a simulated
        IOMMU) or ``"identity"`` (DMA address = host physical address).
    """

    def __init__(self, page_track: str = "forwarded", dma: str = "iommu") -> None:
        self.page_track_mode: PageTrackMode = _mode(PageTrackMode, page_track, "page_track")
        self.dma_mode: DmaMode = _mode(DmaMode, dma, "dma")
        self.host: HostContext | None = None
        self.dom0_is_ready = False
        self._frames = FrameAllocator(HOST_FRAME_BASE, IOVA_FRAME_BASE)
        self._iova = FrameAllocator(IOVA_FRAME_BASE, 1 << 52)
        self._virt_frames: dict[int, int] = {}
        self._vms: dict[int, SimVm] = {}
        self._next_vm_id = 1

    def __repr__(self) -> str:
        return (
            f"SimBackend(page_track={self.page_track_mode.value!r}, dma={self.dma_mode.value!r})"
        )

    @property
    def vms(self) -> list[SimVm]:
        return list(self._vms.values())

    def forget_vm(self, vm: SimVm) -> None:
        self._vms.pop(vm.vm_id, None)

    def _vm(self, handle: Any) -> SimVm:
        """The VM of a live handle."""
        if type(handle) is not SimHandle:
            raise BackendError(
                NAME, f"gvt backend 'sim' got handle {handle!r}, not one its attach_vgpu returned"
            )
        if not handle.live:
            raise VgpuStateError(
                f"vGPU {handle.vgpu.id} was detached from sim VM {handle.vm.vm_id}; "
                "its handle cannot be used anymore"
            )
        return handle.vm

    # --- identity ---------------------------------------------------------------------------
    @hookimpl
    def backend_info(self) -> BackendInfo:
        return BackendInfo(
            name=NAME,
            version=VERSION,
            usable=True,
            reason="",
            capabilities=Capabilities(
                hypervisor=HypervisorType.SIM,
                page_track=self.page_track_mode,
                dma=self.dma_mode,
                needs_trap_area=True,
                needs_aperture_map=True,
                max_dma_page=SIZE_2M,
                can_create_vm=True,
            ),
        )

    # --- host life cycle ---------------------------------------------------------------------
    @hookimpl
    def host_init(self, host: HostContext) -> None:
        if self.host is not None and self.host is not host:
            raise BackendError(
                NAME, "this SimBackend already serves another host; load the backend once per host"
            )
        self.host = host

    @hookimpl
    def host_exit(self, host: HostContext) -> None:
        attached = [vm for vm in self._vms.values() if vm.handle is not None]
        if attached:
            raise VgpuStateError(
                f"host_exit with vGPUs still attached to sim VMs "
                f"{', '.join(str(vm.vm_id) for vm in attached)}; destroy the vGPUs first"
            )
        self.host = None

    @hookimpl
    def dom0_ready(self) -> None:
        self.dom0_is_ready = True

    # --- guests and binding ---------------------------------------------------------------------
    @hookimpl
    def create_vm(self, host: HostContext, mem_size: int, name: str) -> SimVm:
        if self.host is not None and host is not self.host:
            raise BackendError(NAME, "create_vm was given a host this SimBackend does not serve")
        if type(mem_size) is not int or mem_size <= 0 or mem_size % 4096:
            raise VmCreateError(
                NAME, name, mem_size, "guest RAM must be a positive multiple of 4096 bytes"
            )
        if mem_size > MAX_GUEST_RAM:
            raise VmCreateError(
                NAME, name, mem_size,
                f"sim guests have at most {MAX_GUEST_RAM >> 30} GiB of RAM (MAX_GUEST_RAM: the "
                "per-page DMA tables of a larger guest would be dense host memory)",
            )
        try:
            vm = SimVm(self, host, self._next_vm_id, mem_size, name, self._frames, self._iova)
        except MemoryError as exc:  # address space or simulated frames ran out
            raise VmCreateError(NAME, name, mem_size, str(exc)) from exc
        self._vms[vm.vm_id] = vm
        self._next_vm_id += 1
        return vm

    @hookimpl
    def attach_vgpu(self, vgpu: Any, vm: Any) -> SimHandle:
        if not isinstance(vm, SimVm) or self._vms.get(vm.vm_id) is not vm:
            raise HookUnsupportedError(
                NAME, "attach_vgpu", f"{vm!r} is not a VM this backend's create_vm launched"
            )
        return vm.attach(vgpu)

    def _released(self, handle: Any) -> bool:
        """A release hook on a handle whose vGPU was already detached (or whose VM
        was closed first): detach released everything, nothing is left to drop
        (as KVMGT's unmap returns quietly on a stale handle)."""
        if type(handle) is not SimHandle:
            raise BackendError(
                NAME, f"gvt backend 'sim' got handle {handle!r}, not one its attach_vgpu returned"
            )
        return not handle.live

    @hookimpl
    def detach_vgpu(self, handle: Any) -> None:
        if self._released(handle):
            return  # already released (its VM was closed first)
        self._vm(handle).detach()

    # --- interrupts ---------------------------------------------------------------------------------
    @hookimpl
    def inject_msi(self, handle: Any, address: int, data: int) -> None:
        if not (0 <= address <= 0xFFFF_FFFF and 0 <= data <= 0xFFFF):
            raise ValueError(f"MSI address {address:#x} / data {data:#x} exceed 32 / 16 bits")
        self._vm(handle).push_msi(Msi(address, data))

    # --- guest memory ---------------------------------------------------------------------------------
    @hookimpl
    def read_gpa(self, handle: Any, gpa: int, length: int) -> bytes:
        return self._vm(handle).ram.read(gpa, length)

    @hookimpl
    def write_gpa(self, handle: Any, gpa: int, data: bytes) -> None:
        self._vm(handle).ram.write(gpa, data)

    @hookimpl
    def gfn_to_mfn(self, handle: Any, gfn: int) -> int:
        ram = self._vm(handle).ram
        ram.check_gfn(gfn)
        return ram.base_frame + gfn

    @hookimpl
    def is_valid_gfn(self, handle: Any, gfn: int) -> bool:
        return 0 <= gfn < self._vm(handle).ram.pages

    @hookimpl
    def from_virt_to_mfn(self, vaddr: int) -> int:
        if vaddr < 0 or vaddr & PAGE_MASK:
            raise ValueError(f"from_virt_to_mfn takes the address of a page start, got {vaddr:#x}")
        page = vaddr >> PAGE_SHIFT
        frame = self._virt_frames.get(page)
        if frame is None:
            frame = self._virt_frames[page] = self._frames.alloc(1)
        return frame

    # --- page tracking --------------------------------------------------------------------------------
    @hookimpl
    def enable_page_track(self, handle: Any, gfn: int) -> None:
        self._vm(handle).enable_track(gfn)

    @hookimpl
    def enable_page_tracks(self, handle: Any, gfns: Sequence[int]) -> None:
        self._vm(handle).enable_tracks(gfns)

    @hookimpl
    def disable_page_track(self, handle: Any, gfn: int) -> None:
        if self._released(handle):
            return
        self._vm(handle).disable_track(gfn)

    # --- DMA -------------------------------------------------------------------------------------------
    @hookimpl
    def dma_map_guest_page(self, handle: Any, gfn: int, size: int) -> int:
        return self._vm(handle).dma.map(gfn, size)

    @hookimpl
    def dma_map_guest_pages(
        self, handle: Any, gfns: Sequence[int], size: int
    ) -> Sequence[int] | np.ndarray:
        return self._vm(handle).dma.map_many(gfns, size)

    @hookimpl
    def dma_unmap_guest_page(self, handle: Any, dma_addr: int) -> None:
        if self._released(handle):
            return
        self._vm(handle).dma.unmap(dma_addr)

    @hookimpl
    def dma_unmap_guest_pages(self, handle: Any, dma_addrs: Sequence[int]) -> None:
        if self._released(handle):
            return
        self._vm(handle).dma.unmap_many(dma_addrs)

    @hookimpl
    def dma_pin_guest_page(self, handle: Any, dma_addr: int) -> None:
        self._vm(handle).dma.pin(dma_addr)

    # --- address-space plumbing ------------------------------------------------------------------------
    @hookimpl
    def map_gfn_to_mfn(self, handle: Any, gfn: int, mfn: int, nr_pages: int, map: bool) -> None:
        if not map and self._released(handle):
            return
        vm = self._vm(handle)
        if map:
            vm.map_frames(gfn, mfn, nr_pages)
        else:
            vm.unmap_frames(gfn, mfn, nr_pages)

    @hookimpl
    def set_trap_area(self, handle: Any, start: int, end: int, map: bool) -> None:
        if not map and self._released(handle):
            return
        self._vm(handle).set_trap_area(start, end, map)

    @hookimpl
    def set_pvmmio(self, handle: Any, start: int, end: int, map: bool) -> None:
        """Sim keeps no separate read-only page mapping for PV-MMIO: the range is
        recorded, loads in it are served by ``emulate_mmio_read`` (so they stay
        coherent with the vGPU's registers) and stores still trap."""
        if not map and self._released(handle):
            return
        self._vm(handle).set_pvmmio(start, end, map)

    @hookimpl
    def set_opregion(self, handle: Any, frames: Sequence[int]) -> int:
        """Map the OpRegion's host frames at :data:`OPREGION_GPA`."""
        vm = self._vm(handle)
        frames = tuple(int(f) for f in frames)
        if not frames:
            raise ValueError("set_opregion needs the OpRegion's host frames, got none")
        gpa = OPREGION_GPA
        vm.map_frames(gpa >> PAGE_SHIFT, frames[0], len(frames), frames)
        handle.opregion_gpa = gpa
        return gpa

    @hookimpl
    def set_edid(self, handle: Any, port: int) -> None:
        """Sim has no user space to hand an EDID region to: it records the port."""
        self._vm(handle)
        if port < 0:
            raise ValueError(f"display port must be >= 0, got {port}")
        handle.edid_ports.add(port)

    @hookimpl
    def pause_domain(self, handle: Any) -> None:
        self._vm(handle).pause()

    @hookimpl
    def unpause_domain(self, handle: Any) -> None:
        self._vm(handle).unpause()
