"""One vGPU: its state, and its creation, reset and destruction sequences (the kernel's vgpu.c).

Creation follows facts 2.3: id and resources, virtual config space from the
golden snapshot, virtual registers (the MMIO layer copies the golden MMIO
state and fills PVINFO from the resources), backend ``attach_vgpu``, GGTT,
OpRegion, ``set_opregion``, then the display (its monitor plugged, which
calls ``set_edid``, its registers routed through the register table's
seams, and the MI_DISPLAY_FLIPs the command scanner takes out of the vGPU's
workloads routed to its flip path). Upstream allocates GM after the
vreg copy; here the resources come first because PVINFO is filled when the
register file is built, and nothing guest-visible happens in between.

Every step that acquires something registers its undo, so a failure part
way leaves nothing behind; destruction undoes everything and the backend
ends holding nothing for the vGPU.
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs

from gvt_core.device.allocator import VgpuResources
from gvt_core.device.display.opregion import OpRegion
from gvt_core.device.execution.submission import VgpuSubmission
from gvt_core.device.memory.g2v import PpgttOwner
from gvt_core.device.memory.page_track import PageTrack
from gvt_core.device.registers.cfg_space import CfgSpace
from gvt_core.device.stats import VgpuStats
from gvt_core.device.types import VgpuType
from gvt_core.errors import VgpuStateError
from gvt_core.hw import regs
from gvt_core.mpt.facade import Mpt

if TYPE_CHECKING:
    from gvt_core.device.display.vdisplay import VirtualDisplay
    from gvt_core.device.gvt import Gvt
    from gvt_core.device.interrupt import VirtualIrq
    from gvt_core.device.memory.ggtt import Ggtt
    from gvt_core.device.registers.mmio import Mmio

__all__ = ["NO_RESOURCES", "IdleVgpu", "Vgpu", "VgpuResources", "VgpuState"]

#: what a destroyed vGPU owns: no graphics memory, no fences.
NO_RESOURCES = VgpuResources(0, 0, 0, 0, ())


class VgpuState(enum.Enum):
    """Life cycle: created inactive, activated for scheduling, destroyed once."""

    INACTIVE = "inactive"
    ACTIVE = "active"
    DESTROYED = "destroyed"


@attrs.define(eq=False, slots=False, repr=False)
class Vgpu:
    """A mediated vGPU. Later layers (execlist, display, scheduler) hang their state here."""

    id: int
    type: VgpuType
    gvt: Gvt
    #: what the caller passed to ``create_vgpu`` (the backend's guest).
    vm: Any
    resources: VgpuResources
    mpt: Mpt
    stats: VgpuStats = attrs.field(factory=VgpuStats)
    #: the per-vGPU lock (kernel ``vgpu_lock``); the host's entry points take it.
    lock: threading.RLock = attrs.field(factory=threading.RLock)
    #: the backend's handle from ``attach_vgpu`` (None before attach).
    handle: Any = None
    cfg: CfgSpace = attrs.field(init=False, default=None)
    mmio: Mmio = attrs.field(init=False, default=None)
    ggtt: Ggtt = attrs.field(init=False, default=None)
    irq: VirtualIrq = attrs.field(init=False, default=None)
    page_track: PageTrack = attrs.field(init=False, default=None)
    ppgtt: PpgttOwner = attrs.field(init=False, default=None)
    opregion: OpRegion | None = attrs.field(init=False, default=None)
    #: the display engine: monitor, AUX, GMBUS, pipes, flips, vblank timers.
    display: VirtualDisplay | None = attrs.field(init=False, default=None)
    #: execlists, workload queues and faults (the execution subsystem).
    execution: VgpuSubmission = attrs.field(init=False, default=None)
    state: VgpuState = attrs.field(init=False, default=VgpuState.INACTIVE)
    #: unsupported guest behaviour seen: MMIO is plain storage, page tracks drop.
    failsafe: bool = attrs.field(init=False, default=False)
    failsafe_reason: str = attrs.field(init=False, default="")
    #: the guest read PVINFO (it is vGPU aware).
    pv_notified: bool = attrs.field(init=False, default=False)
    #: after destroy: what ``resources`` were (``resources`` is then empty).
    freed_resources: VgpuResources | None = attrs.field(init=False, default=None)

    @property
    def active(self) -> bool:
        return self.state is VgpuState.ACTIVE

    @property
    def destroyed(self) -> bool:
        return self.state is VgpuState.DESTROYED

    def enter_failsafe(self, reason: str) -> None:
        """Stop emulating what the guest misuses (facts 7.7); only a DMLR leaves it."""
        if self.failsafe:
            return
        self.failsafe = True
        self.failsafe_reason = reason
        if self.page_track is not None:
            self.page_track.failsafe = True
        if self.execution is not None:
            self.execution.on_failsafe()
        self.mpt.events.gvt_vgpu_failsafe(vgpu=self, reason=reason)

    @contextlib.contextmanager
    def alive_locked(self) -> Iterator[bool]:
        """Hold the vGPU lock; yields False (counted) if the vGPU was destroyed.

        The one way a thread or timer of the device model (vblank, workload
        completion) acts for a vGPU: ``with vgpu.alive_locked() as alive: if
        alive: ...``. After ``destroy_vgpu`` returns it never runs again.
        """
        with self.lock:
            alive = self.state is not VgpuState.DESTROYED
            if not alive:
                self.stats.dead_accesses += 1
            yield alive

    def __repr__(self) -> str:
        return (f"Vgpu(id={self.id}, type={self.type.name}, state={self.state.value}, "
                f"failsafe={self.failsafe}, vm={getattr(self.vm, 'vm_id', '?')})")

    def _require_alive(self, what: str) -> None:
        if self.state is VgpuState.DESTROYED:
            raise VgpuStateError(f"cannot {what} vGPU {self.id}: it was destroyed")

    # --- life cycle (callers hold gvt.lock for create/destroy, vgpu.lock always) -------
    def activate(self) -> None:
        self._require_alive("activate")
        if self.state is VgpuState.ACTIVE:
            raise VgpuStateError(f"vGPU {self.id} is already active; deactivate it first")
        self.state = VgpuState.ACTIVE
        self.execution.activate()
        self.mpt.events.gvt_vgpu_activated(vgpu=self)

    def deactivate(self) -> None:
        self._require_alive("deactivate")
        if self.state is not VgpuState.ACTIVE:
            raise VgpuStateError(f"vGPU {self.id} is not active; activate it first")
        # Scheduling stops here; running workloads finish, nothing new is dispatched.
        self.execution.deactivate()
        self.state = VgpuState.INACTIVE
        self.mpt.events.gvt_vgpu_deactivated(vgpu=self)

    def release(self) -> None:
        """The guest closed the device (VFIO close): stop scheduling; the vGPU stays."""
        self._require_alive("release")
        if self.state is VgpuState.ACTIVE:
            self.deactivate()

    def clear_host_fences(self) -> None:
        """Zero the host fence registers backing this vGPU's virtual fences."""
        for index in self.resources.fences:
            self.gvt.gpu.write_fence(index, 0)

    def reset(self, dmlr: bool, engine_mask: int) -> None:
        """The kernel's ``intel_gvt_reset_vgpu_locked`` (facts 2.3, 7.7).

        * engine reset (a partial mask, not DMLR): submission state of those
          engines only (queued and running work dropped, execlists reset);
        * GT reset (full mask): PPGTT shadows invalidated, registers below
          0x44200 back to golden (PVINFO, above that, keeps its host fields);
        * DMLR: additionally GGTT entries to scratch, host fences cleared, the
          whole register file, virtual interrupts and config space back to
          their initial state, the display's controllers, flips and vblank
          timers too (the monitor stays plugged), failsafe and ``pv_notified``
          cleared.

        Every engine's submission state is reset for a GT reset or DMLR.
        """
        self._require_alive("reset")
        if dmlr or engine_mask & regs.ALL_ENGINES_MASK == regs.ALL_ENGINES_MASK:
            self.ppgtt.invalidate()
            if dmlr:
                self.ggtt.reset()
                self.clear_host_fences()
            self.mmio.reset(dmlr)
            if dmlr:
                self.irq.reset()
                self.cfg.reset()
                if self.display is not None:
                    self.display.reset()
                self.failsafe = False
                self.failsafe_reason = ""
                self.pv_notified = False
                if self.page_track is not None:
                    self.page_track.failsafe = False
        full = dmlr or engine_mask & regs.ALL_ENGINES_MASK == regs.ALL_ENGINES_MASK
        self.execution.reset(regs.ALL_ENGINES_MASK if full else engine_mask)
        self.stats.resets += 1
        self.mpt.events.gvt_vgpu_reset(vgpu=self, dmlr=dmlr, engine_mask=engine_mask)

    def teardown(self) -> None:
        """Release everything the vGPU holds, in the kernel's order, then detach.

        Each step runs even if an earlier one failed; the first error is
        raised at the end so a broken backend cannot leak the rest. The MMIO
        accessors are revoked first and the GGTT refuses host writes once
        released, so nothing that kept a reference (a bound accessor, a vCPU
        blocked on the lock) acts for the vGPU afterwards.
        """
        if self.display is not None:
            self.display.destroy()  # first: no vblank timer acts for the vGPU from here on
        if self.state is VgpuState.ACTIVE:
            self.deactivate()
        self.mmio.revoke()
        # The OpRegion's pages are mapped into the guest (set_opregion) until the
        # backend detaches: they go back to the host's pool only after that, or
        # the guest could write into a page the pool hands to another vGPU.
        steps = [
            self.execution.release if self.execution is not None else None,
            self.ppgtt.release,
            self.ggtt.release if self.ggtt is not None else None,
            self.page_track.release_all if self.page_track is not None else None,
            self.cfg.release,
            self.clear_host_fences,
            lambda: self.gvt.allocator.free(self.id, self.resources),
            lambda: self.mpt.detach_vgpu(self.handle),
            self.opregion.free if self.opregion is not None else None,
        ]
        first: BaseException | None = None
        for step in steps:
            if step is None:
                continue
            try:
                step()
            except Exception as exc:  # keep releasing; report the first failure
                if first is None:
                    first = exc
        self.opregion = None
        # a destroyed vGPU owns nothing: any code that still reaches its handlers
        # finds no fence and no graphics memory of its own to write
        self.freed_resources = self.resources
        self.resources = NO_RESOURCES
        self.state = VgpuState.DESTROYED
        if first is not None:
            raise first


