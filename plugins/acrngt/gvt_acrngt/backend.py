"""The acrngt MPT backend: AcrnGT as a user-space ioreq client of the ACRN HSM.

Per hook (facts 1.6; upstream ``linux/acrn.h``):

* ``backend_info``: usable on an ACRN Service VM (``/dev/acrn_hsm`` opens) or,
  where there is none, on the emulated ACRN, saying so in ``detail``;
* ``host_init`` / ``host_exit``: bind the host; on the emulated ACRN the host
  GPU's BARs become Service VM devices and the launcher boots its User VMs;
* ``dom0_ready``: AcrnGT's ``GVT_DOM0_READY=1`` uevent, as a file launchers
  watch (``<handover_dir>/dom0_ready``); launchers hand VMs over only after it;
* ``create_vm`` (emulated ACRN only: on a real one the launcher creates User
  VMs): the backend is the launcher, the VM's file its own; what it cannot
  launch (a size that is not whole pages, more RAM than the emulated Service
  VM has, no free User VM configuration) is :class:`VmCreateError`;
* ``open_vm``: a launcher hands its User VM over (:mod:`gvt_acrngt.handover`);
* ``attach_vgpu`` / ``detach_vgpu``: bind the vGPU to the VM's request
  router; detach releases every track, map, area and DMA mapping, so the
  release hooks on a detached handle (its VM closed first) return quietly;
* ``inject_msi``: ``ACRN_IOCTL_INJECT_MSI``;
* ``read_gpa`` / ``write_gpa``: the VM's RAM as mapped here;
* ``gfn_to_mfn`` / ``is_valid_gfn`` / ``from_virt_to_mfn``: the Service VM
  frames the HSM pinned (pagemap on a real Service VM);
* ``enable_page_track(s)`` / ``disable_page_track``: RAM pages remapped R-X so
  stores arrive as WP requests (``WRITE_FORWARDED``), R-W-X again to stop;
* ``dma_map_guest_page(s)`` / ``dma_unmap_guest_page(s)`` /
  ``dma_pin_guest_page``: identity (``pfn << 12``), reference counted;
* ``map_gfn_to_mfn``: an MMIO memory segment (uncached); ``set_trap_area``:
  the router's BAR0 range; ``set_pvmmio``: the register pages mapped R-X,
  PVINFO trapped; ``set_opregion``: the OpRegion's frames at
  ``ACRN_GUEST_OPREGION_GPA`` (returned, the core writes it to ASLS).

Left to the core default, with the reason:

* ``set_edid`` (nothing to do): AcrnGT has no EDID region for user space;
* ``pause_domain`` / ``unpause_domain`` (HookUnsupportedError): ACRN cannot
  resume a paused VM without resetting it (``START_VM`` needs a VM in the
  CREATED state), and AcrnGT's own pause hooks were empty.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gvt_acrngt.emulated.launcher import Launcher
from gvt_acrngt.emulated.machine import DEFAULT_REQUEST_TIMEOUT, EmulatedAcrn
from gvt_acrngt.emulated.service_vm import HIGH_RAM
from gvt_acrngt.handover import GvtEnd, HandoverError
from gvt_acrngt.hsm import HsmFile
from gvt_acrngt.memory import GuestRam, SharedMemory
from gvt_acrngt.transport import HSM_DEVICE, DeviceTransport, HsmTransport, probe_device
from gvt_acrngt.vm import AcrnGuestVm, AcrnHandle
from gvt_core.errors import (
    BackendError,
    GuestNotFoundError,
    HookUnsupportedError,
    HypervisorCallError,
    VgpuStateError,
    VmCreateError,
)
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE
from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.info import BackendInfo, Capabilities, DmaMode, HypervisorType, PageTrackMode
from gvt_core.mpt.ops import HostContext

NAME = "acrngt"
try:
    VERSION = importlib.metadata.version("gvt-acrngt")
except importlib.metadata.PackageNotFoundError:  # imported from a source tree
    VERSION = "unknown (gvt-acrngt is not installed)"

#: where launchers offer User VMs on a real Service VM.
DEFAULT_HANDOVER_DIR = "/run/acrn/gvt"
DOM0_READY_FILE = "dom0_ready"
#: vCPUs a guest of ``create_vm`` may have (the emulated configuration's pCPUs 1..3).
MAX_VCPUS = 3
#: User VMs the emulated launcher may boot (``launch=N``).
MAX_LAUNCH = 7
#: guest RAM ``create_vm`` may give a guest of the emulated ACRN: the emulated Service
#: VM's high RAM (60 GiB), which the HSM pins the guest's RAM from; what other User VMs
#: pinned already is not available either.
MAX_EMULATED_GUEST_RAM = (HIGH_RAM[1] - HIGH_RAM[0]) << PAGE_SHIFT
HYPERVISORS = ("auto", "acrn", "emulated")


def _capabilities(emulated: bool) -> Capabilities:
    """AcrnGT's: writes to write-protected pages arrive instead of landing; DMA
    addresses are host frames; BAR0 is trapped per range, the aperture mapped."""
    return Capabilities(
        hypervisor=HypervisorType.ACRN,
        page_track=PageTrackMode.WRITE_FORWARDED,
        dma=DmaMode.IDENTITY,
        needs_trap_area=True,
        needs_aperture_map=True,
        max_dma_page=PAGE_SIZE,
        can_create_vm=emulated,
        realtime_guests=not emulated,
    )


def _int_option(name: str, value: int | str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BackendError(NAME, f"gvt backend 'acrngt' option {name}={value!r} is not a number") from None
    if not lo <= n <= hi:
        raise BackendError(NAME, f"gvt backend 'acrngt' option {name}={n} is outside {lo}..{hi}")
    return n


class AcrngtBackend:
    """The acrngt backend for one host. Options (``load_backend("acrngt", ...)``,
    ``--backend-option KEY=VALUE``):

    * ``hypervisor``: ``acrn`` (``/dev/acrn_hsm`` of this Service VM),
      ``emulated`` (the emulated ACRN), or ``auto`` (default: ``acrn`` where the
      device exists, else ``emulated``);
    * ``vcpus``: vCPUs of the guests ``create_vm`` makes (1..3, default 1);
    * ``handover_dir``: where launchers offer User VMs (default
      ``/run/acrn/gvt``; a private directory on the emulated ACRN);
    * emulated ACRN only: ``launch`` (User VMs its launcher boots for
      ``gvt serve``, default 0), ``guest_seconds`` (how long their guest runs
      before powering off, default 3), ``guest_mem`` (their RAM in MiB, default
      64), ``request_timeout`` (seconds a vCPU waits for a completion, default 30).
    """

    def __init__(self, hypervisor: str = "auto", vcpus: int | str = 1,
                 handover_dir: str | None = None, launch: int | str = 0,
                 guest_seconds: float | str = 3.0, guest_mem: int | str = 64,
                 request_timeout: float | str = DEFAULT_REQUEST_TIMEOUT) -> None:
        if hypervisor not in HYPERVISORS:
            raise BackendError(
                NAME, f"gvt backend 'acrngt' option hypervisor={hypervisor!r} is invalid; "
                f"use one of {', '.join(HYPERVISORS)}"
            )
        self.vcpus = _int_option("vcpus", vcpus, 1, MAX_VCPUS)
        self.launch = _int_option("launch", launch, 0, MAX_LAUNCH)
        self.guest_mem = _int_option("guest_mem", guest_mem, 1, 4096) << 20
        try:
            self.guest_seconds = float(guest_seconds)
            timeout = float(request_timeout)
        except ValueError as exc:
            raise BackendError(NAME, f"gvt backend 'acrngt': {exc}") from None
        for name, seconds in (("guest_seconds", self.guest_seconds),
                              ("request_timeout", timeout)):
            if not seconds > 0:  # NaN too
                raise BackendError(NAME, f"gvt backend 'acrngt' option {name}={seconds} is "
                                   "invalid; give a number of seconds above 0")
        self.device_reason = probe_device()
        self.emulated = hypervisor == "emulated" or (hypervisor == "auto" and bool(self.device_reason))
        self.usable_reason = ""
        self.machine: EmulatedAcrn | None = None
        self.transport: HsmTransport
        self._tmp = ""
        if self.emulated:
            self.machine = EmulatedAcrn(request_timeout=timeout)
            self.transport = self.machine.transport
            #: a private directory made at host_init unless one is given.
            self.handover_dir: Path | None = Path(handover_dir) if handover_dir else None
        else:
            self.usable_reason = self.device_reason
            self.transport = DeviceTransport(HSM_DEVICE)
            self.handover_dir = Path(handover_dir or DEFAULT_HANDOVER_DIR)
        if self.launch and not self.emulated:
            raise BackendError(NAME, "option launch= boots guests of the emulated ACRN; on an "
                                     "ACRN Service VM the launcher (acrn-dm) creates User VMs")
        self.host: HostContext | None = None
        self.launcher: Launcher | None = None
        self.vms: dict[int, AcrnGuestVm] = {}
        self._lock = threading.Lock()
        self._dom0_ready = False

    def __repr__(self) -> str:
        return f"AcrngtBackend({'emulated' if self.emulated else self.transport.label})"

    # --- identity -------------------------------------------------------------------------
    @hookimpl
    def backend_info(self) -> BackendInfo:
        caps = _capabilities(self.emulated)
        if self.emulated:
            return BackendInfo(
                name=NAME, version=VERSION, usable=True, reason="", capabilities=caps,
                detail=(
                    "on the emulated ACRN (hypervisor=emulated), not a real one: "
                    f"{self.device_reason or 'asked for with hypervisor=emulated'}"
                ),
            )
        return BackendInfo(
            name=NAME, version=VERSION, usable=not self.usable_reason,
            reason=self.usable_reason, capabilities=caps,
            detail="" if self.usable_reason else f"on this ACRN Service VM ({HSM_DEVICE})",
        )

    # --- host life cycle ------------------------------------------------------------------------
    @hookimpl
    def host_init(self, host: HostContext) -> None:
        if self.host is not None and self.host is not host:
            raise BackendError(NAME, "this AcrngtBackend already serves another host; "
                                     "load the backend once per host")
        self.host = host
        if self.handover_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="gvt-acrn-emulated-")
            self.handover_dir = Path(self._tmp)
        if self.machine is not None:
            self.machine.attach_gpu(host.sysmem)
            if self.launch:
                self.launcher = Launcher(self.machine, self._handover_dir(),
                                         ready=lambda: self._dom0_ready)
                for _ in range(self.launch):
                    self.launcher.boot(self.guest_mem, 1, self.guest_seconds)

    @hookimpl
    def host_exit(self, host: HostContext) -> None:
        attached = [vm for vm in self.vms.values() if vm.handle is not None]
        if attached:
            raise VgpuStateError(
                f"host_exit with vGPUs still attached to ACRN User VMs "
                f"{', '.join(str(vm.vm_id) for vm in attached)}; destroy the vGPUs first"
            )
        for vm in list(self.vms.values()):
            vm.close()
        self.vms.clear()
        if self.launcher is not None:
            self.launcher.close()
        with contextlib.suppress(FileNotFoundError, PermissionError):
            (self._handover_dir() / DOM0_READY_FILE).unlink()
        if self.machine is not None:
            self.machine.close()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = ""
            self.handover_dir = None
        self.host = None

    @hookimpl
    def dom0_ready(self) -> None:
        """AcrnGT's ``GVT_DOM0_READY=1`` uevent, for user-space launchers: a file."""
        directory = self._handover_dir()
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            (directory / DOM0_READY_FILE).write_text("GVT_DOM0_READY=1\n")
        except OSError as exc:
            raise BackendError(
                NAME, f"gvt backend 'acrngt' cannot announce GVT_DOM0_READY in "
                f"{directory}: {exc.strerror}; pass handover_dir= a writable directory"
            ) from exc
        self._dom0_ready = True

    def _handover_dir(self) -> Path:
        if self.handover_dir is None:
            raise BackendError(NAME, "gvt backend 'acrngt' is not bound to a host yet (host_init)")
        return self.handover_dir

    # --- guests ----------------------------------------------------------------------------------
    def _host(self, host: HostContext) -> HostContext:
        if self.host is not None and host is not self.host:
            raise BackendError(NAME, "a VM was asked for a host this AcrngtBackend does not serve")
        return host

    @hookimpl
    def create_vm(self, host: HostContext, mem_size: int, name: str) -> AcrnGuestVm:
        return self.create_vm_with(host, mem_size, name, self.vcpus)

    def create_vm_with(self, host: HostContext, mem_size: int, name: str,
                       vcpus: int) -> AcrnGuestVm:
        """``create_vm`` with a vCPU count of its own (1..3)."""
        host = self._host(host)
        if self.machine is None:
            raise HookUnsupportedError(
                NAME, "create_vm", "on an ACRN Service VM the launcher (acrn-dm) creates User "
                "VMs; serve one with 'gvt serve --backend acrngt --vmid N'",
            )
        if type(mem_size) is not int or mem_size <= 0 or mem_size & PAGE_MASK:
            raise VmCreateError(NAME, name, mem_size,
                                "guest RAM must be a positive multiple of 4096 bytes")
        if mem_size > MAX_EMULATED_GUEST_RAM:
            raise VmCreateError(
                NAME, name, mem_size,
                f"the emulated ACRN's Service VM has {MAX_EMULATED_GUEST_RAM >> 30} GiB of RAM "
                "for the HSM to pin guest RAM from (MAX_EMULATED_GUEST_RAM)",
            )
        if type(vcpus) is not int or not 1 <= vcpus <= MAX_VCPUS:
            raise VmCreateError(NAME, name, mem_size,
                                f"an ACRN User VM here has 1..{MAX_VCPUS} vCPUs, not {vcpus!r}")
        hv = self.machine.hv
        with self.machine.lock:
            if len(hv.vms) >= hv.max_vms:
                raise VmCreateError(
                    NAME, name, mem_size,
                    f"the emulated ACRN has {hv.max_vms} User VM configurations (vmids 1.."
                    f"{hv.max_vms}) and all are in use; close a guest first",
                )
        try:
            hsm = HsmFile(self.transport)
            ioreq = SharedMemory(PAGE_SIZE, f"acrngt-ioreq-{name}")
        except OSError as exc:
            raise VmCreateError(NAME, name, mem_size, f"no request buffer: {exc}") from exc
        try:
            ram = GuestRam(mem_size, f"acrngt-ram-{name}")
        except OSError as exc:
            ioreq.close()
            hsm.close()
            raise VmCreateError(
                NAME, name, mem_size, f"this process cannot map that much RAM ({exc.strerror})"
            ) from exc
        vm: AcrnGuestVm | None = None
        try:
            created = hsm.create_vm(ioreq.address, cpu_affinity=((1 << vcpus) - 1) << 1)
            try:
                hsm.set_ram(0, ram.address, mem_size)
            except HypervisorCallError as exc:
                left = self.machine.memory.unassigned_bytes
                raise VmCreateError(
                    NAME, name, mem_size,
                    f"the HSM could not pin the guest's RAM: the emulated Service VM has "
                    f"{left >> 20} MiB of RAM left to pin (frames stay assigned to the memory "
                    f"they were first pinned for) ({exc})",
                ) from exc
            vm = AcrnGuestVm(host, hsm, created.vmid, created.vcpu_num, ram, ioreq, name,
                             owned=True, machine=self.machine, on_close=self.forget)
            vm.serve()
            hsm.start_vm()
        except BaseException:
            if vm is not None:
                vm.close()
            else:
                with contextlib.suppress(HypervisorCallError):
                    hsm.pause_vm()
                    hsm.destroy_vm()
                hsm.close()
                ram.close()
                ioreq.close()
            raise
        with self._lock:
            self.vms[vm.vm_id] = vm
        return vm

    @hookimpl
    def open_vm(self, host: HostContext, vm_id: int) -> AcrnGuestVm:
        host = self._host(host)
        if not isinstance(vm_id, int) or not 1 <= vm_id < 0xFFFF:
            raise GuestNotFoundError(NAME, vm_id, "an ACRN User VM id is 1..65534")
        try:
            link = GvtEnd(self._handover_dir(), vm_id)
        except HandoverError as exc:
            raise GuestNotFoundError(
                NAME, vm_id,
                f"{exc}; the HSM binds a User VM to the /dev/acrn_hsm file that created it, so "
                "its launcher must hand that file over (see gvt_acrngt.handover)",
            ) from exc
        try:
            offer = link.request()
        except (HandoverError, OSError) as exc:
            link.close()
            raise GuestNotFoundError(NAME, vm_id, str(exc)) from exc
        hsm = HsmFile(self.transport, fd=offer.hsm_fd)
        try:
            ioreq = SharedMemory(PAGE_SIZE, "", fd=offer.ioreq_fd, offset=offer.ioreq_offset)
        except BaseException:
            for fd in (offer.ioreq_fd, offer.ram_fd):
                os.close(fd)
            hsm.close()
            link.close()
            raise
        ram = GuestRam(offer.ram_size, "", fd=offer.ram_fd)
        try:
            vm = AcrnGuestVm(host, hsm, offer.vmid, offer.vcpu_num, ram, ioreq,
                             f"vm{offer.vmid}", owned=False, machine=self.machine, link=link,
                             on_close=self.forget)
            try:
                vm.serve()
            except HypervisorCallError as exc:
                why = ("the VM already has a default ioreq client (its launcher serves it)"
                       if exc.errno == errno.EEXIST else str(exc))
                raise GuestNotFoundError(NAME, vm_id, why) from exc
            link.ready()
        except BaseException:
            link.close()
            hsm.close()
            ram.close()
            ioreq.close()
            raise
        with self._lock:
            self.vms[vm.vm_id] = vm
        return vm

    def forget(self, vm: AcrnGuestVm) -> None:
        with self._lock:
            if self.vms.get(vm.vm_id) is vm:
                del self.vms[vm.vm_id]

    @hookimpl
    def attach_vgpu(self, vgpu: Any, vm: Any) -> AcrnHandle:
        if not isinstance(vm, AcrnGuestVm) or self.vms.get(vm.vm_id) is not vm:
            raise HookUnsupportedError(
                NAME, "attach_vgpu", f"{vm!r} is not a User VM this backend created or opened"
            )
        return vm.attach(vgpu)

    @staticmethod
    def _released(handle: Any) -> bool:
        """A release hook on a handle whose vGPU was detached already (its VM was
        closed first): detach released everything, nothing is left to drop (as
        KVMGT's unmap returns quietly on a stale handle)."""
        if type(handle) is not AcrnHandle:
            raise BackendError(
                NAME, f"gvt backend 'acrngt' got handle {handle!r}, not one its attach_vgpu returned"
            )
        return not handle.live

    @hookimpl
    def detach_vgpu(self, handle: Any) -> None:
        if self._released(handle):
            return
        self._vm(handle).detach()

    def _vm(self, handle: Any) -> AcrnGuestVm:
        if type(handle) is not AcrnHandle:
            raise BackendError(
                NAME, f"gvt backend 'acrngt' got handle {handle!r}, not one its attach_vgpu returned"
            )
        return handle.vm.live(handle).vm

    # --- interrupts ------------------------------------------------------------------------------------
    @hookimpl
    def inject_msi(self, handle: Any, address: int, data: int) -> None:
        if not (0 <= address <= 0xFFFF_FFFF and 0 <= data <= 0xFFFF):
            raise ValueError(f"MSI address {address:#x} / data {data:#x} exceed 32 / 16 bits")
        self._vm(handle).hsm.inject_msi(address, data)

    # --- guest memory ----------------------------------------------------------------------------------
    @hookimpl
    def read_gpa(self, handle: Any, gpa: int, length: int) -> bytes:
        return self._vm(handle).ram.read(gpa, length)

    @hookimpl
    def write_gpa(self, handle: Any, gpa: int, data: bytes) -> None:
        self._vm(handle).ram.write(gpa, data)

    @hookimpl
    def gfn_to_mfn(self, handle: Any, gfn: int) -> int:
        return self._vm(handle).gfn_to_mfn(gfn)

    @hookimpl
    def is_valid_gfn(self, handle: Any, gfn: int) -> bool:
        vm = self._vm(handle)
        return isinstance(gfn, int) and 0 <= gfn < vm.mem_size >> PAGE_SHIFT

    @hookimpl
    def from_virt_to_mfn(self, vaddr: int) -> int:
        if vaddr < 0 or vaddr & PAGE_MASK:
            raise ValueError(f"from_virt_to_mfn takes the address of a page start, got {vaddr:#x}")
        return int(self.transport.frames_of(vaddr, 1)[0])

    # --- page tracking -----------------------------------------------------------------------------------
    @hookimpl
    def enable_page_track(self, handle: Any, gfn: int) -> None:
        self._vm(handle).track([gfn])

    @hookimpl
    def enable_page_tracks(self, handle: Any, gfns: Sequence[int]) -> None:
        self._vm(handle).track(np.asarray(gfns).reshape(-1).tolist())

    @hookimpl
    def disable_page_track(self, handle: Any, gfn: int) -> None:
        if self._released(handle):
            return
        self._vm(handle).untrack(gfn)

    # --- DMA -----------------------------------------------------------------------------------------------
    def _dma(self, handle: Any) -> Any:
        dma = self._vm(handle).dma
        assert dma is not None
        return dma

    @hookimpl
    def dma_map_guest_page(self, handle: Any, gfn: int, size: int) -> int:
        return self._dma(handle).map(gfn, size)

    @hookimpl
    def dma_map_guest_pages(self, handle: Any, gfns: Sequence[int], size: int) -> np.ndarray:
        return self._dma(handle).map_many(gfns, size)

    @hookimpl
    def dma_unmap_guest_page(self, handle: Any, dma_addr: int) -> None:
        if self._released(handle):
            return
        self._dma(handle).unmap(dma_addr)

    @hookimpl
    def dma_unmap_guest_pages(self, handle: Any, dma_addrs: Sequence[int]) -> None:
        if self._released(handle):
            return
        self._dma(handle).unmap_many(dma_addrs)

    @hookimpl
    def dma_pin_guest_page(self, handle: Any, dma_addr: int) -> None:
        self._dma(handle).pin(dma_addr)

    # --- address-space plumbing ----------------------------------------------------------------------------
    @hookimpl
    def map_gfn_to_mfn(self, handle: Any, gfn: int, mfn: int, nr_pages: int, map: bool) -> None:
        if not map and self._released(handle):
            return
        self._vm(handle).map_frames(gfn, mfn, nr_pages, map)

    @hookimpl
    def set_trap_area(self, handle: Any, start: int, end: int, map: bool) -> None:
        if not map and self._released(handle):
            return
        self._vm(handle).set_trap_area(start, end, map)

    @hookimpl
    def set_pvmmio(self, handle: Any, start: int, end: int, map: bool) -> None:
        if not map and self._released(handle):
            return
        vm = self._vm(handle)
        vm.set_pvmmio(handle.vgpu, start, end, map)

    @hookimpl
    def set_opregion(self, handle: Any, frames: Sequence[int]) -> int:
        return self._vm(handle).set_opregion(frames)
