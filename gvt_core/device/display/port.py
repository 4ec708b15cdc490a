"""The vGPU's virtual DisplayPort port: monitor presence, straps and hotplug (facts 9.1).

A BDW vGPU has one virtual DP monitor on port B. Whether a monitor is there
is what the guest driver reads from:

* SFUSE_STRAP DDIB_DETECTED: the port exists (i915 creates its encoder);
* SDEISR PORTB_HOTPLUG_CPT: the live hotplug level (i915's "connected" test);
* DDI_BUF_CTL(B), TRANS_DDI_FUNC_CTL(A), PORT_CLK_SEL(B): the port is lit by
  "firmware" at DP SST, 8 bpc, on transcoder A with the 810 MHz LCPLL.

:func:`boot_state` is upstream's ``emulate_monitor_status_change`` for BDW
(vGPU creation and device-model reset: it also hides a host CRT, turns every
plane off and leaves transcoder A enabled). :meth:`VirtualDpPort.plug` and
:meth:`~VirtualDpPort.unplug` are the runtime hotplug, which upstream only
implements for SKL/BXT; the BDW version here follows the same recipe on the
PCH: strap and SDEISR level follow the monitor, and if the guest enabled
hotplug detection for the port (PCH_PORT_HOTPLUG PORTB_HOTPLUG_ENABLE) the
long-pulse status is latched and the DP_B_HOTPLUG event raised (SDEIIR bit 21,
master bit 23). Every (re)plug calls the ``set_edid`` MPT hook first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from gvt_core.device.display.edid import Edid
from gvt_core.device.display.monitor import VirtualMonitor
from gvt_core.device.display.vregs import RegisterView, RegUpdate, apply_all
from gvt_core.device.interrupt import IrqEvent
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs
from gvt_core.mpt.facade import Mpt

_HOTPLUG_EVENTS = {regs.PORT_B: IrqEvent.DP_B_HOTPLUG, regs.PORT_C: IrqEvent.DP_C_HOTPLUG,
                   regs.PORT_D: IrqEvent.DP_D_HOTPLUG}
_ALL_SDE_PORTS = (regs.SDE_PORTB_HOTPLUG_CPT | regs.SDE_PORTC_HOTPLUG_CPT
                  | regs.SDE_PORTD_HOTPLUG_CPT)
TRANSCODER_A = 0


def presence(port: int, connected: bool) -> list[RegUpdate]:
    """Strap and live hotplug level of ``port``."""
    strap = dr.SFUSE_STRAP_DDI_DETECTED[port]
    level = dr.SDE_PORT_HOTPLUG_CPT[port]
    if connected:
        return [RegUpdate(regs.SFUSE_STRAP, set=strap), RegUpdate(regs.SDEISR, set=level)]
    return [RegUpdate(regs.SFUSE_STRAP, clear=strap), RegUpdate(regs.SDEISR, clear=level)]


def boot_state(port: int, connected: bool) -> list[RegUpdate]:
    """The display registers GVT sets up at creation and reset (BDW path)."""
    out = [RegUpdate(regs.SDEISR, clear=_ALL_SDE_PORTS)]
    if connected:
        out += presence(port, True)
        out += [
            RegUpdate(dr.trans_ddi_func_ctl(TRANSCODER_A),
                      clear=dr.TRANS_DDI_BPC_MASK | dr.TRANS_DDI_MODE_SELECT_MASK
                      | dr.TRANS_DDI_PORT_MASK,
                      set=dr.TRANS_DDI_BPC_8 | dr.TRANS_DDI_MODE_SELECT_DP_SST
                      | (port << dr.TRANS_DDI_PORT_SHIFT) | dr.TRANS_DDI_FUNC_ENABLE),
            RegUpdate(dr.port_clk_sel(port), clear=dr.PORT_CLK_SEL_MASK,
                      set=dr.PORT_CLK_SEL_LCPLL_810),
            RegUpdate(dr.ddi_buf_ctl(port), clear=dr.DDI_BUF_IS_IDLE, set=dr.DDI_BUF_CTL_ENABLE),
        ]
    else:
        out += presence(port, False)
    out.append(RegUpdate(dr.PCH_ADPA, clear=dr.ADPA_CRT_HOTPLUG_MONITOR_MASK))
    for pipe in range(regs.NUM_PIPES):
        out += [
            RegUpdate(dr.pipe_reg(regs.DSPCNTR_A, pipe), clear=dr.DISP_ENABLE),
            RegUpdate(dr.pipe_reg(regs.SPRCTL_A, pipe), clear=dr.SPRITE_ENABLE),
            RegUpdate(dr.pipe_reg(regs.CURCNTR_A, pipe), clear=dr.MCURSOR_MODE_MASK,
                      set=dr.MCURSOR_MODE_DISABLE),
        ]
    out.append(RegUpdate(regs.PIPECONF_A, set=regs.PIPECONF_ENABLE))
    return out


def pch_port_hotplug_write(old: int, value: int) -> int:
    """PCH_PORT_HOTPLUG after a guest write: status bits are write-1-to-clear."""
    status = dr.PCH_PORT_HOTPLUG_STATUS_MASK
    return ((value & ~status) | (old & status & ~value)) & 0xFFFF_FFFF


@attrs.define(eq=False)
class PortCounters:
    plugs: int = 0
    unplugs: int = 0
    #: hotplug interrupts raised / not raised because the guest had detection off.
    hotplug_events: int = 0
    hotplug_undetected: int = 0


@attrs.define(eq=False)
class VirtualDpPort:
    """One virtual DP port and the monitor plugged into it."""

    regs: RegisterView
    raise_event: Callable[[IrqEvent], None]
    mpt: Mpt
    handle: Any
    port: int = regs.VGPU_DISPLAY_PORT_BDW
    monitor: VirtualMonitor | None = None
    counters: PortCounters = attrs.field(factory=PortCounters)

    def __attrs_post_init__(self) -> None:
        if self.port not in _HOTPLUG_EVENTS:
            raise ValueError(f"port {dr.PORT_NAMES[self.port]} has no PCH hotplug line; "
                             "virtual monitors go on ports B-D")

    @property
    def connected(self) -> bool:
        return self.monitor is not None

    def monitor_on(self, port: int | None) -> VirtualMonitor | None:
        return self.monitor if port == self.port else None

    def reset_registers(self) -> None:
        """Creation / device-model reset: the firmware's view of the port."""
        apply_all(self.regs, boot_state(self.port, self.connected))

    def plug(self, edid: Edid, *, hotplug: bool = True) -> None:
        """Connect a monitor presenting ``edid`` (replacing any monitor there).

        ``set_edid`` is called first (a backend failure leaves the port as it
        was); with ``hotplug`` the guest sees a long hotplug pulse.
        """
        self.mpt.set_edid(self.handle, self.port)
        self.monitor = VirtualMonitor(edid)
        self.counters.plugs += 1
        if hotplug:
            self._hotplug(True)
        else:
            apply_all(self.regs, presence(self.port, True))

    def unplug(self) -> None:
        """Disconnect the monitor; the guest sees the hotplug pulse."""
        self.monitor = None
        self.counters.unplugs += 1
        self._hotplug(False)

    def _hotplug(self, connected: bool) -> None:
        apply_all(self.regs, presence(self.port, connected))
        enable, status, long_pulse = dr.PCH_HOTPLUG_BITS[self.port]
        if not self.regs.get32(regs.PCH_PORT_HOTPLUG) & enable:
            self.counters.hotplug_undetected += 1
            return
        RegUpdate(regs.PCH_PORT_HOTPLUG, clear=status, set=long_pulse).apply(self.regs)
        self.counters.hotplug_events += 1
        self.raise_event(_HOTPLUG_EVENTS[self.port])
