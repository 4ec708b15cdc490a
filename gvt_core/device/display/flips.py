"""Page flips and what a vblank does to them (facts 6.5, 9.5).

A write of DSPSURF (primary) or SPRSURF (sprite) is a flip. The plane's
control register says which kind:

* asynchronous (DISP_ASYNC_FLIP): the new surface goes live at once and the
  flip-done event is raised at once;
* synchronous: the surface is latched and goes live at the next vblank of the
  pipe, which raises the flip-done event before the vblank event. With the
  pipe off there is no vblank to wait for: the surface goes live at once and
  no event is raised (upstream drops flip-done events of a disabled pipe).

Every primary flip counts in PIPE_FLIPCOUNT; every vblank of an enabled pipe
counts in PIPE_FRMCOUNT (upstream order: flip-done events, frame counter,
vblank event). :meth:`FlipEngine.display_flip` is the same flip for the
command parser's MI_DISPLAY_FLIP.

Departure: upstream makes DSPSURFLIVE follow every write at once; here a
synchronous flip changes the live surface at the vblank that completes it, so
what the decoder shows is what the display would show.
"""

from __future__ import annotations

import enum

import attrs

from gvt_core.device.display.vregs import RegisterView
from gvt_core.device.interrupt import IrqEvent
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs

_DWORD = 0xFFFF_FFFF


class FlipPlane(enum.Enum):
    """(surface, live surface, control register, its async bit) of pipe A."""

    PRIMARY = (regs.DSPSURF_A, regs.DSPSURFLIVE_A, regs.DSPCNTR_A, dr.DISP_ASYNC_FLIP)
    SPRITE = (regs.SPRSURF_A, regs.SPRSURFLIVE_A, regs.SPRCTL_A, dr.SPRITE_ASYNC_FLIP)

    def offset(self, which: int, pipe: int) -> int:
        return dr.pipe_reg(self.value[which], pipe)

    def surface_offset(self, pipe: int) -> int:
        """The plane's surface register (DSPSURF / SPRSURF) on ``pipe``."""
        return dr.pipe_reg(self.value[0], pipe)

    def control_offset(self, pipe: int) -> int:
        """The plane's control register (DSPCNTR / SPRCTL) on ``pipe``."""
        return dr.pipe_reg(self.value[2], pipe)

    def flip_done(self, pipe: int) -> IrqEvent:
        if self is FlipPlane.PRIMARY:
            return IrqEvent.primary_flip_done(pipe)
        return IrqEvent.sprite_flip_done(pipe)

    @staticmethod
    def of_surface(offset: int) -> tuple[FlipPlane, int] | None:
        """(plane, pipe) whose surface register is at ``offset``."""
        for plane in FlipPlane:
            delta = offset - plane.value[0]
            if delta % regs.PIPE_STRIDE == 0 and 0 <= delta // regs.PIPE_STRIDE < regs.NUM_PIPES:
                return plane, delta // regs.PIPE_STRIDE
        return None


_SURF, _LIVE, _CTL, _ASYNC = range(4)


@attrs.define(eq=False)
class FlipCounters:
    sync_flips: int = 0
    async_flips: int = 0
    immediate_flips: int = 0
    vblanks: int = 0


@attrs.define(eq=False)
class FlipEngine:
    """Flip state of one vGPU's pipes; its register state lives in the vreg."""

    regs: RegisterView
    #: per pipe: plane -> surface value waiting for the next vblank
    pending: list[dict[FlipPlane, int]] = attrs.field(
        factory=lambda: [{} for _ in range(regs.NUM_PIPES)])
    counters: FlipCounters = attrs.field(factory=FlipCounters)

    def reset(self) -> None:
        for p in self.pending:
            p.clear()

    def _inc(self, offset_a: int, pipe: int) -> None:
        off = dr.pipe_reg(offset_a, pipe)
        self.regs.set32(off, (self.regs.get32(off) + 1) & _DWORD)

    def surface_written(self, offset: int, value: int, pipe_running: bool) -> tuple[IrqEvent, ...]:
        """A guest write of a surface register (DSPSURF/SPRSURF of any pipe)."""
        found = FlipPlane.of_surface(offset)
        if found is None:
            raise ValueError(f"{offset:#x} is not a plane surface register")
        plane, pipe = found
        self.regs.set32(offset, value & _DWORD)
        ctl = self.regs.get32(plane.offset(_CTL, pipe))
        return self.display_flip(plane, pipe, value, bool(ctl & plane.value[_ASYNC]),
                                 pipe_running)

    def display_flip(self, plane: FlipPlane, pipe: int, surface: int, asynchronous: bool,
                     pipe_running: bool) -> tuple[IrqEvent, ...]:
        """Flip ``plane`` of ``pipe`` to ``surface`` (MMIO or MI_DISPLAY_FLIP)."""
        if plane is FlipPlane.PRIMARY:
            self._inc(regs.PIPE_FLIPCOUNT_G4X_A, pipe)
        if asynchronous:
            self.counters.async_flips += 1
            self.regs.set32(plane.offset(_LIVE, pipe), surface & _DWORD)
            self.pending[pipe].pop(plane, None)
            return (plane.flip_done(pipe),)
        if not pipe_running:
            self.counters.immediate_flips += 1
            self.regs.set32(plane.offset(_LIVE, pipe), surface & _DWORD)
            self.pending[pipe].pop(plane, None)
            return ()
        self.counters.sync_flips += 1
        self.pending[pipe][plane] = surface & _DWORD
        return ()

    def pipe_stopped(self, pipe: int) -> None:
        """The pipe was turned off: no vblank will come, pending surfaces go live now
        (without flip-done events)."""
        pending, self.pending[pipe] = self.pending[pipe], {}
        for plane, surface in pending.items():
            self.regs.set32(plane.offset(_LIVE, pipe), surface)

    def vblank(self, pipe: int, pipe_enabled: bool) -> tuple[IrqEvent, ...]:
        """One vblank of ``pipe``: latch pending flips, count the frame."""
        pending, self.pending[pipe] = self.pending[pipe], {}
        if not pipe_enabled:
            return ()
        events = []
        for plane in FlipPlane:
            if plane in pending:
                self.regs.set32(plane.offset(_LIVE, pipe), pending[plane])
                events.append(plane.flip_done(pipe))
        self._inc(regs.PIPE_FRMCOUNT_G4X_A, pipe)
        self.counters.vblanks += 1
        events.append(IrqEvent.vblank(pipe))
        return tuple(events)
