"""GMBUS: the EDID read the way i915's intel_gmbus.c does it, errors and interrupts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gvt_core.device.display.edid import builtin_edid
from gvt_core.device.display.gmbus import Gmbus, GmbusPhase
from gvt_core.device.display.monitor import VirtualMonitor
from gvt_core.device.interrupt import IrqEvent
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs

EDID = builtin_edid((1024, 768))
G0, G1, G2, G3, G4, G5 = dr.GMBUS_OFFSETS
CYCLE = dr.GMBUS_CYCLE_SHIFT


@pytest.fixture
def monitor() -> VirtualMonitor:
    return VirtualMonitor(EDID)


@pytest.fixture
def gmbus(monitor: VirtualMonitor) -> Gmbus:
    return Gmbus(lambda port: monitor if port == regs.PORT_B else None)


def wait(g: Gmbus, bit: int) -> int:
    """gmbus_wait: poll GMBUS2 for ``bit`` or a NAK."""
    status = g.read(G2)
    assert status & (bit | dr.GMBUS_SATOER), f"GMBUS2 {status:#x} lacks {bit:#x}"
    return status


def read_index(g: Gmbus, offset: int, length: int, pin: int = dr.GMBUS_PIN_DPB) -> bytes:
    """gmbus_xfer of an index write + read to 0x50 (i915's EDID path)."""
    g.write(G0, pin)
    g.write(G1, dr.GMBUS_SW_RDY | ((dr.GMBUS_CYCLE_INDEX | dr.GMBUS_CYCLE_WAIT) << CYCLE)
            | (length << dr.GMBUS_BYTE_COUNT_SHIFT) | (offset << dr.GMBUS_SLAVE_INDEX_SHIFT)
            | (0x50 << 1) | dr.GMBUS_SLAVE_READ)
    out = b""
    while len(out) < length:
        if wait(g, dr.GMBUS_HW_RDY) & dr.GMBUS_SATOER:
            raise OSError("NAK")
        word = g.read(G3)
        out += word.to_bytes(4, "little")[: min(4, length - len(out))]
    assert wait(g, dr.GMBUS_HW_WAIT_PHASE) & dr.GMBUS_HW_WAIT_PHASE
    g.write(G1, dr.GMBUS_SW_RDY | (dr.GMBUS_CYCLE_STOP << CYCLE))
    assert not g.read(G2) & dr.GMBUS_ACTIVE  # gmbus_wait_idle
    g.write(G0, 0)
    return out


def test_edid_read_as_i915(gmbus: Gmbus) -> None:
    assert read_index(gmbus, 0, 128) == EDID.data
    assert gmbus.phase is GmbusPhase.IDLE
    assert read_index(gmbus, 0x36, 18) == EDID.data[0x36:0x48]
    assert gmbus.counters.bytes_read == 128 + 18


def test_status_during_transfer(gmbus: Gmbus) -> None:
    gmbus.write(G0, dr.GMBUS_PIN_DPB)
    gmbus.write(G1, dr.GMBUS_SW_RDY | ((dr.GMBUS_CYCLE_INDEX | dr.GMBUS_CYCLE_WAIT) << CYCLE)
                | (8 << 16) | (0x50 << 1) | 1)
    status = gmbus.read(G2)
    assert status & dr.GMBUS_ACTIVE and status & dr.GMBUS_HW_RDY
    assert not status & dr.GMBUS_HW_WAIT_PHASE
    assert not gmbus.read(G1) & dr.GMBUS_SW_RDY  # consumed by the (always ready) hardware
    gmbus.read(G3)
    assert gmbus.read(G2) & dr.GMBUS_BYTE_COUNT_STATUS_MASK == 4
    gmbus.read(G3)
    assert gmbus.phase is GmbusPhase.WAIT and gmbus.read(G2) & dr.GMBUS_HW_WAIT_PHASE
    assert gmbus.read(G3) == int.from_bytes(EDID.data[4:8], "little")  # nothing more: last value


def test_write_then_read(gmbus: Gmbus) -> None:
    """gmbus_xfer_write of the offset byte, then a read cycle with STOP."""
    gmbus.write(G0, dr.GMBUS_PIN_DPB)
    gmbus.write(G3, 0x10)  # the data dword goes first
    gmbus.write(G1, dr.GMBUS_SW_RDY | (dr.GMBUS_CYCLE_WAIT << CYCLE) | (1 << 16) | (0x50 << 1))
    assert wait(gmbus, dr.GMBUS_HW_WAIT_PHASE)
    gmbus.write(G1, dr.GMBUS_SW_RDY | ((dr.GMBUS_CYCLE_WAIT | dr.GMBUS_CYCLE_STOP) << CYCLE)
                | (4 << 16) | (0x50 << 1) | 1)
    assert gmbus.read(G3) == int.from_bytes(EDID.data[0x10:0x14], "little")
    assert gmbus.phase is GmbusPhase.IDLE and not gmbus.read(G2) & dr.GMBUS_ACTIVE


def test_two_byte_index(gmbus: Gmbus, monitor: VirtualMonitor) -> None:
    gmbus.write(G5, dr.GMBUS_2BYTE_INDEX_EN | 0x2000)
    gmbus.write(G0, dr.GMBUS_PIN_DPB)
    gmbus.write(G1, dr.GMBUS_SW_RDY | ((dr.GMBUS_CYCLE_INDEX | dr.GMBUS_CYCLE_WAIT) << CYCLE)
                | (4 << 16) | (0x50 << 1) | 1)
    # an 8-bit-offset EEPROM takes the first index byte as its offset
    assert gmbus.read(G3) == int.from_bytes(EDID.data[0x20:0x24], "little")


@pytest.mark.parametrize(("pin", "slave"), [(dr.GMBUS_PIN_DPC, 0x50), (dr.GMBUS_PIN_DPB, 0x37),
                                            (dr.GMBUS_PIN_VGADDC, 0x50), (7, 0x50)])
def test_nak_and_reset(gmbus: Gmbus, pin: int, slave: int) -> None:
    gmbus.write(G0, pin)
    gmbus.write(G1, dr.GMBUS_SW_RDY | (dr.GMBUS_CYCLE_WAIT << CYCLE) | (1 << 16) | (slave << 1) | 1)
    assert gmbus.read(G2) & dr.GMBUS_SATOER
    assert gmbus.counters.naks == 1
    # i915's error path: toggle SW_CLR_INT, then GMBUS0 = 0
    gmbus.write(G1, dr.GMBUS_SW_CLR_INT)
    gmbus.write(G1, 0)
    assert not gmbus.read(G2) & dr.GMBUS_SATOER and gmbus.counters.resets == 1
    gmbus.write(G0, 0)
    assert read_index(gmbus, 0, 8) == EDID.data[:8]


def test_unplugged_monitor_naks() -> None:
    g = Gmbus(lambda port: None)
    with pytest.raises(OSError, match="NAK"):
        read_index(g, 0, 8)


@pytest.mark.parametrize("replug", [False, True])
def test_a_monitor_that_goes_away_mid_transfer_stops_answering(replug: bool) -> None:
    """Unplugged (or replaced) under a read, the old monitor's EEPROM gives no more
    bytes: the cycle ends with SATOER, as a NAK would, and the next transfer reads
    the monitor now plugged."""
    plugged: list[VirtualMonitor | None] = [VirtualMonitor(EDID)]
    g = Gmbus(lambda port: plugged[0] if port == regs.PORT_B else None)
    g.write(G0, dr.GMBUS_PIN_DPB)
    g.write(G1, dr.GMBUS_SW_RDY | ((dr.GMBUS_CYCLE_INDEX | dr.GMBUS_CYCLE_WAIT) << CYCLE)
            | (128 << dr.GMBUS_BYTE_COUNT_SHIFT) | (0x50 << 1) | dr.GMBUS_SLAVE_READ)
    assert g.read(G3) == int.from_bytes(EDID.data[:4], "little")
    other = builtin_edid((1920, 1200))
    plugged[0] = VirtualMonitor(other) if replug else None
    g.read(G3)
    assert g.read(G2) & dr.GMBUS_SATOER and g.phase is GmbusPhase.IDLE
    assert g.counters.bytes_read == 4
    if replug:
        g.write(G0, 0)
        assert read_index(g, 0, 128) == other.data


def test_inuse(gmbus: Gmbus) -> None:
    assert not gmbus.read(G2) & dr.GMBUS_INUSE  # the first read acquires it
    assert gmbus.read(G2) & dr.GMBUS_INUSE
    gmbus.write(G2, dr.GMBUS_INUSE)
    assert not gmbus.read(G2) & dr.GMBUS_INUSE
    gmbus.write(G2, 0xFFFF_FFFF & ~dr.GMBUS_INUSE)  # other bits are read-only
    assert gmbus.read(G2) & ~dr.GMBUS_INUSE == dr.GMBUS_HW_RDY


def test_interrupts(gmbus: Gmbus) -> None:
    # enabling HW_RDY while the controller is ready raises the GMBUS event at once
    assert gmbus.write(G4, dr.GMBUS_HW_RDY_EN) == (IrqEvent.GMBUS,)
    assert gmbus.read(G2) & dr.GMBUS_INT
    gmbus.write(G1, dr.GMBUS_SW_CLR_INT)
    assert not gmbus.read(G2) & dr.GMBUS_INT
    gmbus.write(G1, 0)
    gmbus.write(G4, dr.GMBUS_HW_WAIT_EN)
    gmbus.write(G0, dr.GMBUS_PIN_DPB)
    gmbus.write(G1, dr.GMBUS_SW_RDY | ((dr.GMBUS_CYCLE_INDEX | dr.GMBUS_CYCLE_WAIT) << CYCLE)
                | (4 << 16) | (0x50 << 1) | 1)
    # the last data read ends the data phase: the enabled wait-phase interrupt fires
    gmbus.read(G3)
    assert gmbus.read(G2) & dr.GMBUS_HW_WAIT_PHASE
    assert gmbus.take_events() == (IrqEvent.GMBUS,)
    assert gmbus.take_events() == ()
    assert gmbus.write(G4, dr.GMBUS_NAK_EN) == ()  # no NAK pending


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(dr.GMBUS_OFFSETS), st.integers(0, 0xFFFF_FFFF),
                          st.booleans()), max_size=60))
def test_hostile_sequences_never_raise(ops: list[tuple[int, int, bool]]) -> None:
    monitor = VirtualMonitor(EDID)
    g = Gmbus(lambda port: monitor if port == regs.PORT_B else None)
    for offset, value, is_read in ops:
        if is_read:
            assert 0 <= g.read(offset) <= 0xFFFF_FFFF
        else:
            assert set(g.write(offset, value)) <= {IrqEvent.GMBUS}
    assert 0 <= monitor.ddc.offset < 256
