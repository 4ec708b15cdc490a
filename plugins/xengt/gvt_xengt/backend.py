"""The xengt MPT backend: XenGT's hooks, from dom0 user space, on Xen or the emulated Xen.

Per hook:

* through Xen: ``inject_msi`` (``XEN_DMOP_inject_msi``; Xen's vLAPIC
  coalesces, a message Xen refuses is dropped and counted),
  ``enable_page_track(s)``/``disable_page_track`` (``XEN_DMOP_set_mem_type``
  to and from ``HVMMEM_ioreq_server``, one call per run of frames),
  ``set_trap_area`` (a memory range on the domain's ioreq server),
  ``map_gfn_to_mfn`` (``XEN_DOMCTL_iomem_permission`` +
  ``XEN_DOMCTL_memory_mapping`` with ``aperture=map``; with
  ``aperture=trap`` the range is trapped on the ioreq server and served
  from the simulated aperture), ``pause_domain``/``unpause_domain``
  (``XEN_DOMCTL_pausedomain``/``unpausedomain``), ``open_vm`` and, on the
  emulated Xen, ``create_vm`` (the emulated toolstack builds the domain);
* through the foreign mapping of guest RAM: ``read_gpa``/``write_gpa``;
* in the backend: ``gfn_to_mfn``/``is_valid_gfn``/``from_virt_to_mfn``
  and identity DMA (``dma_map_guest_page(s)``, ``dma_unmap_guest_page(s)``,
  ``dma_pin_guest_page``), see :mod:`gvt_xengt.dma`;
* left to the core default: ``set_opregion`` (the guest programs ASLS, as
  with XenGT), ``set_edid``, ``dom0_ready``, ``set_pvmmio`` (ACRN only).

Options: ``hypervisor`` = ``xen`` (``/dev/xen/privcmd``), ``emulated``, or
``auto`` (default: ``xen`` where ``/dev/xen/privcmd`` exists);
``aperture`` = ``map`` | ``trap`` (default ``map`` on the emulated Xen,
``trap`` on Xen, where the simulated aperture has no machine frames Xen
could map); ``vcpus`` for ``create_vm`` guests; on the emulated Xen,
``domains`` (toolstack domains for ``gvt serve``, ``ID[:MEM_MIB[:VCPUS]]``
comma separated) and ``guest_seconds`` (how long their guest OS stays up).
"""

from __future__ import annotations

import errno
import importlib.metadata
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from gvt_core.errors import (
    BackendError,
    GuestNotFoundError,
    HookUnsupportedError,
    HypervisorCallError,
    VgpuStateError,
    VmCreateError,
)
from gvt_core.guest.port import GuestPort
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE
from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.info import BackendInfo, Capabilities, DmaMode, HypervisorType, PageTrackMode
from gvt_core.mpt.ops import HostContext
from gvt_xengt.control import HostControl
from gvt_xengt.domain import XenDomain, XengtHandle
from gvt_xengt.guestmem import LOW_RAM_LIMIT_GFN
from gvt_xengt.hostframes import FrameAllocator
from gvt_xengt.privcmd import Privcmd
from gvt_xengt.transport import EVTCHN_DEVICE, PRIVCMD_DEVICE, DeviceTransport, Transport

NAME = "xengt"
HYPERVISORS = ("auto", "xen", "emulated")
#: the most RAM ``create_vm`` gives a domain (3840 MiB): a domain's RAM is served
#: from one foreign mapping of its frames below hvmloader's lowest PCI hole
#: (:data:`gvt_xengt.guestmem.LOW_RAM_LIMIT_GFN`); more would not be reachable.
MAX_GUEST_RAM = LOW_RAM_LIMIT_GFN << PAGE_SHIFT
APERTURE_MODES = ("map", "trap")

try:
    VERSION = importlib.metadata.version("gvt-xengt")
except importlib.metadata.PackageNotFoundError:  # imported from a source tree
    VERSION = "unknown (gvt-xengt is not installed)"

NATIVE_MISSING = (
    f"{PRIVCMD_DEVICE} does not exist: this is not a Xen dom0 (or the xen-privcmd "
    "driver is not loaded)"
)


def native_reason(privcmd: str = PRIVCMD_DEVICE, evtchn: str = EVTCHN_DEVICE) -> str:
    """Empty if this is a Xen dom0 whose device nodes this process can open, else why not."""
    if not os.path.exists(privcmd):
        return NATIVE_MISSING
    if not os.path.exists(evtchn):
        return f"{evtchn} does not exist: load the xen-evtchn driver"
    for path in (privcmd, evtchn):
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
        except OSError as exc:
            return f"{path} cannot be opened: {exc.strerror} (run as root in dom0)"
    return ""