@attrs.define(eq=False)
class IdleVgpu:
    """vGPU id 0: what the scheduler runs when no guest does. Holds no backend resources."""

    gvt: Gvt
    id: int = 0


def create_vgpu(gvt: Gvt, vtype: VgpuType, vm: Any) -> Vgpu:
    """Build one vGPU (facts 2.3); the caller holds ``gvt.lock``."""
    from gvt_core.device.display.vdisplay import VirtualDisplay
    from gvt_core.device.execution.submission import VgpuSubmission
    from gvt_core.device.interrupt import VirtualIrq
    from gvt_core.device.memory.ggtt import Ggtt
    from gvt_core.device.memory.ppgtt import PpgttManager
    from gvt_core.device.registers.mmio import Mmio

    mpt = gvt.mpt
    vgpu_id, resources = gvt.allocator.alloc(vtype)
    with contextlib.ExitStack() as undo:
        undo.callback(gvt.allocator.free, vgpu_id, resources)
        vgpu = Vgpu(id=vgpu_id, type=vtype, gvt=gvt, vm=vm, resources=resources, mpt=mpt)
        vgpu.cfg = CfgSpace(vgpu, gvt.golden_cfg)
        undo.callback(vgpu.cfg.release)
        vgpu.mmio = Mmio(vgpu)
        vgpu.irq = VirtualIrq(vgpu)
        vgpu.handle = mpt.attach_vgpu(vgpu, vm)
        undo.callback(mpt.detach_vgpu, vgpu.handle)
        vgpu.page_track = PageTrack(mpt, vgpu.handle)
        undo.callback(vgpu.page_track.release_all)
        vgpu.ggtt = Ggtt(vgpu)
        undo.callback(vgpu.ggtt.release)
        vgpu.ppgtt = PpgttManager.for_vgpu(vgpu)
        undo.callback(vgpu.ppgtt.release)
        vgpu.execution = VgpuSubmission(vgpu, gvt.scheduler)
        undo.callback(vgpu.execution.release)
        vgpu.mmio.handlers.elsp_sink = vgpu.execution.on_elsp
        vgpu.mmio.handlers.timestamp = gvt.scheduler.timestamp_ticks
        vgpu.opregion = OpRegion.create(gvt.gpu.pages, owner=f"vgpu{vgpu_id}-opregion")
        undo.callback(vgpu.opregion.free)
        placed = mpt.set_opregion(vgpu.handle, vgpu.opregion.frames)
        if placed is not None:
            vgpu.opregion.placed_gpa = placed
            vgpu.cfg.set_asls(placed)
        vgpu.display = VirtualDisplay.for_vgpu(vgpu, gvt.clock)
        undo.callback(vgpu.display.destroy)
        with vgpu.lock:
            vgpu.display.init()  # plugs the type's monitor: set_edid
            route_display(vgpu)
            route_command_flips(vgpu)
        undo.pop_all()
    return vgpu


