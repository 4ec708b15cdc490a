"""One vGPU's display engine: the pieces of this package put together behind register entry points.

:class:`VirtualDisplay` owns the virtual DP port and its monitor, the four AUX
channels, GMBUS, the flip engine and the vblank timers. The register layer
routes the offsets in :data:`READ_OFFSETS` / :data:`WRITE_OFFSETS` to
:meth:`VirtualDisplay.read` / :meth:`VirtualDisplay.write` (with the vGPU
lock held, as for every handler); every other display register is plain
virtual-register storage. Interrupt events go out through the vGPU's
``raise_event``; register state the guest can see lives in the vreg (through
:class:`~gvt_core.device.display.vregs.RegisterView`) except the AUX and
GMBUS registers, which these controllers own.

Routing (done by ``vgpu.py`` through the register table's seams): the
handler names in :data:`HANDLER_ROUTES` (the display's entries of
``table.BEHAVIOUR_OWNERS``) are attached with ``Mmio.attach_handler``, the
registers in :data:`REGISTER_ROUTES` (records the table gives no handler)
with ``Mmio.attach_register``. Every offset a route can deliver is in
:data:`READ_OFFSETS` / :data:`WRITE_OFFSETS`.

Life cycle: :meth:`VirtualDisplay.init` at vGPU creation (plugs the type's
built-in monitor, calls ``set_edid``, sets the boot straps),
:meth:`VirtualDisplay.reset` on a device-model reset, :meth:`VirtualDisplay.destroy`
on vGPU destroy (no timer acts for the vGPU afterwards).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import attrs

from gvt_core.device.display.aux import AuxChannel
from gvt_core.device.display.edid import Edid, builtin_edid
from gvt_core.device.display.flips import FlipEngine, FlipPlane
from gvt_core.device.display.gmbus import Gmbus
from gvt_core.device.display.monitor import VirtualMonitor
from gvt_core.device.display.planes import pipe_enabled
from gvt_core.device.display.port import VirtualDpPort, pch_port_hotplug_write
from gvt_core.device.display.timing import PipeTiming, decode_timing
from gvt_core.device.display.vblank import VblankTimers
from gvt_core.device.display.vregs import RegisterView
from gvt_core.device.interrupt import IrqEvent
from gvt_core.errors import VgpuStateError
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs
from gvt_core.hw.clock import HostClock
from gvt_core.mpt.facade import Mpt

_PIPES = range(regs.NUM_PIPES)
AUX_OFFSETS = tuple(base + 4 * i for base in dr.AUX_CH_CTL_OFFSETS for i in range(dr.AUX_CH_REG_COUNT))
PIPECONF_OFFSETS = tuple(dr.pipe_reg(regs.PIPECONF_A, p) for p in _PIPES)
PIPEDSL_OFFSETS = tuple(dr.pipe_reg(dr.PIPEDSL_A, p) for p in _PIPES)
SURFACE_OFFSETS = tuple(dr.pipe_reg(off, p) for off in (regs.DSPSURF_A, regs.SPRSURF_A)
                        for p in _PIPES)
#: the flip registers at 0x50080 (a surface address with the flip type in bits 1:0).
REG50080_OFFSETS = regs.REG_50080_PRIMARY + regs.REG_50080_SPRITE
#: offsets whose reads :meth:`VirtualDisplay.read` must serve.
READ_OFFSETS = AUX_OFFSETS + dr.GMBUS_OFFSETS + PIPEDSL_OFFSETS
#: offsets whose writes :meth:`VirtualDisplay.write` must serve.
WRITE_OFFSETS = (AUX_OFFSETS + dr.GMBUS_OFFSETS + PIPECONF_OFFSETS + (regs.PIPECONF_EDP,)
                 + SURFACE_OFFSETS + REG50080_OFFSETS + (regs.PCH_PORT_HOTPLUG,))

#: register-table handler names whose behaviour is the display's (read handlers
#: go to :meth:`VirtualDisplay.read`, write handlers to :meth:`VirtualDisplay.write`).
HANDLER_ROUTES = ("w_pipeconf", "w_pri_surf", "w_spr_surf", "w_reg50080", "r_gmbus", "w_gmbus",
                  "w_dp_aux_ch_ctl")


@attrs.frozen
class RegisterRoute:
    """One register record (by its first offset) the display serves although the
    table names no handler for it."""

    offset: int
    read: bool = False
    write: bool = False
    #: the writer sees the guest's bits before the table's read-only mask is merged
    #: (write-1-to-clear status bits only the device sets).
    raw: bool = False


REGISTER_ROUTES: tuple[RegisterRoute, ...] = (
    *(RegisterRoute(off, read=True) for off in dr.AUX_CH_CTL_OFFSETS),
    RegisterRoute(dr.PCH_GMBUS4, read=True, write=True),
    RegisterRoute(dr.PCH_GMBUS5, read=True, write=True),
    *(RegisterRoute(off, read=True) for off in PIPEDSL_OFFSETS),
    RegisterRoute(regs.PCH_PORT_HOTPLUG, write=True, raw=True),
)


class VirtualDisplay:
    """The display engine of one vGPU."""

    def __init__(self, *, regs_view: RegisterView, raise_event: Callable[[IrqEvent], None],
                 lock: threading.RLock, clock: HostClock, mpt: Mpt, handle: Any,
                 edid: Edid, alive: Callable[[], bool]) -> None:
        self.regs = regs_view
        self.raise_event = raise_event
        self.lock = lock
        self.default_edid = edid
        self.port = VirtualDpPort(regs_view, raise_event, mpt, handle)
        self.aux = tuple(AuxChannel(i, self._aux_monitor(i)) for i in range(dr.NUM_AUX_PORTS))
        self.gmbus = Gmbus(self.port.monitor_on)
        self.flips = FlipEngine(regs_view)
        self.vblank = VblankTimers(clock, lock, self.emulate_vblank,
                                   lambda: not self.destroyed and alive())
        self.destroyed = False
        #: flips that came from a command stream (MI_DISPLAY_FLIP).
        self.command_flips = 0
        self._reads: dict[int, Callable[[int], int]] = {}
        self._writes: dict[int, Callable[[int, int], None]] = {}
        for ch in self.aux:
            for off in range(ch.ctl_offset, ch.ctl_offset + 4 * dr.AUX_CH_REG_COUNT, 4):
                self._reads[off] = ch.read
                self._writes[off] = self._aux_writer(ch)
        for off in dr.GMBUS_OFFSETS:
            self._reads[off] = self._r_gmbus
            self._writes[off] = self._w_gmbus
        for off in PIPEDSL_OFFSETS:
            self._reads[off] = self._r_pipedsl
        for off in PIPECONF_OFFSETS:
            self._writes[off] = self._w_pipeconf
        self._writes[regs.PIPECONF_EDP] = self._w_pipeconf_edp
        for off in SURFACE_OFFSETS:
            self._writes[off] = self._w_surface
        for off in REG50080_OFFSETS:
            self._writes[off] = self._w_reg50080
        self._writes[regs.PCH_PORT_HOTPLUG] = self._w_pch_port_hotplug

    @classmethod
    def for_vgpu(cls, vgpu: Any, clock: HostClock, edid: Edid | None = None) -> VirtualDisplay:
        """The display of ``vgpu`` (its MMIO, interrupts, lock, backend handle), with
        the built-in monitor of its type unless ``edid`` is given."""
        return cls(regs_view=vgpu.mmio, raise_event=vgpu.irq.raise_event, lock=vgpu.lock,
                   clock=clock, mpt=vgpu.mpt, handle=vgpu.handle,
                   edid=edid or builtin_edid(vgpu.type.resolution),
                   alive=lambda: not vgpu.destroyed)

    def _aux_monitor(self, index: int) -> Callable[[], VirtualMonitor | None]:
        return lambda: self.port.monitor_on(index)

    def _aux_writer(self, ch: AuxChannel) -> Callable[[int, int], None]:
        def write(offset: int, value: int) -> None:
            self._raise(ch.write(offset, value))
        return write

    def _raise(self, events: tuple[IrqEvent, ...]) -> None:
        for event in events:
            self.raise_event(event)

    # --- life cycle -------------------------------------------------------------------------
    def init(self) -> None:
        """vGPU creation: plug the default monitor (``set_edid``) and set the boot state."""
        self.port.plug(self.default_edid, hotplug=False)
        self.port.reset_registers()

    def reset(self) -> None:
        """Device-model reset (after the register file went back to its initial
        state): controllers idle, flips dropped, timers stopped, boot state again.
        The monitor stays plugged."""
        self.vblank.stop_all()
        self.flips.reset()
        for ch in self.aux:
            ch.reset()
        self.gmbus.reset()
        self.port.reset_registers()

    def destroy(self) -> None:
        """vGPU destroy, vGPU lock held: nothing of the display acts afterwards, and
        nothing is left latched for a vblank that will never come."""
        self.destroyed = True
        self.vblank.destroy()
        self.flips.reset()

    def _alive(self, what: str) -> None:
        if self.destroyed:
            raise VgpuStateError(f"cannot {what}: the vGPU's display was destroyed")

    # --- monitors -----------------------------------------------------------------------------
    def plug(self, edid: Edid) -> None:
        """Connect a monitor with ``edid`` (replacing the current one) and raise hotplug."""
        with self.lock:
            self._alive("plug a monitor")
            self.port.plug(edid)

    def unplug(self) -> None:
        with self.lock:
            self._alive("unplug the monitor")
            self.port.unplug()

    @property
    def monitor(self) -> VirtualMonitor | None:
        return self.port.monitor

    # --- registers -----------------------------------------------------------------------------
    def read(self, offset: int) -> int:
        return self._reads[offset](offset)

    def write(self, offset: int, value: int) -> None:
        self._writes[offset](offset, value & 0xFFFF_FFFF)

    def _r_gmbus(self, offset: int) -> int:
        value = self.gmbus.read(offset)
        self._raise(self.gmbus.take_events())
        return value

    def _w_gmbus(self, offset: int, value: int) -> None:
        self._raise(self.gmbus.write(offset, value))

    def _r_pipedsl(self, offset: int) -> int:
        pipe = (offset - dr.PIPEDSL_A) // regs.PIPE_STRIDE
        return self.vblank.scanline(pipe, decode_timing(self.regs, pipe).vtotal) \
            & dr.PIPEDSL_LINE_MASK

    def _w_pipeconf(self, offset: int, value: int) -> None:
        pipe = (offset - regs.PIPECONF_A) // regs.PIPE_STRIDE
        on = bool(value & regs.PIPECONF_ENABLE)
        value &= ~regs.PIPECONF_STATE
        if on:
            value |= regs.PIPECONF_STATE
        self.regs.set32(offset, value)
        if on:
            self.vblank.start(pipe, self.timing(pipe).refresh_mhz)
        else:
            self.vblank.stop(pipe)
            self.flips.pipe_stopped(pipe)

    def _w_pipeconf_edp(self, offset: int, value: int) -> None:
        """The eDP transcoder has no virtual panel: its state bit follows the enable."""
        value &= ~regs.PIPECONF_STATE
        if value & regs.PIPECONF_ENABLE:
            value |= regs.PIPECONF_STATE
        self.regs.set32(offset, value)

    def _running(self, pipe: int) -> bool:
        return self.vblank.running(pipe) and pipe_enabled(self.regs, pipe)

    def _w_surface(self, offset: int, value: int) -> None:
        found = FlipPlane.of_surface(offset)
        if found is None:
            raise ValueError(f"{offset:#x} is not a plane surface register")
        self._raise(self.flips.surface_written(offset, value, self._running(found[1])))

    def _w_reg50080(self, offset: int, value: int) -> None:
        """A flip through the 0x50080 registers: the type is in bits 1:0."""
        self.regs.set32(offset, value)
        if offset in regs.REG_50080_PRIMARY:
            plane, pipe = FlipPlane.PRIMARY, regs.REG_50080_PRIMARY.index(offset)
        else:
            plane, pipe = FlipPlane.SPRITE, regs.REG_50080_SPRITE.index(offset)
        asynchronous = value & regs.REG50080_FLIP_TYPE_MASK == regs.REG50080_FLIP_TYPE_ASYNC
        self._raise(self.flips.display_flip(plane, pipe, value, asynchronous,
                                            self._running(pipe)))

    def display_flip(self, plane: FlipPlane, pipe: int, surface: int, asynchronous: bool, *,
                     pitch: int | None = None, tiled: bool | None = None) -> None:
        """A flip a command stream of this vGPU asked for (vGPU lock held), as
        upstream's ``gen8_update_plane_mmio_from_mi_display_flip``: the plane's
        stride and tiling (when given) and its surface register take the new
        values, and the flip completes as a guest write of the surface would
        (flip-done at the next vblank, or at once if asynchronous).

        The caller is the vGPU's ``execution.flip_sink`` (``vgpu.route_command_flips``):
        the command scanner audited the MI_DISPLAY_FLIP (plane code, a surface in
        the vGPU's own graphics memory), NOOP'd it in the shadow, and hands it
        over when the workload that carried it completes."""
        if self.destroyed:
            return
        primary = plane is FlipPlane.PRIMARY
        if pitch is not None:
            stride_reg = regs.DSPSTRIDE_A if primary else regs.SPRSTRIDE_A
            self.regs.set32(dr.pipe_reg(stride_reg, pipe), pitch)
        if tiled is not None:
            ctl = plane.control_offset(pipe)
            bit = dr.DISP_TILED if primary else dr.SPRITE_TILED
            value = self.regs.get32(ctl)
            self.regs.set32(ctl, (value | bit) if tiled else (value & ~bit))
        self.regs.set32(plane.surface_offset(pipe), surface & 0xFFFF_FFFF)
        self._raise(self.flips.display_flip(plane, pipe, surface, asynchronous,
                                            self._running(pipe)))
        self.command_flips += 1

    def _w_pch_port_hotplug(self, offset: int, value: int) -> None:
        self.regs.set32(offset, pch_port_hotplug_write(self.regs.get32(offset), value))

    # --- vblank -------------------------------------------------------------------------------
    def timing(self, pipe: int) -> PipeTiming:
        return decode_timing(self.regs, pipe)

    def emulate_vblank(self, pipe: int) -> None:
        """One vblank of ``pipe`` (the timer's callback; the vGPU lock is held)."""
        if self.destroyed:
            return
        self._raise(self.flips.vblank(pipe, pipe_enabled(self.regs, pipe)))