def _choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise BackendError(
            NAME, f"gvt backend 'xengt' option {option}={value!r} is invalid; use one of "
            + ", ".join(repr(a) for a in allowed)
        )
    return value


class XengtBackend:
    """The xengt backend for one host. See the module docstring for options."""

    def __init__(self, hypervisor: str = "auto", aperture: str = "", vcpus: int | str = 1,
                 domains: str = "", guest_seconds: float | str = 2.0) -> None:
        choice = _choice(hypervisor, HYPERVISORS, "hypervisor")
        if choice == "auto":
            choice = "xen" if os.path.exists(PRIVCMD_DEVICE) else "emulated"
        self.hypervisor = choice
        self.emulated = choice == "emulated"
        self.aperture = _choice(aperture or ("map" if self.emulated else "trap"), APERTURE_MODES,
                                "aperture")
        self.vcpus = int(vcpus)
        self.guest_seconds = float(guest_seconds)
        if not self.guest_seconds > 0:  # NaN too
            raise BackendError(NAME, f"gvt backend 'xengt' option guest_seconds="
                               f"{self.guest_seconds} is invalid; give a number of seconds "
                               "above 0")
        if domains and not self.emulated:
            raise BackendError(
                NAME, "the domains option builds domains on the emulated Xen; on Xen the "
                "toolstack (xl create) makes them"
            )
        from gvt_xengt.emulated.toolstack import parse_domains

        try:
            self.domain_specs = parse_domains(domains)
        except ValueError as exc:
            raise BackendError(NAME, f"gvt backend 'xengt' option domains: {exc}") from exc
        self._info: BackendInfo | None = None
        self.host: HostContext | None = None
        self.transport: Transport | None = None
        self.control: HostControl | None = None
        self._control_file: Privcmd | None = None
        self.xen: Any = None
        self.toolstack: Any = None
        self.frames = FrameAllocator()
        self._virt_frames: dict[int, int] = {}
        self._domains: dict[int, XenDomain] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"XengtBackend(hypervisor={self.hypervisor!r}, aperture={self.aperture!r})"

    # --- identity ------------------------------------------------------------------------------
    @hookimpl
    def backend_info(self) -> BackendInfo:
        with self._lock:
            if self._info is None:
                native = native_reason()
                if self.emulated:
                    usable, reason = True, ""
                    detail = (
                        "emulated Xen (an in-process model of Xen 4.17's device-model interface "
                        f"behind {PRIVCMD_DEVICE} and {EVTCHN_DEVICE}); native Xen is not used: "
                        + (native or "hypervisor=emulated was asked for")
                    )
                else:
                    usable, reason = not native, native
                    detail = "native Xen dom0" if not native else ""
                self._info = BackendInfo(
                    name=NAME, version=VERSION, usable=usable, reason=reason, detail=detail,
                    capabilities=Capabilities(
                        hypervisor=HypervisorType.XEN,
                        page_track=PageTrackMode.WRITE_FORWARDED,
                        dma=DmaMode.IDENTITY,
                        needs_trap_area=True,
                        needs_aperture_map=True,
                        max_dma_page=PAGE_SIZE,
                        can_create_vm=self.emulated,
                        realtime_guests=not self.emulated,
                    ),
                )
            return self._info

    # --- host life cycle -------------------------------------------------------------------------
    @hookimpl
    def host_init(self, host: HostContext) -> None:
        if self.host is not None and self.host is not host:
            raise BackendError(
                NAME, "this XengtBackend already serves another host; load the backend once per host"
            )
        self.host = host
        if self.emulated:
            from gvt_xengt.emulated import EmulatedTransport, EmulatedXen, Toolstack

            self.xen = EmulatedXen()
            self.xen.machine.sysmem = host.sysmem
            self.toolstack = Toolstack(self.xen)
            self.transport = EmulatedTransport(self.xen)
            for spec in self.domain_specs:
                self.toolstack.boot(spec, self.guest_seconds)
        else:
            self.transport = DeviceTransport()
        try:
            self._control_file = Privcmd(self.transport)
        except OSError as exc:
            raise HypervisorCallError(NAME, f"open {PRIVCMD_DEVICE}", exc.errno or 0) from exc
        self.control = HostControl(self._control_file)

    @hookimpl
    def host_exit(self, host: HostContext) -> None:
        with self._lock:
            domains = list(self._domains.values())
        attached = [d for d in domains if d.handle is not None]
        if attached:
            raise VgpuStateError(
                "host_exit with vGPUs still attached to xengt domains "
                f"{', '.join(str(d.domid) for d in attached)}; destroy the vGPUs first"
            )
        for d in domains:
            d.close()
        if self._control_file is not None:
            self._control_file.close()
            self._control_file = None
        if self.xen is not None:
            self.xen.close()
        self.host = None

    # --- guests -------------------------------------------------------------------------------------
    def _ready(self) -> tuple[HostContext, Transport, HostControl]:
        if self.host is None or self.transport is None or self.control is None:
            raise VgpuStateError("the xengt backend is not bound to a host (host_init first)")
        return self.host, self.transport, self.control

    @hookimpl
    def create_vm(self, host: HostContext, mem_size: int, name: str) -> XenDomain:
        if not self.emulated:
            raise HookUnsupportedError(
                NAME, "create_vm", "on Xen, domains come from the toolstack (xl create); "
                "serve one with 'gvt serve --backend xengt --domid N'"
            )
        self._ready()
        if type(mem_size) is not int or mem_size <= 0 or mem_size % PAGE_SIZE:
            raise VmCreateError(
                NAME, name, mem_size, "guest RAM must be a positive multiple of 4096 bytes"
            )
        if mem_size > MAX_GUEST_RAM:
            raise VmCreateError(
                NAME, name, mem_size,
                f"xengt domains have at most {MAX_GUEST_RAM >> 20} MiB of RAM (MAX_GUEST_RAM: "
                "the RAM below hvmloader's lowest PCI hole, all that the backend maps and serves)",
            )
        try:
            dom = self.toolstack.create(mem_size, self.vcpus, name)
        except (ValueError, OSError, MemoryError) as exc:  # xl's refusal: vCPUs, domids, memory
            raise VmCreateError(NAME, name, mem_size, str(exc)) from exc
        try:
            return self._open(host, dom.domid, owned=True)
        except BaseException:
            self.toolstack.destroy(dom.domid)
            raise

    @hookimpl
    def open_vm(self, host: HostContext, vm_id: int) -> XenDomain:
        self._ready()
        if not 0 < vm_id < 0x7FF0:
            raise GuestNotFoundError(NAME, vm_id, "a domain id is 1..0x7fef (0 is dom0)")
        return self._open(host, vm_id, owned=False)

    def _open(self, host: HostContext, domid: int, owned: bool) -> XenDomain:
        _, transport, control = self._ready()
        with self._lock:
            if domid in self._domains:
                raise GuestNotFoundError(NAME, domid, "this host already serves it")
            d = XenDomain(self, host, domid, transport, control, owned=owned)
            self._domains[domid] = d
            return d

    def forget(self, domain: XenDomain) -> None:
        with self._lock:
            if self._domains.get(domain.domid) is domain:
                del self._domains[domain.domid]

    def destroy_owned(self, domid: int) -> None:
        if self.toolstack is not None:
            self.toolstack.destroy(domid)

    def guest_port(self, domain: XenDomain, vcpu: int) -> GuestPort:
        if not self.emulated:
            raise HookUnsupportedError(
                NAME, "GuestVm.port", f"domain {domain.domid} runs on Xen's vCPUs; its accesses "
                "come from its own code"
            )
        from gvt_xengt.port import XenGuestPort

        dom = self.xen.lookup(domain.domid)
        if dom is None:
            raise VgpuStateError(f"domain {domain.domid} no longer exists")
        return XenGuestPort(dom, vcpu)

    @property
    def domains(self) -> list[XenDomain]:
        with self._lock:
            return list(self._domains.values())

    # --- binding ----------------------------------------------------------------------------------
    @hookimpl
    def attach_vgpu(self, vgpu: Any, vm: Any) -> XengtHandle:
        with self._lock:
            if not isinstance(vm, XenDomain) or self._domains.get(vm.domid) is not vm:
                raise HookUnsupportedError(
                    NAME, "attach_vgpu", f"{vm!r} is not a domain this backend opened"
                )
        return vm.attach(vgpu)

    @hookimpl
    def detach_vgpu(self, handle: Any) -> None:
        h = self._handle(handle)
        if h.live:
            h.domain.detach()

    @staticmethod
    def _handle(handle: Any) -> XengtHandle:
        if type(handle) is not XengtHandle:
            raise BackendError(
                NAME, f"gvt backend 'xengt' got handle {handle!r}, not one its attach_vgpu returned"
            )
        return handle

    def _released(self, handle: Any) -> bool:
        """A release hook (untrack, unmap, untrap) on a handle whose vGPU was already
        detached, or whose domain was closed first: detach released everything, so
        there is nothing left to drop and the hook returns quietly, as XenGT's
        release paths do for a domain that is gone."""
        return not self._handle(handle).live

    def _live(self, handle: Any) -> XengtHandle:
        h = self._handle(handle)
        h.domain.check_live(h)
        return h

    # --- interrupts --------------------------------------------------------------------------------
    @hookimpl
    def inject_msi(self, handle: Any, address: int, data: int) -> None:
        if not (0 <= address <= 0xFFFF_FFFF and 0 <= data <= 0xFFFF):
            raise ValueError(f"MSI address {address:#x} / data {data:#x} exceed 32 / 16 bits")
        h = self._live(handle)
        h.domain.inject_msi(h, address, data)

    @hookimpl
    def gvt_vgpu_activated(self, vgpu: Any) -> None:
        """A domain left paused for its device model (``xl create -p``) runs once its
        vGPU is active, as xl unpauses a domain when its device models are ready."""
        with self._lock:
            served = [d for d in self._domains.values()
                      if not d.owned and d.handle is not None and d.handle.vgpu is vgpu]
        for d in served:
            try:
                d.unpause()
            except HypervisorCallError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: it was not paused
                    raise

    # --- guest memory ---------------------------------------------------------------------------------
    @hookimpl
    def read_gpa(self, handle: Any, gpa: int, length: int) -> bytes:
        return self._live(handle).domain.ram.read(gpa, length)

    @hookimpl
    def write_gpa(self, handle: Any, gpa: int, data: bytes) -> None:
        self._live(handle).domain.ram.write(gpa, bytes(data))

    @hookimpl
    def gfn_to_mfn(self, handle: Any, gfn: int) -> int:
        h = self._live(handle)
        h.domain.ram.check_gfn(gfn)
        return h.dma.base + gfn

    @hookimpl
    def is_valid_gfn(self, handle: Any, gfn: int) -> bool:
        return self._live(handle).domain.ram.is_valid(gfn)

    @hookimpl
    def from_virt_to_mfn(self, vaddr: int) -> int:
        if vaddr < 0 or vaddr & PAGE_MASK:
            raise ValueError(f"from_virt_to_mfn takes the address of a page start, got {vaddr:#x}")
        page = vaddr >> PAGE_SHIFT
        with self._lock:
            frame = self._virt_frames.get(page)
            if frame is None:
                frame = self._virt_frames[page] = self.frames.alloc(1)
            return frame

    # --- page tracking ---------------------------------------------------------------------------------
    @hookimpl
    def enable_page_track(self, handle: Any, gfn: int) -> None:
        h = self._live(handle)
        h.domain.track(h, [int(gfn)])

    @hookimpl
    def enable_page_tracks(self, handle: Any, gfns: Sequence[int]) -> None:
        h = self._live(handle)
        h.domain.track(h, [int(g) for g in gfns])

    @hookimpl
    def disable_page_track(self, handle: Any, gfn: int) -> None:
        if self._released(handle):
            return
        h = self._handle(handle)
        h.domain.untrack(h, int(gfn))

    # --- DMA ----------------------------------------------------------------------------------------------
    @hookimpl
    def dma_map_guest_page(self, handle: Any, gfn: int, size: int) -> int:
        return self._live(handle).dma.map(int(gfn), size)

    @hookimpl
    def dma_map_guest_pages(self, handle: Any, gfns: Sequence[int], size: int) -> np.ndarray:
        return self._live(handle).dma.map_many(gfns, size)

    @hookimpl
    def dma_unmap_guest_page(self, handle: Any, dma_addr: int) -> None:
        if not self._released(handle):
            self._handle(handle).dma.unmap(dma_addr)

    @hookimpl
    def dma_unmap_guest_pages(self, handle: Any, dma_addrs: Sequence[int]) -> None:
        if not self._released(handle):
            self._handle(handle).dma.unmap_many(dma_addrs)

    @hookimpl
    def dma_pin_guest_page(self, handle: Any, dma_addr: int) -> None:
        self._live(handle).dma.pin(dma_addr)

    # --- address space ----------------------------------------------------------------------------------
    @hookimpl
    def map_gfn_to_mfn(self, handle: Any, gfn: int, mfn: int, nr_pages: int, map: bool) -> None:
        if not map and self._released(handle):
            return
        h = self._live(handle)
        h.domain.map_frames(h, gfn, mfn, nr_pages, map)

    @hookimpl
    def set_trap_area(self, handle: Any, start: int, end: int, map: bool) -> None:
        if not map and self._released(handle):
            return
        h = self._live(handle)
        h.domain.set_trap(h, start, end, map)

    @hookimpl
    def pause_domain(self, handle: Any) -> None:
        self._live(handle).domain.pause()

    @hookimpl
    def unpause_domain(self, handle: Any) -> None:
        h = self._live(handle)
        try:
            h.domain.unpause()
        except HypervisorCallError as exc:
            if exc.errno == errno.EINVAL:
                raise VgpuStateError(f"domain {h.domain.domid} is not paused") from exc
            raise
