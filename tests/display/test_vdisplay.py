"""A vGPU's display behind its register entry points, reached through BAR0 and the register table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gvt_core.device.display.aux import pack_message, unpack_message
from gvt_core.device.display.edid import builtin_edid
from gvt_core.device.display.vdisplay import READ_OFFSETS, WRITE_OFFSETS
from gvt_core.device.interrupt import IrqEvent
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs

AUX_B = dr.PCH_DPB_AUX_CH_CTL
G0, G1, G2, G3, G4, G5 = dr.GMBUS_OFFSETS


def aux(guest: Any, send: bytes, irq: bool = False) -> bytes:
    for i, word in enumerate(pack_message(send)):
        guest.dwrite(AUX_B + 4 + 4 * i, word)
    guest.dwrite(AUX_B, dr.DP_AUX_CH_CTL_SEND_BUSY | (len(send) << 20)
                 | (dr.DP_AUX_CH_CTL_INTERRUPT if irq else 0))
    ctl = guest.dread(AUX_B)
    assert ctl & dr.DP_AUX_CH_CTL_DONE and not ctl & dr.DP_AUX_CH_CTL_TIME_OUT_ERROR
    size = (ctl & dr.DP_AUX_CH_CTL_MESSAGE_SIZE_MASK) >> 20
    guest.dwrite(AUX_B, ctl)
    return unpack_message([guest.dread(AUX_B + 4 + 4 * i) for i in range(5)], size)


def edid_over_aux(guest: Any) -> bytes:
    out = b""
    aux(guest, bytes([0x40, 0x00, 0x50, 0x00, 0x00]))  # I2C write|MOT, 1 byte: offset 0
    while len(out) < 128:
        out += aux(guest, bytes([0x50, 0x00, 0x50, 15]))[1:]
    aux(guest, bytes([0x10, 0x00, 0x50]))  # stop
    return out


def edid_over_gmbus(guest: Any) -> bytes:
    guest.dwrite(G0, dr.GMBUS_PIN_DPB)
    guest.dwrite(G1, dr.GMBUS_SW_RDY | (3 << 25) | (128 << 16) | (0x50 << 1) | 1)
    out = b""
    while len(out) < 128:
        assert guest.dread(G2) & dr.GMBUS_HW_RDY
        out += guest.dread(G3).to_bytes(4, "little")
    assert guest.dread(G2) & dr.GMBUS_HW_WAIT_PHASE
    guest.dwrite(G1, dr.GMBUS_SW_RDY | (4 << 25))
    guest.dwrite(G0, 0)
    return out


def test_init_probes_like_i915(make_guest: Callable[..., Any]) -> None:
    guest = make_guest("GVTg_V4_2")
    assert guest.vgpu.handle.edid_ports == {regs.PORT_B}  # set_edid, through the facade
    # what intel_setup_outputs / the DP connector detect read through MMIO
    assert guest.r(regs.SFUSE_STRAP) & dr.SFUSE_STRAP_DDIB_DETECTED
    assert guest.r(regs.SDEISR) & regs.SDE_PORTB_HOTPLUG_CPT
    edid = builtin_edid((1920, 1200))
    assert aux(guest, bytes([0x90, 0x00, 0x00, 14]))[1:4] == bytes([0x12, 0x14, 0x84])
    assert edid_over_aux(guest) == edid.data
    assert edid_over_gmbus(guest) == edid.data


def test_aux_and_gmbus_interrupts_reach_the_guest(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    aux(guest, bytes([0x90, 0x00, 0x00, 0x00]), irq=True)
    assert guest.r(regs.SDEISR + regs.IRQ_IIR) == 0  # masked in SDEIMR: counted, not latched
    guest.w(regs.SDEIMR, 0)
    aux(guest, bytes([0x90, 0x00, 0x00, 0x00]), irq=True)
    assert guest.r(regs.SDEIIR) & regs.SDE_AUX_B_CPT
    guest.dwrite(G4, dr.GMBUS_HW_RDY_EN)
    assert guest.r(regs.SDEIIR) & regs.SDE_GMBUS_CPT


def test_replug_changes_what_the_guest_reads(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    guest.dwrite(regs.PCH_PORT_HOTPLUG, dr.PORTB_HOTPLUG_ENABLE)
    guest.w(regs.SDEIMR, 0)
    small, big = builtin_edid((1024, 768)), builtin_edid((1920, 1200))
    assert edid_over_aux(guest).startswith(small.data[:16])
    guest.vgpu.handle.edid_ports.clear()
    guest.display.plug(big)
    assert guest.vgpu.handle.edid_ports == {regs.PORT_B}
    assert guest.r(regs.SDEIIR) & regs.SDE_PORTB_HOTPLUG_CPT
    hp = guest.r(regs.PCH_PORT_HOTPLUG)
    assert hp & dr.PORTB_HOTPLUG_LONG_DETECT
    guest.dwrite(regs.PCH_PORT_HOTPLUG, hp)  # i915 acknowledges
    assert not guest.r(regs.PCH_PORT_HOTPLUG) & dr.PORTB_HOTPLUG_STATUS_MASK
    assert edid_over_gmbus(guest) == big.data
    assert builtin_edid((1920, 1200)).best_mode().size == (1920, 1200)
    guest.display.unplug()
    guest.dwrite(G0, dr.GMBUS_PIN_DPB)
    guest.dwrite(G1, dr.GMBUS_SW_RDY | (1 << 25) | (1 << 16) | (0x50 << 1) | 1)
    assert guest.dread(G2) & dr.GMBUS_SATOER  # nobody answers on the DDC pins
    guest.dwrite(AUX_B + 4, 0x9000_0000)
    guest.dwrite(AUX_B, dr.DP_AUX_CH_CTL_SEND_BUSY | (4 << 20))
    assert guest.dread(AUX_B) & dr.DP_AUX_CH_CTL_TIME_OUT_ERROR


def test_reset_restores_the_boot_state(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    guest.dwrite(regs.PIPECONF_A, regs.PIPECONF_ENABLE)
    guest.dwrite(G0, dr.GMBUS_PIN_DPB)
    assert guest.display.vblank.running(0)
    guest.gvt.reset_vgpu(guest.vgpu)  # DMLR: registers back to golden, the display reset
    guest.port.cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY, 2)  # decoding back on
    assert not guest.display.vblank.running(0)
    assert guest.dread(G0) == 0
    assert guest.r(regs.SFUSE_STRAP) & dr.SFUSE_STRAP_DDIB_DETECTED  # monitor still there
    assert guest.display.monitor is not None


def test_offsets_are_routed(make_guest: Callable[..., Any]) -> None:
    guest = make_guest()
    for off in READ_OFFSETS:
        assert 0 <= guest.dread(off) <= 0xFFFF_FFFF
    assert set(READ_OFFSETS) - set(WRITE_OFFSETS) == {
        dr.pipe_reg(dr.PIPEDSL_A, p) for p in range(regs.NUM_PIPES)}
    assert len(set(WRITE_OFFSETS)) == len(WRITE_OFFSETS)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(WRITE_OFFSETS), st.integers(0, 0xFFFF_FFFF)),
                max_size=40))
def test_hostile_writes_never_raise(make_guest: Callable[..., Any],
                                    writes: list[tuple[int, int]]) -> None:
    guest = make_guest()
    raised: list[IrqEvent] = []
    guest.display.raise_event = raised.append
    for offset, value in writes:
        guest.dwrite(offset, value)
        guest.clock.advance(5_000_000)
    for off in READ_OFFSETS:
        assert 0 <= guest.dread(off) <= 0xFFFF_FFFF
    # bounded: at most one timer per pipe, vblanks no faster than 240 Hz
    assert guest.clock.pending <= regs.NUM_PIPES
    # three pipes at most at 240 Hz: two vblanks each per 5 ms slice
    assert sum(e.name.endswith("VBLANK") for e in raised) <= 6 * len(writes)
    guest.gvt.destroy_vgpu(guest.vgpu)
    assert guest.clock.pending == 0


def test_routes_cover_every_offset_the_table_delivers() -> None:
    """Each record a display route attaches to delivers only offsets the display serves,
    and every display-owned handler name of the table is routed."""
    from gvt_core.device.display.vdisplay import HANDLER_ROUTES, REGISTER_ROUTES
    from gvt_core.device.registers.table import BEHAVIOUR_OWNERS, REGISTER_TABLE, find

    assert set(HANDLER_ROUTES) == {n for n, o in BEHAVIOUR_OWNERS.items() if o == "display"}
    reads, writes = set(READ_OFFSETS), set(WRITE_OFFSETS)
    for info in REGISTER_TABLE:
        if info.read in HANDLER_ROUTES:
            assert set(info.dwords) <= reads, info.name
        if info.write in HANDLER_ROUTES:
            assert set(info.dwords) <= writes, info.name
    for route in REGISTER_ROUTES:
        info = find(route.offset)
        assert info is not None and info.offset == route.offset
        if route.read:  # only where the table names no handler
            assert info.read is None and set(info.dwords) <= reads, info.name
        if route.write:
            assert info.write is None and set(info.dwords) <= writes, info.name


def test_writes_reach_the_display_through_bar0(make_guest: Callable[..., Any]) -> None:
    """A guest store to each routed offset is served by the display, not the vreg."""
    guest = make_guest()
    seen: list[int] = []
    real = guest.display.write
    guest.display._writes = {off: (lambda o, v, f=f: (seen.append(o), f(o, v))[1])
                             for off, f in guest.display._writes.items()}
    for off in WRITE_OFFSETS:
        guest.w(off, 0)
    assert sorted(seen) == sorted(WRITE_OFFSETS)
    assert callable(real)
