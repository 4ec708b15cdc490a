"""The kvmgt MPT backend: the hooks of :mod:`gvt_core.mpt.hookspecs` over real KVM.

Per hook:

* implemented for real: ``backend_info``, ``host_init``, ``host_exit``,
  ``create_vm``, ``attach_vgpu``, ``detach_vgpu``, ``inject_msi``
  (``KVM_SIGNAL_MSI``), ``read_gpa``/``write_gpa``, ``gfn_to_mfn`` and
  ``from_virt_to_mfn`` (pagemap), ``is_valid_gfn``, ``enable_page_track(s)``/
  ``disable_page_track`` (read-only memslots; the bulk form applies one
  memslot update for the whole batch), ``dma_map_guest_page(s)``/
  ``dma_unmap_guest_page(s)``/``dma_pin_guest_page`` (pinned identity maps);
* ``map_gfn_to_mfn`` in QEMU's role (``needs_aperture_map``): with KVMGT,
  QEMU mmaps the VFIO BAR2 region's sparse area, exactly the vGPU's aperture
  slice, into the guest's BAR2 and moves it when the guest moves the BAR;
  here the core says where the slice goes and this VMM serves the guest's
  accesses there from the host frames (they fault into the VMM like MMIO;
  the rest of BAR2 stays unassigned: reads all ones, writes dropped);
* left to the core default because the default is KVMGT's behaviour:
  ``set_trap_area`` (the VFIO region traps BAR0; ``needs_trap_area`` is
  False), ``set_edid`` and ``dom0_ready`` (nothing
  to do without a VFIO EDID region or ACRN), ``set_opregion`` (None: the
  guest programs ASLS itself, as with KVMGT's OpRegion region);
* left to the core default that raises HookUnsupportedError: ``set_pvmmio``
  (an ACRN paravirtual feature) and ``pause_domain``/``unpause_domain``
  (vCPUs here run on demand in their callers' threads; there is no free-running
  guest to stop).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs

from gvt_core.errors import (
    BackendError,
    HookUnsupportedError,
    InvalidGfnError,
    PageTrackError,
    VgpuStateError,
)
from gvt_core.guest.port import GuestVm
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE
from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.info import (
    BackendInfo,
    Capabilities,
    DmaMode,
    HypervisorType,
    PageTrackMode,
)
from gvt_core.mpt.ops import HostContext
from gvt_kvmgt import abi, hostmem
from gvt_kvmgt.dma import SIZE_2M
from gvt_kvmgt.kvm import KVM_DEVICE, KvmSystem
from gvt_kvmgt.vm import Attachment, KvmGuestVm

NAME = "kvmgt"
VERSION = "0.1.0"
#: what this VMM needs of KVM, by capability.
REQUIRED_CAPS = {
    abi.KVM_CAP_IRQCHIP: "KVM_CAP_IRQCHIP (in-kernel LAPIC/IOAPIC)",
    abi.KVM_CAP_USER_MEMORY: "KVM_CAP_USER_MEMORY (memslots)",
    abi.KVM_CAP_READONLY_MEM: "KVM_CAP_READONLY_MEM (write tracking)",
    abi.KVM_CAP_SIGNAL_MSI: "KVM_CAP_SIGNAL_MSI (MSI injection)",
}


def probe(device: str = KVM_DEVICE) -> str:
    """Empty if KVM is usable for this backend here, else the reason."""
    try:
        system = KvmSystem(device)
    except OSError as exc:
        return f"{device} cannot be opened: {exc.strerror or exc}"
    try:
        version = system.api_version()
        if version != abi.KVM_API_VERSION:
            return f"{device} speaks KVM API version {version}, kvmgt needs {abi.KVM_API_VERSION}"
        missing = [text for cap, text in REQUIRED_CAPS.items() if system.check_extension(cap) <= 0]
        if missing:
            return f"{device} lacks {', '.join(missing)}"
    except BackendError as exc:
        return str(exc)
    finally:
        system.close()
    return ""


#: with a limited RLIMIT_MEMLOCK, the default pin quota of a VM is this share of it:
#: the seven guests a host holds (GVT_MAX_VGPU minus the idle vGPU) plus one share
#: for the host's own pinned pages (shadow tables, scratch, OpRegion).
PIN_SHARES = 8


def _int_option(option: str, value: int | str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BackendError(
            NAME, f"gvt backend 'kvmgt' option {option}={value!r} is not an integer"
        ) from None


def _pin_quota(value: int | str) -> int | None:
    """Bytes one VM may pin, or None for no quota beyond its RAM."""
    if value == "auto":
        limit = hostmem.memlock_limit()
        return None if limit is None else (limit // PIN_SHARES) & ~(PAGE_SIZE - 1)
    quota = _int_option("pin_quota", value)
    if quota < 0 or quota % PAGE_SIZE:
        raise BackendError(
            NAME, f"gvt backend 'kvmgt' option pin_quota={value!r} must be 'auto' or a "
            "whole number of 4096-byte pages (bytes)"
        )
    return quota


@attrs.define(eq=False)
class KvmgtHandle:
    """What ``attach_vgpu`` returns: the VM and the attachment it holds for the vGPU."""

    vm: KvmGuestVm
    attachment: Attachment

    @property
    def vgpu(self) -> Any:
        return self.attachment.vgpu


class KvmgtBackend:
    """A KVM backend for one host. Options (``load_backend("kvmgt", ...)``):

    * ``max_dma_page``: 4096 (default) or 2097152; with 2 MiB, guest RAM is
      2 MiB aligned and advised for transparent huge pages, and a 2 MiB map
      succeeds where the host really backs it with one contiguous huge page
      (else :class:`~gvt_core.errors.DmaMapError`).
    * ``vcpus``: vCPUs of the guests ``create_vm`` launches (1..4, default 1).
    * ``device``: the KVM device node (default ``/dev/kvm``).
    * ``pin_quota``: bytes of guest RAM one VM may hold pinned for DMA (a whole
      number of pages). Default ``auto``: unlimited (up to the guest's RAM) when
      this process may pin without limit (CAP_IPC_LOCK or an unlimited
      RLIMIT_MEMLOCK), else 1/:data:`PIN_SHARES` of RLIMIT_MEMLOCK, so that one
      guest cannot use up the limit every guest pins from.
    """

    def __init__(self, max_dma_page: int | str = PAGE_SIZE, vcpus: int | str = 1,
                 device: str = KVM_DEVICE, pin_quota: int | str = "auto") -> None:
        self.max_dma_page = _int_option("max_dma_page", max_dma_page)
        if self.max_dma_page not in (PAGE_SIZE, SIZE_2M):
            raise BackendError(
                NAME, f"gvt backend 'kvmgt' option max_dma_page={max_dma_page!r} is invalid; "
                "use 4096 or 2097152"
            )
        self.vcpus = _int_option("vcpus", vcpus)
        self.device = device
        self.pin_quota = _pin_quota(pin_quota)
        self._lock = threading.Lock()
        self._info: BackendInfo | None = None
        self._system: KvmSystem | None = None
        self.host: HostContext | None = None

    # --- identity ----------------------------------------------------------------------------
    @hookimpl
    def backend_info(self) -> BackendInfo:
        with self._lock:
            if self._info is None:
                reason = probe(self.device)
                if not reason and not hostmem.pagemap().usable:
                    reason = hostmem.pagemap().reason
                self._info = BackendInfo(
                    name=NAME,
                    version=VERSION,
                    usable=not reason,
                    reason=reason,
                    capabilities=Capabilities(
                        hypervisor=HypervisorType.KVM,
                        page_track=PageTrackMode.WRITE_LANDED,
                        dma=DmaMode.IDENTITY,
                        needs_trap_area=False,
                        needs_aperture_map=True,
                        max_dma_page=self.max_dma_page,
                        can_create_vm=True,
                        realtime_guests=True,
                        pin_quota=self.pin_quota or 0,
                    ),
                )
            return self._info

    def system(self) -> KvmSystem:
        with self._lock:
            if self._system is None:
                self._system = KvmSystem(self.device)
            return self._system

    # --- host life cycle ------------------------------------------------------------------------
    @hookimpl
    def host_init(self, host: HostContext) -> None:
        self.host = host

    @hookimpl
    def host_exit(self, host: HostContext) -> None:
        with self._lock:
            self.host = None
            if self._system is not None:
                self._system.close()
                self._system = None

    # --- guests ----------------------------------------------------------------------------------
    @hookimpl
    def create_vm(self, host: HostContext, mem_size: int, name: str) -> GuestVm:
        return self.create_vm_with(host, mem_size, name, self.vcpus)

    def create_vm_with(self, host: HostContext, mem_size: int, name: str, vcpus: int) -> KvmGuestVm:
        """``create_vm`` with a vCPU count of the caller's choosing."""
        return KvmGuestVm(
            self.system(), host, mem_size, name, vcpus=vcpus, max_dma_page=self.max_dma_page,
            pin_quota=self.pin_quota,
        )

    @hookimpl
    def attach_vgpu(self, vgpu: Any, vm: Any) -> KvmgtHandle:
        if not isinstance(vm, KvmGuestVm):
            raise BackendError(
                NAME,
                f"gvt backend 'kvmgt' attaches vGPUs only to guests it launched with create_vm, "
                f"not to {type(vm).__name__}",
            )
        return KvmgtHandle(vm, vm.attach(vgpu))

    @staticmethod
    def _live(handle: Any) -> KvmgtHandle:
        if not isinstance(handle, KvmgtHandle):
            raise BackendError(NAME, f"not a kvmgt handle: {type(handle).__name__}")
        if handle.vm.attachment is not handle.attachment:
            raise VgpuStateError(
                f"vGPU {handle.attachment.vgpu.id} was detached from kvmgt guest {handle.vm.name!r}"
            )
        return handle

    @hookimpl
    def detach_vgpu(self, handle: Any) -> None:
        """Idempotent: a VM closed first already released everything of its vGPU."""
        if not self._released(handle):
            handle.vm.detach()

    # --- interrupts and memory -----------------------------------------------------------------------
    @hookimpl
    def inject_msi(self, handle: Any, address: int, data: int) -> None:
        self._live(handle).vm.inject_msi(address, data)

    @hookimpl
    def read_gpa(self, handle: Any, gpa: int, length: int) -> bytes:
        return self._live(handle).vm.read(gpa, length)

    @hookimpl
    def write_gpa(self, handle: Any, gpa: int, data: bytes) -> None:
        self._live(handle).vm.write(gpa, data)

    @staticmethod
    def _check_gfn(vm: KvmGuestVm, gfn: int) -> None:
        if not 0 <= gfn < vm.mem_size >> PAGE_SHIFT:
            raise InvalidGfnError(gfn, f"guest {vm.name!r} has RAM frames 0..{(vm.mem_size >> PAGE_SHIFT) - 1:#x}")

    @hookimpl
    def is_valid_gfn(self, handle: Any, gfn: int) -> bool:
        return 0 <= gfn < self._live(handle).vm.mem_size >> PAGE_SHIFT

    @hookimpl
    def gfn_to_mfn(self, handle: Any, gfn: int) -> int:
        vm = self._live(handle).vm
        self._check_gfn(vm, gfn)
        addr = vm.ram_base + (gfn << PAGE_SHIFT)
        try:
            return hostmem.pagemap().frame_of(addr)
        except hostmem.FramesUnavailableError as exc:
            raise HookUnsupportedError(NAME, "gfn_to_mfn", str(exc)) from exc

    @hookimpl
    def from_virt_to_mfn(self, vaddr: int) -> int:
        try:
            return hostmem.pagemap().frame_of(vaddr)
        except hostmem.FramesUnavailableError as exc:
            raise HookUnsupportedError(NAME, "from_virt_to_mfn", str(exc)) from exc

    # --- page tracking ------------------------------------------------------------------------------
    @hookimpl
    def enable_page_track(self, handle: Any, gfn: int) -> None:
        vm = self._live(handle).vm
        self._check_gfn(vm, gfn)
        vm.memslots.track(gfn)

    @hookimpl
    def enable_page_tracks(self, handle: Any, gfns: Sequence[int]) -> None:
        vm = self._live(handle).vm
        frames = [int(g) for g in gfns]
        for gfn in frames:
            self._check_gfn(vm, gfn)
        slots = vm.memslots
        with slots.lock:
            seen: set[int] = set()
            for gfn in frames:
                if gfn in seen or slots.is_tracked(gfn):
                    raise PageTrackError(
                        f"guest frame {gfn:#x} is already write-tracked (or listed twice); "
                        "no page was tracked"
                    )
                seen.add(gfn)
            done: list[int] = []
            try:
                with slots.batch():
                    for gfn in frames:
                        slots.track(gfn)
                        done.append(gfn)
            except BaseException:
                with slots.batch():
                    for gfn in done:
                        if slots.is_tracked(gfn):
                            slots.untrack(gfn)
                raise

    @staticmethod
    def _released(handle: Any) -> bool:
        """A release hook on a handle whose vGPU was already detached (or whose VM was
        closed first): detach released everything, so there is nothing left to drop --
        KVMGT's unmap likewise returns quietly on an invalid handle."""
        if not isinstance(handle, KvmgtHandle):
            raise BackendError(NAME, f"not a kvmgt handle: {type(handle).__name__}")
        return handle.vm.attachment is not handle.attachment

    @hookimpl
    def disable_page_track(self, handle: Any, gfn: int) -> None:
        if self._released(handle):
            return
        handle.vm.memslots.untrack(gfn)

    @contextmanager
    def page_track_batch(self, handle: Any) -> Iterator[None]:
        """Enable/disable many tracks with one memslot update when the block ends."""
        with self._live(handle).vm.memslots.batch():
            yield

    # --- DMA ----------------------------------------------------------------------------------------
    @hookimpl
    def dma_map_guest_page(self, handle: Any, gfn: int, size: int) -> int:
        return self._live(handle).attachment.dma.map(gfn, size)

    @hookimpl
    def dma_map_guest_pages(self, handle: Any, gfns: Sequence[int], size: int) -> list[int]:
        return self._live(handle).attachment.dma.map_many(gfns, size)

    @hookimpl
    def dma_unmap_guest_page(self, handle: Any, dma_addr: int) -> None:
        if self._released(handle):
            return
        handle.attachment.dma.unmap(dma_addr)

    @hookimpl
    def dma_unmap_guest_pages(self, handle: Any, dma_addrs: Sequence[int]) -> None:
        if self._released(handle):
            return
        handle.attachment.dma.unmap_many(dma_addrs)

    @hookimpl
    def dma_pin_guest_page(self, handle: Any, dma_addr: int) -> None:
        self._live(handle).attachment.dma.pin(dma_addr)

    # --- the aperture slice (QEMU's mmap of the VFIO BAR2 region) ------------------------------
    @hookimpl
    def map_gfn_to_mfn(self, handle: Any, gfn: int, mfn: int, nr_pages: int, map: bool) -> None:
        if not map and self._released(handle):
            return
        vm = self._live(handle).vm
        if map:
            vm.map_frames(gfn, mfn, nr_pages)
        else:
            vm.unmap_frames(gfn, mfn, nr_pages)