def route_display(vgpu: Vgpu) -> None:
    """Give the display the registers it owns, through the register table's seams."""
    from gvt_core.device.display.vdisplay import HANDLER_ROUTES, REGISTER_ROUTES

    display, mmio = vgpu.display, vgpu.mmio
    assert display is not None
    for name in HANDLER_ROUTES:
        mmio.attach_handler(name, display.read if name.startswith("r_") else display.write)
    for route in REGISTER_ROUTES:
        mmio.attach_register(route.offset, read=display.read if route.read else None,
                             write=display.write if route.write else None, raw=route.raw)


def route_command_flips(vgpu: Vgpu) -> None:
    """The MI_DISPLAY_FLIPs the command scanner takes out of the vGPU's workloads go
    to its display's flip path when the workload completes (the one flip path:
    plane registers, a synchronous flip latched at the next vblank, flip-done)."""
    from gvt_core.device.display.flips import FlipPlane
    from gvt_core.device.execution.scanner.audit import DisplayFlip, DisplayPlane
    from gvt_core.hw import display_regs as dr

    display = vgpu.display
    assert display is not None

    def flip_sink(flip: DisplayFlip) -> None:
        plane = FlipPlane.PRIMARY if flip.plane is DisplayPlane.PRIMARY else FlipPlane.SPRITE
        display.display_flip(plane, flip.pipe, flip.surface, flip.async_flip,
                             pitch=flip.stride << dr.MI_FLIP_PITCH_SHIFT, tiled=bool(flip.tiled))

    vgpu.execution.flip_sink = flip_sink
