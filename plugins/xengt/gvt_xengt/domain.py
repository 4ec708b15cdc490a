"""One Xen domain served by the backend: its ioreq server, channels, RAM and vGPU.

Opening a domain (``open_vm``, or ``create_vm`` on the emulated Xen) sets
up what XenGT's ``xengt_hvm_init`` does, from dom0 user space:

1. a privcmd file restricted to the domain; ``XEN_DMOP_nr_vcpus``;
2. every RAM frame mapped (``IOCTL_PRIVCMD_MMAPBATCH_V2``, see
   :mod:`gvt_xengt.guestmem`);
3. an ioreq server without buffered requests
   (``XEN_DMOP_create_ioreq_server``), its synchronous page mapped as a
   resource (``IOCTL_PRIVCMD_MMAP_RESOURCE``), enabled
   (``XEN_DMOP_set_ioreq_server_state``);
4. an event-channel file restricted to the domain, one interdomain channel
   bound per vCPU to the port Xen wrote in that vCPU's slot;
5. ``HVMMEM_ioreq_server`` writes forwarded to the server
   (``XEN_DMOP_map_mem_type_to_ioreq_server``, write access);
6. the emulation thread.

Attaching a vGPU claims PCI 00:02.0 on the server (a one-SBDF PCI range);
the BAR0 trap, aperture slice and write-tracked pages follow the core's
hooks; detaching releases all of it. Closing undoes the setup in reverse;
a domain the backend created is then destroyed, one it opened keeps running.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from gvt_core.errors import (
    AddressSpaceError,
    GuestNotFoundError,
    HypervisorCallError,
    PageTrackError,
    VgpuStateError,
)
from gvt_core.guest.port import VGPU_BUS, VGPU_DEVICE, VGPU_FUNCTION, GuestPort, HeldResources
from gvt_core.mpt.ops import HostContext
from gvt_xengt import abi
from gvt_xengt.control import HostControl
from gvt_xengt.dma import IdentityDma
from gvt_xengt.dmop import DeviceModelOps
from gvt_xengt.emulation import Attachment, EmulationThread
from gvt_xengt.evtchn import EventChannels
from gvt_xengt.guestmem import ForeignRam, close_region
from gvt_xengt.privcmd import Privcmd
from gvt_xengt.transport import Transport

if TYPE_CHECKING:
    from gvt_xengt.backend import XengtBackend

log = logging.getLogger(__name__)
NAME = "xengt"
#: PCI 00:02.0 as Xen encodes it in a PCI range and in bits 63:32 of a config ioreq.
VGPU_SBDF = abi.XEN_DMOP_PCI_SBDF(0, VGPU_BUS, VGPU_DEVICE, VGPU_FUNCTION)
#: Xen errnos that mean the domain (or our server in it) is gone.
GONE = (errno.ESRCH, errno.ENOENT)
#: errnos with which ``XEN_DMOP_inject_msi`` refuses one message the guest
#: programmed (``hvm_inject_msi``/``vmsi_deliver``): vector 0 naming no pirq
#: (ERANGE), a delivery mode Xen does not deliver or a pirq it cannot bind
#: (EINVAL), a lowest-priority message no vCPU accepts or a domain already
#: gone (ESRCH). Such a message is lost, as a malformed MSI is on hardware.
MSI_UNDELIVERABLE = (errno.ERANGE, errno.EINVAL, errno.ESRCH)


class XengtHandle:
    """What ``attach_vgpu`` returns: one vGPU bound to one domain."""

    def __init__(self, domain: XenDomain, attachment: Attachment, dma: IdentityDma) -> None:
        self.domain = domain
        self.attachment = attachment
        self.dma = dma
        self.tracked: set[int] = set()
        #: (start, end) BAR0 trap areas, end exclusive.
        self.traps: list[tuple[int, int]] = []
        #: (gfn, mfn, nr) aperture maps.
        self.maps: list[tuple[int, int, int]] = []

    @property
    def vgpu(self) -> Any:
        return self.attachment.vgpu

    @property
    def live(self) -> bool:
        return self.attachment.live


class XenDomain:
    """A domain this backend serves (implements :class:`gvt_core.guest.port.GuestVm`)."""

    def __init__(self, backend: XengtBackend, host: HostContext, domid: int,
                 transport: Transport, control: HostControl, *, owned: bool) -> None:
        self.backend = backend
        self.host = host
        self.domid = domid
        self.vm_id = domid
        self.transport = transport
        self.control = control
        self.owned = owned
        self.lock = threading.RLock()
        self.attachment: Attachment | None = None
        self.handle: XengtHandle | None = None
        self.sbdf = VGPU_SBDF
        self.vcpu_of_port: dict[int, int] = {}
        self.port_of_vcpu: list[int] = []
        self.failures: list[str] = []
        self.paused_by_error = False
        #: MSIs Xen refused to deliver (:data:`MSI_UNDELIVERABLE`); the first is logged.
        self.msis_refused = 0
        self._ended = threading.Event()
        self._closed = False
        self._gone = False
        self.privcmd: Privcmd | None = None
        self.evtchn_file: EventChannels | None = None
        self.thread: EmulationThread | None = None
        self._page_region: Any = None
        self.page: memoryview | None = None
        self.ram: ForeignRam
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"XenDomain(domid={self.domid}, mem_size={self.mem_size:#x})"

    # --- setup -----------------------------------------------------------------------------
    def _not_found(self, exc: HypervisorCallError, what: str) -> GuestNotFoundError:
        reasons = {
            errno.ESRCH: "Xen has no such domain",
            errno.EPERM: "it is dom0 itself, or dom0 lacks the privilege to serve it",
            errno.EINVAL: "it is not an HVM domain",
            errno.EOPNOTSUPP: "Xen does not run it with HAP, which ioreq-server page types need",
        }
        why = reasons.get(exc.errno, f"{what} failed: {exc}")
        return GuestNotFoundError(NAME, self.domid, why)

    def _open(self) -> None:
        privcmd = self.privcmd = Privcmd(self.transport)
        privcmd.restrict(self.domid)
        self.dm = DeviceModelOps(privcmd, self.domid)
        try:
            max_gpfn = self.control.maximum_gpfn(self.domid)
            self.vcpus = self.dm.nr_vcpus()
        except HypervisorCallError as exc:
            raise self._not_found(exc, "reading the domain's size") from exc
        if not 1 <= self.vcpus <= abi.IOREQS_PER_PAGE:
            raise GuestNotFoundError(
                NAME, self.domid, f"it has {self.vcpus} vCPUs; one ioreq page serves 1..128"
            )
        self.ram = ForeignRam(privcmd, self.domid, max_gpfn)
        self.mem_size = self.ram.size
        self.dma = IdentityDma(self.ram, self.host.sysmem,
                               self.backend.frames.alloc(self.ram.pages, align=512),
                               f"xengt:dom{self.domid}")
        self.dma.open()
        try:
            self.server = self.dm.create_ioreq_server(abi.HVM_IOREQSRV_BUFIOREQ_OFF)
        except HypervisorCallError as exc:
            raise self._not_found(exc, "XEN_DMOP_create_ioreq_server") from exc
        self._page_region = privcmd.map_resource(
            self.domid, abi.XENMEM_resource_ioreq_server, self.server,
            abi.XENMEM_resource_ioreq_server_frame_ioreq(0), 1,
        )
        self.page = memoryview(self._page_region)
        self.dm.set_ioreq_server_state(self.server, True)
        evtchn = self.evtchn_file = EventChannels(self.transport)
        evtchn.restrict(self.domid)
        for vcpu in range(self.vcpus):
            remote = int.from_bytes(self.slot(vcpu)[24:28], "little")
            local = evtchn.bind_interdomain(self.domid, remote)
            self.vcpu_of_port[local] = vcpu
            self.port_of_vcpu.append(local)
        try:
            self.dm.map_mem_type_to_ioreq_server(self.server, abi.XEN_DMOP_IOREQ_MEM_ACCESS_WRITE)
        except HypervisorCallError as exc:
            if exc.errno == errno.EBUSY:
                raise GuestNotFoundError(
                    NAME, self.domid,
                    "another device model already receives this domain's write-tracked pages "
                    "(HVMMEM_ioreq_server belongs to another ioreq server)",
                ) from exc
            raise
        self.thread = EmulationThread(self)
        self.thread.start()

    @property
    def evtchn(self) -> EventChannels:
        assert self.evtchn_file is not None
        return self.evtchn_file

    def slot(self, vcpu: int) -> memoryview:
        assert self.page is not None
        return self.page[vcpu * abi.IOREQ_SIZE : (vcpu + 1) * abi.IOREQ_SIZE]

    # --- life ------------------------------------------------------------------------------
    def alive(self) -> bool:
        """Xen still has the domain and our server in it."""
        if self._gone:
            return False
        try:
            self.dm.get_ioreq_server_info(self.server)
        except HypervisorCallError as exc:
            if exc.errno in GONE:
                return False
            raise
        return True

    def mark_ended(self) -> None:
        self._gone = True
        self._ended.set()

    def wait_ended(self, timeout: float) -> bool:
        return self._ended.wait(timeout)

    def emulation_failed(self, reason: str) -> None:
        """A request could not be emulated: pause this domain (only this one)."""
        self.failures.append(reason)
        log.warning("xengt: emulation error in domain %d, pausing it: %s", self.domid, reason)
        if self.paused_by_error:
            return
        try:
            self.control.pause(self.domid)
            self.paused_by_error = True
        except HypervisorCallError as exc:
            log.warning("xengt: could not pause domain %d: %s", self.domid, exc)

    def _quietly(self, what: str, call: Any, *args: Any) -> None:
        """A teardown step: a domain that is gone has nothing left to undo."""
        try:
            call(*args)
        except HypervisorCallError as exc:
            if exc.errno in GONE:
                self._gone = True
                return
            log.warning("xengt: %s of domain %d failed: %s", what, self.domid, exc)

    def close(self) -> None:
        """Release everything the backend set up; destroy the domain if it created it."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
        # neither step holds the lock throughout: the emulation thread may be waiting
        # for it inside a hook the core calls, and stop() waits for that thread
        self.detach()
        if self.thread is not None:
            self.thread.stop()
        with self.lock:
            dm, server = getattr(self, "dm", None), getattr(self, "server", None)
            if dm is not None and server is not None and not self._gone:
                self._quietly("releasing HVMMEM_ioreq_server", dm.map_mem_type_to_ioreq_server,
                              server, 0)
                self._quietly("disabling the ioreq server", dm.set_ioreq_server_state,
                              server, False)
                self._quietly("destroying the ioreq server", dm.destroy_ioreq_server, server)
            if self.evtchn_file is not None:
                self.evtchn_file.close()
            if self.page is not None:
                self.page.release()
                close_region(self._page_region)
            if getattr(self, "dma", None) is not None:
                self.dma.close()
            if getattr(self, "ram", None) is not None:
                self.ram.close()
            if self.privcmd is not None:
                self.privcmd.close()
            self.backend.forget(self)
            if self.owned:
                self.backend.destroy_owned(self.domid)
            self._ended.set()

    # --- GuestVm -----------------------------------------------------------------------------
    def held(self) -> HeldResources:
        h = self.handle
        if h is None:
            return HeldResources()
        return HeldResources(
            page_tracks=len(h.tracked), dma_maps=h.dma.maps, dma_pins=h.dma.pins,
            trap_areas=len(h.traps), gfn_maps=len(h.maps),
        )

    def port(self, vcpu: int = 0) -> GuestPort:
        if self._closed:
            raise VgpuStateError(f"xengt domain {self.domid} is closed")
        if self.handle is None:
            raise VgpuStateError(
                f"xengt domain {self.domid} has no vGPU attached; attach one before using "
                "its guest port"
            )
        return self.backend.guest_port(self, vcpu)

    # --- vGPU binding ----------------------------------------------------------------------------
    def attach(self, vgpu: Any) -> XengtHandle:
        with self.lock:
            if self._closed:
                raise VgpuStateError(f"cannot attach a vGPU to closed xengt domain {self.domid}")
            if self.handle is not None:
                raise VgpuStateError(
                    f"domain {self.domid} already has vGPU {self.handle.vgpu.id} attached; "
                    "one vGPU per domain, as XenGT"
                )
            att = Attachment(vgpu=vgpu, ops=self.host.ops, sysmem=self.host.sysmem)
            handle = XengtHandle(self, att, self.dma)
            try:
                self.dm.map_io_range(self.server, abi.XEN_DMOP_IO_RANGE_PCI, self.sbdf, self.sbdf)
            except HypervisorCallError as exc:
                if exc.errno == errno.EEXIST:
                    raise AddressSpaceError(
                        f"PCI 00:02.0 of domain {self.domid} is already claimed by this server"
                    ) from exc
                raise
            self.handle = handle
            self.attachment = att
            return handle

    def detach(self) -> None:
        """Release every track, trap, map and DMA reference; stop routing 00:02.0."""
        with self.lock:
            h = self.handle
            if h is None:
                return
            h.attachment.revoke()
            self.attachment = None
            self.handle = None
            dm = self.dm
            self._quietly("unclaiming 00:02.0", dm.unmap_io_range, self.server,
                          abi.XEN_DMOP_IO_RANGE_PCI, self.sbdf, self.sbdf)
            for start, end in h.traps:
                self._quietly("removing a BAR0 trap", dm.unmap_io_range, self.server,
                              abi.XEN_DMOP_IO_RANGE_MEMORY, start, end - 1)
            h.traps.clear()
            for gfn, mfn, nr in h.maps:
                self._unmap_frames(h, gfn, mfn, nr)
            h.maps.clear()
            for first, nr in _runs(sorted(h.tracked)):
                self._quietly("releasing tracked pages", dm.set_mem_type, first, nr,
                              abi.HVMMEM_ram_rw)
            h.tracked.clear()
            h.dma.release()

    def check_live(self, handle: XengtHandle) -> None:
        if handle.domain is not self or self.handle is not handle or not handle.live:
            raise VgpuStateError(
                f"vGPU {handle.vgpu.id} was detached from xengt domain {self.domid}; "
                "its handle cannot be used anymore"
            )

    # --- page tracking -----------------------------------------------------------------------------
    def track(self, handle: XengtHandle, gfns: list[int]) -> None:
        """Type pages ``HVMMEM_ioreq_server``: all of them, or (on error) none."""
        with self.lock:
            self.check_live(handle)
            for gfn in gfns:
                self.ram.check_gfn(gfn)
            seen: set[int] = set()
            for gfn in gfns:
                if gfn in handle.tracked or gfn in seen:
                    raise PageTrackError(
                        f"guest frame {gfn:#x} of domain {self.domid} is already write-tracked "
                        "(or listed twice); no page was tracked"
                    )
                seen.add(gfn)
            done: list[tuple[int, int]] = []
            try:
                for first, nr in _runs(sorted(seen)):
                    done.append((first, nr))
                    self.dm.set_mem_type(first, nr, abi.HVMMEM_ioreq_server)
            except HypervisorCallError as exc:
                for first, nr in done:  # ram_rw -> ram_rw is allowed: undo the whole run
                    self._quietly("undoing page tracks", self.dm.set_mem_type, first, nr,
                                  abi.HVMMEM_ram_rw)
                raise PageTrackError(
                    f"Xen refused to write-track frames of domain {self.domid}: {exc}"
                ) from exc
            handle.tracked |= seen

    def untrack(self, handle: XengtHandle, gfn: int) -> None:
        with self.lock:
            if self.handle is not handle or not handle.live:
                return  # released with the vGPU already
            if gfn not in handle.tracked:
                raise PageTrackError(f"guest frame {gfn:#x} of domain {self.domid} is not write-tracked")
            try:
                self.dm.set_mem_type(gfn, 1, abi.HVMMEM_ram_rw)
            except HypervisorCallError as exc:
                raise PageTrackError(f"Xen refused to stop tracking {gfn:#x}: {exc}") from exc
            handle.tracked.discard(gfn)

    # --- BAR0 trap and aperture ---------------------------------------------------------------------
    def set_trap(self, handle: XengtHandle, start: int, end: int, map: bool) -> None:
        with self.lock:
            self.check_live(handle)
            if not 0 <= start < end:
                raise ValueError(f"trap area [{start:#x}, {end:#x}) is empty or negative")
            if map:
                for s, e in handle.traps + [(lo, hi) for lo, hi, _ in handle.attachment.aperture]:
                    if start < e and s < end:
                        raise AddressSpaceError(
                            f"trap area [{start:#x}, {end:#x}) overlaps [{s:#x}, {e:#x}) of "
                            f"domain {self.domid}; unmap the old one first"
                        )
                att = handle.attachment
                # bound per placement: the accessors take the vGPU's lock as it is now
                att.read, att.write = att.ops.mmio_accessors(att.vgpu)
                try:
                    self.dm.map_io_range(self.server, abi.XEN_DMOP_IO_RANGE_MEMORY, start, end - 1)
                except HypervisorCallError as exc:
                    raise AddressSpaceError(
                        f"Xen refused to trap [{start:#x}, {end:#x}) of domain {self.domid}: {exc}"
                    ) from exc
                handle.traps.append((start, end))
            else:
                if (start, end) not in handle.traps:
                    raise AddressSpaceError(
                        f"domain {self.domid} has no trap area [{start:#x}, {end:#x}) to unmap"
                    )
                handle.traps.remove((start, end))
                self._quietly("removing a BAR0 trap", self.dm.unmap_io_range, self.server,
                              abi.XEN_DMOP_IO_RANGE_MEMORY, start, end - 1)
            handle.attachment.traps = list(handle.traps)

    def map_frames(self, handle: XengtHandle, gfn: int, mfn: int, nr: int, map: bool) -> None:
        with self.lock:
            self.check_live(handle)
            if gfn < 0 or mfn < 0 or nr <= 0:
                raise ValueError(f"bad gfn map: gfn {gfn:#x}, mfn {mfn:#x}, {nr} pages")
            if not map:
                if (gfn, mfn, nr) not in handle.maps:
                    raise AddressSpaceError(
                        f"domain {self.domid} has no mapping of {nr} host frames at {mfn:#x} "
                        f"to guest frame {gfn:#x} to unmap"
                    )
                handle.maps.remove((gfn, mfn, nr))
                self._unmap_frames(handle, gfn, mfn, nr)
                return
            for g, _m, n in handle.maps:
                if gfn < g + n and g < gfn + nr:
                    raise AddressSpaceError(
                        f"guest frames [{gfn:#x}, {gfn + nr:#x}) overlap the mapping at "
                        f"[{g:#x}, {g + n:#x}) of domain {self.domid}; unmap it first"
                    )
            if gfn < self.ram.pages:
                raise AddressSpaceError(
                    f"guest frames [{gfn:#x}, {gfn + nr:#x}) of domain {self.domid} are RAM"
                )
            try:
                self._map_frames(handle, gfn, mfn, nr)
            except HypervisorCallError as exc:
                raise AddressSpaceError(
                    f"Xen refused to map {nr} frames at {mfn:#x} to guest frame {gfn:#x} of "
                    f"domain {self.domid}: {exc}"
                ) from exc
            handle.maps.append((gfn, mfn, nr))

    def _map_frames(self, handle: XengtHandle, gfn: int, mfn: int, nr: int) -> None:
        if self.backend.aperture == "map":
            self.control.iomem_permission(self.domid, mfn, nr, True)
            try:
                self.control.memory_mapping(self.domid, gfn, mfn, nr, True)
            except HypervisorCallError:
                self.control.iomem_permission(self.domid, mfn, nr, False)
                raise
            return
        start, end = gfn << abi.PAGE_SHIFT, (gfn + nr) << abi.PAGE_SHIFT
        self.dm.map_io_range(self.server, abi.XEN_DMOP_IO_RANGE_MEMORY, start, end - 1)
        handle.attachment.aperture.append((start, end, mfn))

    def _unmap_frames(self, handle: XengtHandle, gfn: int, mfn: int, nr: int) -> None:
        if self.backend.aperture == "map":
            self._quietly("unmapping aperture frames", self.control.memory_mapping, self.domid,
                          gfn, mfn, nr, False)
            self._quietly("revoking iomem permission", self.control.iomem_permission,
                          self.domid, mfn, nr, False)
            return
        start, end = gfn << abi.PAGE_SHIFT, (gfn + nr) << abi.PAGE_SHIFT
        handle.attachment.aperture = [a for a in handle.attachment.aperture if a[0] != start]
        self._quietly("removing an aperture trap", self.dm.unmap_io_range, self.server,
                      abi.XEN_DMOP_IO_RANGE_MEMORY, start, end - 1)

    # --- interrupts and pause ------------------------------------------------------------------------
    def inject_msi(self, handle: XengtHandle, address: int, data: int) -> None:
        """``XEN_DMOP_inject_msi``. Xen's vLAPIC is the queue: a vector already
        pending in a vCPU's IRR absorbs the same message again, so a domain holds
        at most one pending message per vector and vCPU (240 legal vectors, fewer
        than ``MAX_PENDING_MSIS``) and the backend keeps none. A message Xen
        refuses to deliver is dropped and counted (``msis_refused``)."""
        self.check_live(handle)
        try:
            self.dm.inject_msi(address, data)
        except HypervisorCallError as exc:
            if exc.errno not in MSI_UNDELIVERABLE:
                raise
            self.msis_refused += 1
            if self.msis_refused == 1:
                log.warning(
                    "xengt: Xen does not deliver MSI address %#x data %#x to domain %d (%s): "
                    "a message no vCPU takes (or for a domain that is gone) is lost, as on "
                    "hardware; later ones are only counted (msis_refused)",
                    address, data, self.domid, os.strerror(exc.errno),
                )

    def pause(self) -> None:
        self.control.pause(self.domid)

    def unpause(self) -> None:
        self.control.unpause(self.domid)


def _runs(gfns: list[int]) -> list[tuple[int, int]]:
    """Sorted frames as (first, count) runs of consecutive frames."""
    runs: list[tuple[int, int]] = []
    for gfn in gfns:
        if runs and runs[-1][0] + runs[-1][1] == gfn:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((gfn, 1))
    return runs
