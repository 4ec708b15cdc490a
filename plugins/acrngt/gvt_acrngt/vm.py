"""One ACRN User VM as the acrngt backend serves it.

An :class:`AcrnGuestVm` holds the VM's HSM file, its RAM and request buffer
(memfds mapped here), the request loop and, once a vGPU is attached, what the
backend set up for it in the VM's EPT and in the host's system memory:

* write-tracked pages: each remapped read-and-execute only (``UNSET_MEMSEG``
  then an MMIO ``SET_MEMSEG`` of the page's own frame with R|X), so a guest
  store exits as a WP request instead of landing; untracking maps it R|W|X
  again. The upstream HSM has no write-protect ioctl and makes every MMIO
  segment uncached, so a page once tracked stays mapped UC (the only way back
  to WB, a RAM segment, costs one of the VM's 256 mapping slots);
* the aperture slice (``map_gfn_to_mfn``) and the OpRegion (at
  ``ACRN_GUEST_OPREGION_GPA``) as MMIO segments, R|W|X, uncached;
* PV MMIO: the vGPU's register pages mapped R|X over the guest's BAR0
  registers, except the PVINFO page, which stays trapped;
* trap areas: no EPT change at all (nothing is mapped there, so every access
  exits), only the router's ranges;
* DMA maps (:class:`~gvt_acrngt.dma.IdentityDma`).

Everything a hook maps is checked first against everything else this VM has
mapped (and its RAM), so a guest that programs a BAR over its RAM or over
another BAR gets :class:`~gvt_core.errors.AddressSpaceError` (the core counts
it) and never an EPT change that would remove its own memory.

A VM comes from ``create_vm`` (the backend is its launcher: it creates,
starts, pauses and destroys it) or from ``open_vm`` (a launcher handed it
over: see :mod:`gvt_acrngt.handover`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from gvt_acrngt import abi
from gvt_acrngt.dma import IdentityDma
from gvt_acrngt.handover import GvtEnd
from gvt_acrngt.hsm import HsmFile
from gvt_acrngt.ioreq import RequestLoop
from gvt_acrngt.memory import GuestRam, SharedMemory
from gvt_acrngt.router import RequestRouter
from gvt_core.errors import (
    AddressSpaceError,
    HookUnsupportedError,
    HypervisorCallError,
    InvalidGfnError,
    PageTrackError,
    VgpuStateError,
)
from gvt_core.guest.port import GuestPort, HeldResources
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE
from gvt_core.mpt.ops import HostContext

if TYPE_CHECKING:
    from gvt_acrngt.emulated.machine import EmulatedAcrn

log = logging.getLogger(__name__)

NAME = "acrngt"
RWX = abi.ACRN_MEM_ACCESS_RWX
RX = abi.ACRN_MEM_ACCESS_READ | abi.ACRN_MEM_ACCESS_EXEC
#: guest-physical addresses this backend maps below (the User VM's EPT covers
#: 48 bits; a guest BAR beyond 512 GiB is refused rather than trusted).
GPA_LIMIT = 1 << 39
#: how long close() waits for the request loop to end.
LOOP_JOIN_S = 10.0


@attrs.define(eq=False)
class AcrnHandle:
    """What ``attach_vgpu`` returns: one vGPU bound to one :class:`AcrnGuestVm`."""

    vm: AcrnGuestVm
    vgpu: Any
    live: bool = True


@attrs.define(eq=False, slots=True)
class Mapping:
    """Guest frames ``[gfn, gfn + pages)`` this backend mapped, and to what."""

    gfn: int
    pages: int
    #: Service VM frames per page (not necessarily consecutive).
    frames: tuple[int, ...]
    what: str

    @property
    def end(self) -> int:
        return self.gfn + self.pages


def runs(gfn: int, frames: Sequence[int]) -> list[tuple[int, int, int]]:
    """(first gfn, first frame, pages) for each run of consecutive frames."""
    out: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(frames) + 1):
        if i == len(frames) or int(frames[i]) != int(frames[i - 1]) + 1:
            out.append((gfn + start, int(frames[start]), i - start))
            start = i
    return out


class AcrnGuestVm:
    """A User VM this backend serves (implements :class:`gvt_core.guest.port.GuestVm`)."""

    def __init__(
        self,
        host: HostContext,
        hsm: HsmFile,
        vmid: int,
        vcpu_num: int,
        ram: GuestRam,
        ioreq: SharedMemory,
        name: str,
        *,
        owned: bool,
        machine: EmulatedAcrn | None = None,
        link: GvtEnd | None = None,
        on_close: Callable[[AcrnGuestVm], None] = lambda vm: None,
    ) -> None:
        self.host = host
        self.hsm = hsm
        self.vm_id = vmid
        self.vcpu_num = vcpu_num
        self.ram = ram
        self.mem_size = ram.size
        self.ioreq = ioreq
        self.name = name
        self.owned = owned
        self.machine = machine
        self.link = link
        self.on_close = on_close
        self.lock = threading.RLock()
        self.frames = hsm.transport.frames_of(ram.address, ram.size >> PAGE_SHIFT)
        self.buffer = abi.acrn_io_request_buffer.from_buffer(ioreq.map)
        self.router = RequestRouter(ram)
        self.handle: AcrnHandle | None = None
        self.dma: IdentityDma | None = None
        self.tracked: set[int] = set()
        self.trap_areas: list[tuple[int, int]] = []
        self.gfn_maps: list[Mapping] = []
        self.opregion: list[Mapping] = []
        self.pvmmio: list[tuple[tuple[int, int], list[Mapping]]] = []
        self.failures: list[str] = []
        self.closed = False
        self._closing = False
        self._ended = threading.Event()
        self.end_reason = ""
        self.loop = RequestLoop(hsm, self.buffer, vmid, vcpu_num, self.router, f"vm{vmid}",
                                self._failed, self._loop_ended)

    def __repr__(self) -> str:
        return f"AcrnGuestVm(vmid={self.vm_id}, name={self.name!r}, mem_size={self.mem_size:#x})"

    # --- life ------------------------------------------------------------------------------
    def serve(self) -> None:
        """Become the VM's default ioreq client and start the request loop."""
        self.hsm.create_client()
        self.loop.start()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def _loop_ended(self, reason: str) -> None:
        if not self._closing:
            self.end_reason = reason
            self._ended.set()

    def _failed(self, reason: str) -> None:
        self.failures.append(reason)
        log.warning("acrngt User VM %d: %s", self.vm_id, reason)
        handle = self.handle
        if handle is not None and handle.live:
            try:
                self.host.ops.emulation_failed(handle.vgpu, reason)
            except Exception:  # the core may be gone; the request was answered anyway
                log.exception("acrngt: reporting an emulation error failed")

    def wait_ended(self, timeout: float) -> bool:
        return self._ended.wait(timeout)

    @property
    def _talk(self) -> bool:
        """Whether the VM's EPT can still be changed (a destroyed VM's cannot: its
        bookkeeping is dropped without ioctls that would only fail)."""
        return not self._ended.is_set()

    def close(self) -> None:
        """Owned VM: pause, destroy, release. Handed-over VM: stop serving it (pausing it
        first when it still runs: it cannot run without its device model) and give it back."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            self._closing = True
            if self.handle is not None:
                self.detach()
            alive = not self._ended.is_set()
            paused = False
            try:
                if alive:
                    if self.owned:
                        self.hsm.pause_vm()
                        self.hsm.destroy_vm()  # destroys our client: the loop ends
                    else:
                        self.hsm.pause_vm()
                        paused = True
                        self.hsm.clear_requests()
                        self.hsm.destroy_client()
            except HypervisorCallError as exc:
                log.warning("acrngt: tearing User VM %d down: %s", self.vm_id, exc)
                if self.loop.alive:
                    self._destroy_client_quietly()
        self.loop.join(LOOP_JOIN_S)
        if self.link is not None:
            self.link.bye(paused)
            self.link.close()
        self.hsm.close()
        self.ram.close()
        self.ioreq.close()
        if not self.end_reason:
            self.end_reason = "closed by gvt"
        self._ended.set()
        self.on_close(self)

    def _destroy_client_quietly(self) -> None:
        with contextlib.suppress(HypervisorCallError):
            self.hsm.destroy_client()

    # --- GuestVm --------------------------------------------------------------------------
    def held(self) -> HeldResources:
        dma = self.dma
        return HeldResources(
            page_tracks=len(self.tracked),
            dma_maps=dma.maps if dma is not None else 0,
            dma_pins=dma.pins if dma is not None else 0,
            trap_areas=len(self.trap_areas),
            gfn_maps=len(self.gfn_maps) + (1 if self.opregion else 0),
            pvmmio_maps=len(self.pvmmio),
        )

    def port(self, vcpu: int = 0) -> GuestPort:
        if self.closed:
            raise VgpuStateError(f"ACRN User VM {self.vm_id} ({self.name}) is closed")
        if self.handle is None:
            raise VgpuStateError(
                f"ACRN User VM {self.vm_id} ({self.name}) has no vGPU attached; attach one "
                "(create a vGPU for it) before using its guest port"
            )
        if self.machine is None:
            raise HookUnsupportedError(
                NAME, "GuestVm.port",
                f"User VM {self.vm_id} runs on the ACRN hypervisor; its CPUs are not driven "
                "from gvt (only guests of the emulated ACRN have a port)",
            )
        return self.machine.port(self.vm_id, self.mem_size, vcpu)

    # --- binding --------------------------------------------------------------------------------
    def attach(self, vgpu: Any) -> AcrnHandle:
        with self.lock:
            if self.closed or self._ended.is_set():
                raise VgpuStateError(
                    f"cannot attach a vGPU to ACRN User VM {self.vm_id}: it "
                    f"{'is closed' if self.closed else 'has ended (' + self.end_reason + ')'}"
                )
            if self.handle is not None:
                raise VgpuStateError(
                    f"ACRN User VM {self.vm_id} already has vGPU {self.handle.vgpu.id}; "
                    "AcrnGT gives a User VM one vGPU, destroy it first"
                )
            self.dma = IdentityDma(self.host.sysmem, self.ram, self.frames,
                                   owner=f"acrngt:vm{self.vm_id}")
            self.handle = AcrnHandle(self, vgpu)
            self.router.bind(vgpu, self.host.ops)
            return self.handle

    def detach(self) -> None:
        """Release everything held for the vGPU: tracks, DMA maps, areas, maps."""
        with self.lock:
            handle = self.handle
            if handle is None:
                return
            handle.live = False
            self.router.unbind()
            talk = not self._ended.is_set()
            first: BaseException | None = None
            for step in (
                lambda: self._untrack(sorted(self.tracked), talk),
                lambda: self._unmap_all(talk),
            ):
                try:
                    step()
                except HypervisorCallError as exc:
                    first = first or exc
            self.tracked.clear()
            self.trap_areas.clear()
            if self.dma is not None:
                self.dma.release()
            self.dma = None
            self.handle = None
            if first is not None and talk:
                raise first

    def _unmap_all(self, talk: bool) -> None:
        """Remove every mapping, each on its own: one that fails must not leave the
        others (PV MMIO pages of a register file about to be freed) in the EPT."""
        maps = self.gfn_maps + self.opregion + [m for _, ms in self.pvmmio for m in ms]
        self.gfn_maps, self.opregion, self.pvmmio = [], [], []
        if not talk:
            return
        first: HypervisorCallError | None = None
        for m in maps:
            try:
                self.hsm.unset(m.gfn << PAGE_SHIFT, m.pages << PAGE_SHIFT)
            except HypervisorCallError as exc:
                first = first or exc
        if first is not None:
            raise first

    def live(self, handle: Any) -> AcrnHandle:
        if type(handle) is not AcrnHandle or handle.vm is not self:
            raise VgpuStateError(f"{handle!r} is not a handle of ACRN User VM {self.vm_id}")
        if not handle.live:
            raise VgpuStateError(
                f"vGPU {handle.vgpu.id} was detached from ACRN User VM {self.vm_id}; "
                "its handle cannot be used anymore"
            )
        return handle

    # --- guest memory -------------------------------------------------------------------------------
    def check_gfn(self, gfn: int, count: int = 1) -> None:
        pages = self.mem_size >> PAGE_SHIFT
        if not (isinstance(gfn, int | np.integer) and gfn >= 0 and gfn + count <= pages):
            raise InvalidGfnError(int(gfn) if isinstance(gfn, int | np.integer) else -1,
                                  f"outside the RAM of ACRN User VM {self.vm_id} "
                                  f"[0, {pages:#x}) frames")

    def gfn_to_mfn(self, gfn: int) -> int:
        self.check_gfn(gfn)
        return int(self.frames[gfn])

    # --- page tracking -------------------------------------------------------------------------------
    def track(self, gfns: Sequence[int]) -> None:
        """Write-protect guest pages: all of them, or (on error) none."""
        frames = [int(g) for g in gfns]
        for g in frames:
            self.check_gfn(g)
        seen: set[int] = set()
        for g in frames:
            if g in self.tracked or g in seen:
                raise PageTrackError(
                    f"guest frame {g:#x} of ACRN User VM {self.vm_id} is already write-tracked "
                    "(or listed twice); no page was tracked"
                )
            seen.add(g)
        with self.lock:
            done: list[int] = []
            try:
                for gfn, frame, n in self._frame_runs(sorted(seen)):
                    self.tracked.update(range(gfn, gfn + n))
                    done.extend(range(gfn, gfn + n))
                    if self._talk:
                        self._remap(gfn, frame, n, RX)
            except BaseException:
                self.tracked.difference_update(done)
                self._untrack(done, talk=True, forget=False)
                raise

    def untrack(self, gfn: int) -> None:
        with self.lock:
            if gfn not in self.tracked:
                raise PageTrackError(
                    f"guest frame {gfn:#x} of ACRN User VM {self.vm_id} is not write-tracked"
                )
            self._untrack([gfn], talk=self._talk)

    def _untrack(self, gfns: Sequence[int], talk: bool, forget: bool = True) -> None:
        if talk:
            for gfn, frame, n in self._frame_runs(sorted(gfns)):
                self._remap(gfn, frame, n, RWX)
        if forget:
            self.tracked.difference_update(gfns)

    def _frame_runs(self, gfns: Sequence[int]) -> list[tuple[int, int, int]]:
        """(gfn, frame, pages) runs of consecutive gfns backed by consecutive frames."""
        out: list[tuple[int, int, int]] = []
        for g in gfns:
            f = int(self.frames[g])
            if out and out[-1][0] + out[-1][2] == g and out[-1][1] + out[-1][2] == f:
                out[-1] = (out[-1][0], out[-1][1], out[-1][2] + 1)
            else:
                out.append((g, f, 1))
        return out

    def _remap(self, gfn: int, frame: int, pages: int, access: int) -> None:
        """Map guest RAM pages to their own frames with other rights (the page is
        unmapped in between: a vCPU touching it then exits as MMIO, which the router
        serves from RAM)."""
        self.hsm.unset(gfn << PAGE_SHIFT, pages << PAGE_SHIFT)
        self.hsm.set_mmio(gfn << PAGE_SHIFT, frame << PAGE_SHIFT, pages << PAGE_SHIFT, access)

    # --- the guest-physical map -------------------------------------------------------------------------
    def _clash(self, start: int, end: int, *, traps: bool, pv: bool = True) -> str:
        """What ``[start, end)`` (bytes) overlaps among this VM's RAM, its mappings (PV
        MMIO ones when ``pv``) and its trap areas (when ``traps``); empty if nothing."""
        if start < self.mem_size:
            return f"guest RAM [0, {self.mem_size:#x})"
        lo, hi = start >> PAGE_SHIFT, (end + PAGE_SIZE - 1) >> PAGE_SHIFT
        maps = self.gfn_maps + self.opregion
        if pv:
            maps = maps + [m for _, ms in self.pvmmio for m in ms]
        for m in maps:
            if lo < m.end and m.gfn < hi:
                return f"the {m.what} at [{m.gfn << PAGE_SHIFT:#x}, {m.end << PAGE_SHIFT:#x})"
        if traps:
            for s, e in self.trap_areas:
                if start < e and s < end:
                    return f"the trap area [{s:#x}, {e:#x})"
        return ""

    @staticmethod
    def _check_range(start: int, end: int, what: str) -> None:
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= GPA_LIMIT):
            raise AddressSpaceError(
                f"{what} [{start:#x}, {end:#x}) is empty or beyond the {GPA_LIMIT >> 30} GiB "
                "guest-physical range this backend maps"
            )

    def set_trap_area(self, start: int, end: int, map: bool) -> None:
        self._check_range(start, end, "trap area")
        with self.lock:
            if map:
                for s, e in self.trap_areas:
                    if start < e and s < end:
                        raise AddressSpaceError(
                            f"trap area [{start:#x}, {end:#x}) overlaps [{s:#x}, {e:#x}) of "
                            f"ACRN User VM {self.vm_id}; unmap the old one first"
                        )
                clash = self._clash(start, end, traps=False, pv=False)
                if clash:
                    raise AddressSpaceError(
                        f"trap area [{start:#x}, {end:#x}) overlaps {clash} of ACRN User VM "
                        f"{self.vm_id}: accesses there would never exit"
                    )
                self.trap_areas.append((start, end))
            else:
                try:
                    self.trap_areas.remove((start, end))
                except ValueError:
                    raise AddressSpaceError(
                        f"ACRN User VM {self.vm_id} has no trap area [{start:#x}, {end:#x})"
                    ) from None
            self.router.set_ranges(self.trap_areas, [r for r, _ in self.pvmmio])

    def map_frames(self, gfn: int, mfn: int, nr: int, map: bool) -> None:
        """``map_gfn_to_mfn``: host frames ``[mfn, mfn + nr)`` at guest ``gfn``."""
        if not all(isinstance(v, int) for v in (gfn, mfn, nr)) or gfn < 0 or mfn < 0 or nr <= 0:
            raise AddressSpaceError(f"bad frame map: gfn {gfn}, mfn {mfn}, {nr} pages")
        start, end = gfn << PAGE_SHIFT, (gfn + nr) << PAGE_SHIFT
        self._check_range(start, end, "frame map")
        with self.lock:
            if map:
                clash = self._clash(start, end, traps=True)
                if clash:
                    raise AddressSpaceError(
                        f"guest frames [{gfn:#x}, {gfn + nr:#x}) overlap {clash} of ACRN User VM "
                        f"{self.vm_id}; unmap it first"
                    )
                if self._talk:
                    self.hsm.set_mmio(start, mfn << PAGE_SHIFT, nr << PAGE_SHIFT, RWX)
                self.gfn_maps.append(Mapping(gfn, nr, tuple(range(mfn, mfn + nr)), "frame map"))
                return
            for i, m in enumerate(self.gfn_maps):
                if (m.gfn, m.pages, m.frames[0]) == (gfn, nr, mfn):
                    if self._talk:
                        self.hsm.unset(start, nr << PAGE_SHIFT)
                    del self.gfn_maps[i]
                    return
            raise AddressSpaceError(
                f"ACRN User VM {self.vm_id} has no mapping of {nr} host frames at {mfn:#x} to "
                f"guest frame {gfn:#x} to unmap"
            )

    def set_opregion(self, frames: Sequence[int]) -> int:
        """Map the OpRegion's host frames at the guest address AcrnGT uses."""
        frames = tuple(int(f) for f in frames)
        if not frames or any(f < 0 for f in frames):
            raise ValueError(f"set_opregion needs the OpRegion's host frames, got {frames}")
        gpa = regs.ACRN_GUEST_OPREGION_GPA
        end = gpa + len(frames) * PAGE_SIZE
        with self.lock:
            if self.opregion:
                raise AddressSpaceError(f"ACRN User VM {self.vm_id} already has its OpRegion")
            clash = self._clash(gpa, end, traps=True)
            if clash:
                raise AddressSpaceError(
                    f"the OpRegion at [{gpa:#x}, {end:#x}) overlaps {clash} of ACRN User VM "
                    f"{self.vm_id}"
                )
            done: list[Mapping] = []
            try:
                for g, f, n in runs(gpa >> PAGE_SHIFT, frames):
                    self.hsm.set_mmio(g << PAGE_SHIFT, f << PAGE_SHIFT, n << PAGE_SHIFT, RWX)
                    done.append(Mapping(g, n, tuple(range(f, f + n)), "OpRegion"))
            except BaseException:
                for m in done:
                    self.hsm.unset(m.gfn << PAGE_SHIFT, m.pages << PAGE_SHIFT)
                raise
            self.opregion = done
            return gpa

    def set_pvmmio(self, vgpu: Any, start: int, end: int, map: bool) -> None:
        """Map the vGPU's register pages R|X over ``[start, end)`` (the PVINFO page
        stays unmapped, so it traps), or take them away again."""
        if start % PAGE_SIZE or end % PAGE_SIZE or end - start > regs.MMIO_SIZE:
            raise AddressSpaceError(
                f"PV MMIO range [{start:#x}, {end:#x}) is not whole pages of the "
                f"{regs.MMIO_SIZE >> 20} MiB register range"
            )
        self._check_range(start, end, "PV MMIO range")
        with self.lock:
            if not map:
                for i, (rng, maps) in enumerate(self.pvmmio):
                    if rng == (start, end):
                        for m in maps if self._talk else ():
                            self.hsm.unset(m.gfn << PAGE_SHIFT, m.pages << PAGE_SHIFT)
                        del self.pvmmio[i]
                        self.router.set_ranges(self.trap_areas, [r for r, _ in self.pvmmio])
                        return
                raise AddressSpaceError(
                    f"ACRN User VM {self.vm_id} has no PV MMIO range [{start:#x}, {end:#x})"
                )
            clash = self._clash(start, end, traps=False)
            if clash:
                raise AddressSpaceError(
                    f"PV MMIO range [{start:#x}, {end:#x}) overlaps {clash} of ACRN User VM "
                    f"{self.vm_id}"
                )
            vreg = self.host.ops.vreg_pages(vgpu)
            if len(vreg) < end - start:
                raise AddressSpaceError(
                    f"the vGPU's register file has {len(vreg)} bytes, the range {end - start}"
                )
            address = _buffer_address(vreg)
            pages = (end - start) >> PAGE_SHIFT
            frames = self.hsm.transport.frames_of(address, pages)
            pvinfo = regs.VGT_PVINFO_PAGE >> PAGE_SHIFT
            maps: list[Mapping] = []
            try:
                for lo, hi in ((0, min(pvinfo, pages)), (pvinfo + 1, pages)):
                    if hi <= lo:
                        continue
                    for g, f, n in runs((start >> PAGE_SHIFT) + lo, frames[lo:hi]):
                        self.hsm.set_mmio(g << PAGE_SHIFT, f << PAGE_SHIFT, n << PAGE_SHIFT, RX)
                        maps.append(Mapping(g, n, tuple(range(f, f + n)), "PV MMIO"))
            except BaseException:
                for m in maps:
                    self.hsm.unset(m.gfn << PAGE_SHIFT, m.pages << PAGE_SHIFT)
                raise
            self.pvmmio.append(((start, end), maps))
            self.router.set_ranges(self.trap_areas, [r for r, _ in self.pvmmio])


def _buffer_address(view: memoryview) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))
