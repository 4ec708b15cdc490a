"""A simulated guest: RAM, its guest-physical address map, its interrupt queue.

The guest-physical address space of a :class:`SimVm`, in the order an access
is routed:

1. trap areas (``set_trap_area``, the vGPU's BAR0) and PV-MMIO ranges: the
   access goes to the core's ``emulate_mmio_read/write``;
2. gfn maps (``map_gfn_to_mfn``, ``set_opregion``): host frames, resolved
   through the host's system memory at each access (the aperture window
   follows the host GGTT);
3. RAM ``[0, mem_size)``: a store into a write-tracked page traps to the
   core's ``page_track_write``;
4. anything else is an unassigned bus address: loads read all ones, stores
   are dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from gvt_core.errors import AddressSpaceError, PageTrackError, VgpuStateError
from gvt_core.guest.port import MAX_PENDING_MSIS, HeldResources
from gvt_core.hw.sysmem import PAGE_SHIFT
from gvt_core.mpt.info import DmaMode, PageTrackMode
from gvt_core.mpt.ops import HostContext, Msi
from gvt_sim.dma import DmaSpace
from gvt_sim.memory import FrameAllocator, GuestRam
from gvt_sim.port import SimGuestPort

if TYPE_CHECKING:
    from gvt_sim.backend import SimBackend


@attrs.define(eq=False, slots=True)
class GfnMap:
    """Guest frames ``[gfn, gfn + nr)`` backed by host frames."""

    gfn: int
    nr: int
    #: first host frame of a contiguous mapping (``map_gfn_to_mfn``).
    mfn: int
    #: per-page host frames of a scattered mapping (``set_opregion``), else empty.
    frames: tuple[int, ...] = ()

    def frame(self, gfn: int) -> int:
        i = gfn - self.gfn
        return self.frames[i] if self.frames else self.mfn + i


@attrs.define(eq=False)
class SimHandle:
    """What ``attach_vgpu`` returns: one vGPU bound to one :class:`SimVm`."""

    vm: SimVm
    vgpu: Any
    live: bool = True
    #: display ports ``set_edid`` was called for.
    edid_ports: set[int] = attrs.field(factory=set)
    #: where ``set_opregion`` placed the OpRegion, or None.
    opregion_gpa: int | None = None


def _overlaps(start: int, end: int, ranges: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    for s, e in ranges:
        if start < e and s < end:
            return s, e
    return None


class SimVm:
    """One simulated guest (implements :class:`gvt_core.guest.port.GuestVm`)."""

    def __init__(
        self,
        backend: SimBackend,
        host: HostContext,
        vm_id: int,
        mem_size: int,
        name: str,
        frames: FrameAllocator,
        iova: FrameAllocator,
    ) -> None:
        self.backend = backend
        self.host = host
        self.vm_id = vm_id
        self.name = name
        self.ram = GuestRam(mem_size, frames.alloc(mem_size >> PAGE_SHIFT, align=512))
        self.mem_size = mem_size
        self.page_track_mode: PageTrackMode = backend.page_track_mode
        self.dma = DmaSpace(
            self.ram, backend.dma_mode, host.sysmem, iova, label=f"sim-vm{vm_id} ({name})"
        )
        self.tracked: set[int] = set()
        self.trap_areas: list[tuple[int, int]] = []
        self.pvmmio: list[tuple[int, int]] = []
        self.gfn_maps: list[GfnMap] = []
        self.handle: SimHandle | None = None
        self.paused = False
        self.closed = False
        self._ended = threading.Event()
        #: undelivered MSIs, oldest first; a message already waiting is not queued
        #: again (it coalesces, as the LAPIC's IRR does), and at most
        #: MAX_PENDING_MSIS distinct ones wait.
        self._msis: dict[Msi, None] = {}
        self.msis_coalesced = 0
        #: distinct MSIs dropped because MAX_PENDING_MSIS were already waiting.
        self.msis_dropped = 0
        self._msi_ready = threading.Condition()
        self._port = SimGuestPort(self)

    def __repr__(self) -> str:
        return f"SimVm(vm_id={self.vm_id}, name={self.name!r}, mem_size={self.mem_size:#x})"

    @property
    def dma_mode(self) -> DmaMode:
        return self.dma.mode

    # --- GuestVm -------------------------------------------------------------------------
    def held(self) -> HeldResources:
        return HeldResources(
            page_tracks=len(self.tracked),
            dma_maps=self.dma.maps,
            dma_pins=self.dma.pins,
            trap_areas=len(self.trap_areas),
            gfn_maps=len(self.gfn_maps),
            pvmmio_maps=len(self.pvmmio),
        )

    def port(self) -> SimGuestPort:
        if self.closed:
            raise VgpuStateError(f"sim VM {self.vm_id} ({self.name}) is closed")
        if self.handle is None:
            raise VgpuStateError(
                f"sim VM {self.vm_id} ({self.name}) has no vGPU attached; attach one "
                "(create a vGPU for it) before using its guest port"
            )
        return self._port

    def close(self) -> None:
        """Tear the guest down: release its vGPU binding, then its RAM."""
        if self.closed:
            return
        if self.handle is not None:
            self.detach()
        self.closed = True
        self._port.refuse(f"sim VM {self.vm_id} ({self.name}) is closed")
        self.ram.release()
        self.backend.forget_vm(self)
        self._ended.set()

    def wait_ended(self, timeout: float) -> bool:
        """A sim guest ends only when closed: it has no CPU of its own to shut down."""
        return self._ended.wait(timeout)

    # --- vGPU binding -------------------------------------------------------------------------
    def attach(self, vgpu: Any) -> SimHandle:
        if self.closed:
            raise VgpuStateError(f"cannot attach a vGPU to closed sim VM {self.vm_id}")
        if self.handle is not None:
            raise VgpuStateError(
                f"sim VM {self.vm_id} already has vGPU {self.handle.vgpu.id} attached; "
                "a guest gets one vGPU (as with KVMGT), detach it first"
            )
        self.handle = SimHandle(self, vgpu)
        self._port.rebind()
        return self.handle

    def detach(self) -> None:
        """Release everything held for the vGPU: tracks, DMA maps and pins, areas, maps."""
        if self.handle is not None:
            self.handle.live = False
        self.handle = None
        self.tracked.clear()
        self.dma.release()
        self.trap_areas.clear()
        self.pvmmio.clear()
        self.gfn_maps.clear()
        self._port.rebind()

    # --- interrupts -----------------------------------------------------------------------------
    def push_msi(self, msi: Msi) -> None:
        with self._msi_ready:
            if msi in self._msis:
                self.msis_coalesced += 1
                return
            if len(self._msis) >= MAX_PENDING_MSIS:
                self.msis_dropped += 1
                return
            self._msis[msi] = None
            self._msi_ready.notify()

    @property
    def pending_msis(self) -> int:
        return len(self._msis)

    def pop_msi(self, timeout: float) -> Msi | None:
        with self._msi_ready:
            if not self._msis:
                self._msi_ready.wait_for(lambda: bool(self._msis), timeout=max(timeout, 0.0))
            if not self._msis:
                return None
            msi = next(iter(self._msis))
            del self._msis[msi]
            return msi

    # --- pause ------------------------------------------------------------------------------------
    def pause(self) -> None:
        """Stop the vCPUs: guest accesses raise VgpuStateError until :meth:`unpause`.
        Pausing a paused guest changes nothing (the core may pause on each fatal error)."""
        if not self.paused:
            self.paused = True
            self._port.refuse(
                f"sim VM {self.vm_id} ({self.name}) is paused; its vCPUs cannot access anything"
            )

    def unpause(self) -> None:
        if not self.paused or self.closed:
            raise VgpuStateError(f"sim VM {self.vm_id} ({self.name}) is not paused")
        self.paused = False
        self._port.accept()

    # --- page tracking ----------------------------------------------------------------------------
    def enable_track(self, gfn: int) -> None:
        self.ram.check_gfn(gfn)
        if gfn in self.tracked:
            raise PageTrackError(
                f"guest frame {gfn:#x} of sim VM {self.vm_id} is already write-tracked"
            )
        self.tracked.add(gfn)

    def enable_tracks(self, gfns: Sequence[int]) -> None:
        """:meth:`enable_track` for many pages: all tracked, or (on error) none."""
        frames = [int(g) for g in gfns]
        if frames and (min(frames) < 0 or max(frames) >= self.ram.pages):
            for gfn in frames:
                self.ram.check_gfn(gfn)
        fresh = set(frames)
        if len(fresh) != len(frames) or not fresh.isdisjoint(self.tracked):
            seen: set[int] = set()
            for gfn in frames:
                if gfn in self.tracked or gfn in seen:
                    raise PageTrackError(
                        f"guest frame {gfn:#x} of sim VM {self.vm_id} is already "
                        "write-tracked (or listed twice); no page was tracked"
                    )
                seen.add(gfn)
        self.tracked |= fresh

    def disable_track(self, gfn: int) -> None:
        try:
            self.tracked.remove(gfn)
        except KeyError:
            raise PageTrackError(
                f"guest frame {gfn:#x} of sim VM {self.vm_id} is not write-tracked"
            ) from None

    # --- address map ------------------------------------------------------------------------------
    @staticmethod
    def _check_range(start: int, end: int, what: str) -> None:
        if not 0 <= start < end:
            raise ValueError(f"{what} [{start:#x}, {end:#x}) is empty or negative")

    def set_trap_area(self, start: int, end: int, map: bool) -> None:
        self._set_range(self.trap_areas, "trap area", start, end, map)

    def set_pvmmio(self, start: int, end: int, map: bool) -> None:
        self._set_range(self.pvmmio, "PV-MMIO range", start, end, map)

    def _set_range(
        self, ranges: list[tuple[int, int]], what: str, start: int, end: int, map: bool
    ) -> None:
        self._check_range(start, end, what)
        if map:
            clash = _overlaps(start, end, ranges)
            if clash is not None:
                raise AddressSpaceError(
                    f"{what} [{start:#x}, {end:#x}) overlaps [{clash[0]:#x}, {clash[1]:#x}) "
                    f"of sim VM {self.vm_id}; unmap the old one first"
                )
            ranges.append((start, end))
        else:
            try:
                ranges.remove((start, end))
            except ValueError:
                raise AddressSpaceError(
                    f"sim VM {self.vm_id} has no {what} [{start:#x}, {end:#x}) to unmap"
                ) from None
        self._port.rebind()

    def map_frames(self, gfn: int, mfn: int, nr: int, frames: tuple[int, ...] = ()) -> None:
        if gfn < 0 or mfn < 0 or nr <= 0:
            raise ValueError(f"bad gfn map: gfn {gfn:#x}, mfn {mfn:#x}, {nr} pages")
        for m in self.gfn_maps:
            if gfn < m.gfn + m.nr and m.gfn < gfn + nr:
                raise AddressSpaceError(
                    f"guest frames [{gfn:#x}, {gfn + nr:#x}) overlap the mapping at "
                    f"[{m.gfn:#x}, {m.gfn + m.nr:#x}) of sim VM {self.vm_id}; unmap it first"
                )
        self.gfn_maps.append(GfnMap(gfn, nr, mfn, frames))

    def unmap_frames(self, gfn: int, mfn: int, nr: int) -> None:
        for i, m in enumerate(self.gfn_maps):
            if m.gfn == gfn and m.nr == nr and m.mfn == mfn:
                del self.gfn_maps[i]
                return
        raise AddressSpaceError(
            f"sim VM {self.vm_id} has no mapping of {nr} host frames at {mfn:#x} to guest "
            f"frame {gfn:#x} to unmap"
        )

    def host_frame_of(self, gfn: int) -> int:
        """The host frame a gfn map puts at ``gfn``, or -1."""
        for m in self.gfn_maps:
            if m.gfn <= gfn < m.gfn + m.nr:
                return m.frame(gfn)
        return -1
