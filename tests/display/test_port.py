"""The virtual DP port: boot straps, hotplug on plug/unplug, set_edid (facts 9.1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gvt_core.device.display.edid import builtin_edid
from gvt_core.device.display.port import (
    VirtualDpPort,
    boot_state,
    pch_port_hotplug_write,
)
from gvt_core.device.display.vregs import apply_all
from gvt_core.device.interrupt import IrqEvent
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs

EDID_A = builtin_edid((1024, 768))
EDID_B = builtin_edid((1920, 1200))


@pytest.fixture
def port(regfile: Any, events: list[IrqEvent], make_guest: Callable[..., Any]) -> VirtualDpPort:
    guest = make_guest()  # a real vGPU: its backend handle receives set_edid
    return VirtualDpPort(regfile, events.append, guest.vgpu.mpt, guest.vgpu.handle)


def test_boot_state_with_monitor(regfile: Any) -> None:
    for pipe in range(3):
        regfile.set32(dr.pipe_reg(regs.DSPCNTR_A, pipe), 0xFFFF_FFFF)
        regfile.set32(dr.pipe_reg(regs.CURCNTR_A, pipe), 0x27)
    regfile.set32(dr.PCH_ADPA, 0xFFFF_FFFF)
    regfile.set32(regs.SDEISR, regs.SDE_PORTD_HOTPLUG_CPT)
    apply_all(regfile, boot_state(regs.PORT_B, True))
    r = regfile.get32
    assert r(regs.SFUSE_STRAP) & dr.SFUSE_STRAP_DDIB_DETECTED
    assert r(regs.SDEISR) == regs.SDE_PORTB_HOTPLUG_CPT  # only port B is live
    assert r(dr.trans_ddi_func_ctl(0)) == (dr.TRANS_DDI_FUNC_ENABLE | dr.TRANS_DDI_MODE_SELECT_DP_SST
                                          | dr.TRANS_DDI_BPC_8 | (regs.PORT_B << 28))
    assert r(dr.port_clk_sel(regs.PORT_B)) == dr.PORT_CLK_SEL_LCPLL_810
    assert r(dr.ddi_buf_ctl(regs.PORT_B)) == dr.DDI_BUF_CTL_ENABLE
    assert not r(dr.PCH_ADPA) & dr.ADPA_CRT_HOTPLUG_MONITOR_MASK
    for pipe in range(3):
        assert not r(dr.pipe_reg(regs.DSPCNTR_A, pipe)) & dr.DISP_ENABLE
        assert r(dr.pipe_reg(regs.CURCNTR_A, pipe)) & dr.MCURSOR_MODE_MASK == 0
    assert r(regs.PIPECONF_A) & regs.PIPECONF_ENABLE


def test_boot_state_without_monitor(regfile: Any) -> None:
    regfile.set32(regs.SFUSE_STRAP, dr.SFUSE_STRAP_DDIB_DETECTED | dr.SFUSE_STRAP_DDID_DETECTED)
    apply_all(regfile, boot_state(regs.PORT_B, False))
    assert regfile.get32(regs.SFUSE_STRAP) == dr.SFUSE_STRAP_DDID_DETECTED
    assert not regfile.get32(regs.SDEISR)
    assert not regfile.get32(dr.ddi_buf_ctl(regs.PORT_B))


def test_plug_calls_set_edid(port: VirtualDpPort) -> None:
    port.handle.edid_ports.clear()
    port.plug(EDID_B, hotplug=False)
    assert port.handle.edid_ports == {regs.PORT_B}
    assert port.monitor is not None and port.monitor.edid is EDID_B
    assert port.regs.get32(regs.SDEISR) & regs.SDE_PORTB_HOTPLUG_CPT


def test_hotplug_with_detection_enabled(port: VirtualDpPort, events: list[IrqEvent]) -> None:
    port.regs.set32(regs.PCH_PORT_HOTPLUG, dr.PORTB_HOTPLUG_ENABLE)
    port.plug(EDID_A)
    assert events == [IrqEvent.DP_B_HOTPLUG]
    hp = port.regs.get32(regs.PCH_PORT_HOTPLUG)
    assert hp & dr.PORTB_HOTPLUG_STATUS_MASK == dr.PORTB_HOTPLUG_LONG_DETECT
    assert port.regs.get32(regs.SFUSE_STRAP) & dr.SFUSE_STRAP_DDIB_DETECTED
    # the guest acknowledges by writing the status back (W1C)
    port.regs.set32(regs.PCH_PORT_HOTPLUG, pch_port_hotplug_write(hp, hp))
    assert port.regs.get32(regs.PCH_PORT_HOTPLUG) == dr.PORTB_HOTPLUG_ENABLE
    port.unplug()
    assert events == [IrqEvent.DP_B_HOTPLUG] * 2
    assert not port.regs.get32(regs.SDEISR) & regs.SDE_PORTB_HOTPLUG_CPT
    assert not port.regs.get32(regs.SFUSE_STRAP) & dr.SFUSE_STRAP_DDIB_DETECTED
    assert port.monitor is None and port.monitor_on(regs.PORT_B) is None
    assert port.counters.hotplug_events == 2


def test_hotplug_with_detection_disabled(port: VirtualDpPort, events: list[IrqEvent]) -> None:
    port.plug(EDID_A)
    port.unplug()
    assert events == []
    assert port.counters.hotplug_undetected == 2
    assert not port.regs.get32(regs.PCH_PORT_HOTPLUG) & dr.PORTB_HOTPLUG_STATUS_MASK
    # the live level follows the monitor anyway
    port.plug(EDID_B)
    assert port.regs.get32(regs.SDEISR) & regs.SDE_PORTB_HOTPLUG_CPT


def test_pch_port_hotplug_w1c() -> None:
    status = dr.PORTB_HOTPLUG_LONG_DETECT | dr.PORTD_HOTPLUG_LONG_DETECT | dr.PORTB_HOTPLUG_ENABLE
    # writing 0 to status keeps it, 1 clears it; control bits follow the write
    assert pch_port_hotplug_write(status, dr.PORTB_HOTPLUG_ENABLE) == status
    assert pch_port_hotplug_write(status, dr.PORTD_HOTPLUG_LONG_DETECT) == dr.PORTB_HOTPLUG_LONG_DETECT
    assert pch_port_hotplug_write(0, dr.PORTB_HOTPLUG_LONG_DETECT | dr.PORTC_HOTPLUG_ENABLE) \
        == dr.PORTC_HOTPLUG_ENABLE


def test_port_a_has_no_pch_hotplug(regfile: Any, make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    with pytest.raises(ValueError, match="ports B-D"):
        VirtualDpPort(regfile, lambda e: None, guest.vgpu.mpt, guest.vgpu.handle, port=regs.PORT_A)


def test_hotplug_interrupt_reaches_the_guest(make_guest: Callable[..., Any]) -> None:
    """End to end on a vGPU: SDEIIR bit 21, master PCH bit, an MSI."""
    guest = make_guest()
    guest.enable_msi()
    guest.w(regs.SDEIMR, ~regs.SDE_PORTB_HOTPLUG_CPT & 0xFFFF_FFFF)
    guest.w(regs.SDEIER, regs.SDE_PORTB_HOTPLUG_CPT)
    guest.dwrite(regs.PCH_PORT_HOTPLUG, dr.PORTB_HOTPLUG_ENABLE)
    guest.display.unplug()
    assert guest.r(regs.SDEIIR) & regs.SDE_PORTB_HOTPLUG_CPT
    assert guest.r(regs.GEN8_MASTER_IRQ) & regs.GEN8_DE_PCH_IRQ
    assert guest.port.wait_msi(1.0) is not None
    assert not guest.r(regs.SDEISR) & regs.SDE_PORTB_HOTPLUG_CPT
    guest.display.plug(EDID_B)
    assert guest.r(regs.SDEISR) & regs.SDE_PORTB_HOTPLUG_CPT
    assert guest.display.monitor.edid is EDID_B
