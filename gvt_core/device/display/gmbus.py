"""GMBUS: the PCH's I2C controller (GMBUS0-5), driving a port's DDC pins.

i915 reads an EDID through it as: GMBUS0 = pin pair of the port; GMBUS1 =
SW_RDY | INDEX+WAIT cycle | byte count | offset as index | slave 0x50 | read;
then, per 4 bytes, wait for HW_RDY in GMBUS2 and read GMBUS3; wait for
HW_WAIT_PHASE; GMBUS1 = SW_RDY | STOP; wait until GMBUS2 drops ACTIVE;
GMBUS0 = 0. A slave that does not answer sets SATOER (NAK), which i915 clears
by toggling SW_CLR_INT in GMBUS1.

The emulation follows upstream's state machine (edid.c: idle, data and wait
phases; SW_RDY always consumed; GMBUS2 INUSE set on read, cleared by writing
it) with three departures, each closer to the hardware: plain write cycles to
the EEPROM set its offset (upstream ignores GMBUS3 writes), SATOER is raised
when a cycle addresses a missing slave (upstream raises it at pin select),
and GMBUS4's interrupt enables raise the GMBUS event (upstream never does).
GMBUS also serves the EDID of a DP port's monitor, which upstream refuses, so
a guest can read the virtual monitor's EDID both ways.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from gvt_core.device.display.ddc import EdidEeprom
from gvt_core.device.display.monitor import VirtualMonitor
from gvt_core.device.interrupt import IrqEvent
from gvt_core.hw import display_regs as dr

_DWORD = 0xFFFF_FFFF


class GmbusPhase(enum.Enum):
    IDLE = "idle"
    DATA = "data"
    WAIT = "wait"


#: GMBUS4 enable bit -> the GMBUS2 condition it reports (NAK: SATOER; idle: not ACTIVE).
_IRQ_SOURCES = (
    (dr.GMBUS_HW_RDY_EN, dr.GMBUS_HW_RDY),
    (dr.GMBUS_HW_WAIT_EN, dr.GMBUS_HW_WAIT_PHASE),
    (dr.GMBUS_NAK_EN, dr.GMBUS_SATOER),
    (dr.GMBUS_SLAVE_TIMEOUT_EN, dr.GMBUS_STALL_TIMEOUT),
)


@attrs.define(eq=False)
class GmbusCounters:
    cycles: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    naks: int = 0
    resets: int = 0


@attrs.define(eq=False)
class Gmbus:
    """The GMBUS controller of one vGPU."""

    #: display port -> the monitor on it (None: nothing plugged).
    monitor_on: Callable[[int], VirtualMonitor | None]
    gmbus0: int = 0
    gmbus1: int = 0
    gmbus2: int = dr.GMBUS_HW_RDY
    gmbus3: int = 0
    gmbus4: int = 0
    gmbus5: int = 0
    phase: GmbusPhase = GmbusPhase.IDLE
    counters: GmbusCounters = attrs.field(factory=GmbusCounters)
    _slave: EdidEeprom | None = None
    _reading: bool = False
    _total: int = 0
    _done: int = 0
    _cycle: int = 0
    #: events raised by register reads (a GMBUS3 read can end the data phase)
    _deferred: list[IrqEvent] = attrs.field(factory=list)

    def reset(self) -> None:
        self._deferred.clear()
        self.gmbus0 = self.gmbus1 = self.gmbus3 = self.gmbus4 = self.gmbus5 = 0
        self.gmbus2 = dr.GMBUS_HW_RDY
        self._idle()

    @staticmethod
    def owns(offset: int) -> bool:
        return offset in dr.GMBUS_OFFSETS

    # --- registers -----------------------------------------------------------------------
    def read(self, offset: int) -> int:
        if offset == dr.PCH_GMBUS2:
            value = self.gmbus2
            self.gmbus2 |= dr.GMBUS_INUSE  # reading acquires the controller
            return value
        if offset == dr.PCH_GMBUS3:
            before = self._conditions()
            value = self._read_data()
            for event in self._interrupt(before):
                if event not in self._deferred:  # bounded: one pending event at most
                    self._deferred.append(event)
            return value
        return {dr.PCH_GMBUS0: self.gmbus0, dr.PCH_GMBUS1: self.gmbus1,
                dr.PCH_GMBUS4: self.gmbus4, dr.PCH_GMBUS5: self.gmbus5}[offset]

    def take_events(self) -> tuple[IrqEvent, ...]:
        """Events raised by reads since the last call (the caller raises them)."""
        out, self._deferred = tuple(self._deferred), []
        return out

    def write(self, offset: int, value: int) -> tuple[IrqEvent, ...]:
        """A guest register write; returns the interrupt events it raises."""
        value &= _DWORD
        before = self._conditions()
        if offset == dr.PCH_GMBUS0:
            self._select_pin(value)
        elif offset == dr.PCH_GMBUS1:
            self._command(value)
        elif offset == dr.PCH_GMBUS2:
            if value & dr.GMBUS_INUSE:
                self.gmbus2 &= ~dr.GMBUS_INUSE  # everything else is read-only
        elif offset == dr.PCH_GMBUS3:
            self._write_data(value)
        elif offset == dr.PCH_GMBUS4:
            self.gmbus4 = value & dr.GMBUS4_IRQ_EN_MASK
            before = 0  # a newly enabled condition that already holds fires at once
        else:
            self.gmbus5 = value
        return self._interrupt(before)

    # --- state machine ------------------------------------------------------------------------
    def _status(self, set_bits: int = 0, clear_bits: int = 0) -> None:
        self.gmbus2 = (self.gmbus2 & ~clear_bits) | set_bits

    def _idle(self) -> None:
        self.phase = GmbusPhase.IDLE
        if self._slave is not None:
            self._slave.stop()
        self._slave = None
        self._total = self._done = 0
        self._status(dr.GMBUS_HW_RDY, dr.GMBUS_ACTIVE | dr.GMBUS_HW_WAIT_PHASE
                     | dr.GMBUS_BYTE_COUNT_STATUS_MASK)

    def _select_pin(self, value: int) -> None:
        self.gmbus0 = value
        self._idle()
        self._status(0, dr.GMBUS_SATOER)

    def _command(self, value: int) -> None:
        if self.gmbus1 & dr.GMBUS_SW_CLR_INT:
            if not value & dr.GMBUS_SW_CLR_INT:
                # toggling SW_CLR_INT off resets the controller
                self.counters.resets += 1
                self.gmbus1 = value & ~dr.GMBUS_SW_RDY
                self._idle()
                self._status(0, dr.GMBUS_SATOER | dr.GMBUS_INT | dr.GMBUS_STALL_TIMEOUT)
            return
        if value & dr.GMBUS_SW_CLR_INT:
            self.gmbus1 = value
            self._status(dr.GMBUS_HW_RDY, dr.GMBUS_INT)
            return
        cycle = (value & dr.GMBUS_CYCLE_MASK) >> dr.GMBUS_CYCLE_SHIFT
        self.gmbus1 = value & ~dr.GMBUS_SW_RDY  # the virtual hardware is always ready
        if not value & dr.GMBUS_SW_RDY or cycle == dr.GMBUS_CYCLE_NONE:
            return
        if cycle == dr.GMBUS_CYCLE_STOP:
            if self.phase is not GmbusPhase.IDLE:
                self._idle()
            return
        self._start_cycle(value, cycle)

    def _start_cycle(self, value: int, cycle: int) -> None:
        self.counters.cycles += 1
        self._cycle = cycle
        port = dr.GMBUS_PIN_TO_PORT.get(self.gmbus0 & dr.GMBUS_PIN_MASK)
        monitor = self.monitor_on(port) if port is not None else None
        address = (value >> dr.GMBUS_SLAVE_ADDR_SHIFT) & dr.I2C_ADDRESS_MASK
        if monitor is None or address != monitor.ddc.address:
            # nobody acknowledges the address: NAK
            self.counters.naks += 1
            self._idle()
            self._status(dr.GMBUS_SATOER)
            return
        slave = monitor.ddc
        slave.start()
        if cycle & dr.GMBUS_CYCLE_INDEX:
            if self.gmbus5 & dr.GMBUS_2BYTE_INDEX_EN:
                slave.write(bytes([(self.gmbus5 >> 8) & 0xFF, self.gmbus5 & 0xFF]))
            else:
                slave.write(bytes([(value >> dr.GMBUS_SLAVE_INDEX_SHIFT) & 0xFF]))
            slave.start()  # repeated start for the data phase
        self._slave = slave
        self._reading = bool(value & dr.GMBUS_SLAVE_READ)
        self._total = (value >> dr.GMBUS_BYTE_COUNT_SHIFT) & dr.GMBUS_BYTE_COUNT_MASK
        self._done = 0
        self.phase = GmbusPhase.DATA
        self._status(dr.GMBUS_ACTIVE | dr.GMBUS_HW_RDY,
                     dr.GMBUS_HW_WAIT_PHASE | dr.GMBUS_SATOER | dr.GMBUS_BYTE_COUNT_STATUS_MASK)
        if not self._reading:
            # the first data dword was loaded into GMBUS3 before the command
            self._write_data(self.gmbus3)
        elif self._total == 0:
            self._data_done()

    def _data_done(self) -> None:
        if self._cycle & dr.GMBUS_CYCLE_STOP:
            self._idle()
        else:
            self.phase = GmbusPhase.WAIT
            self._status(dr.GMBUS_HW_WAIT_PHASE)

    def _progress(self, n: int) -> None:
        self._done += n
        self._status(self._done & dr.GMBUS_BYTE_COUNT_STATUS_MASK, dr.GMBUS_BYTE_COUNT_STATUS_MASK)
        if self._done >= self._total:
            self._data_done()

    def _slave_gone(self) -> bool:
        """Whether the monitor the cycle addressed was unplugged or replaced under the
        transfer: its EEPROM stops answering, so the cycle ends as a NAK (SATOER)
        instead of reading the old monitor's bytes."""
        port = dr.GMBUS_PIN_TO_PORT.get(self.gmbus0 & dr.GMBUS_PIN_MASK)
        monitor = self.monitor_on(port) if port is not None else None
        if monitor is not None and monitor.ddc is self._slave:
            return False
        self.counters.naks += 1
        self._idle()
        self._status(dr.GMBUS_SATOER)
        return True

    def _read_data(self) -> int:
        if self.phase is not GmbusPhase.DATA or not self._reading or self._slave is None:
            return self.gmbus3  # nothing to receive: the last value stays
        if self._slave_gone():
            return self.gmbus3
        n = min(4, self._total - self._done)
        data = self._slave.read(n)
        self.counters.bytes_read += n
        self.gmbus3 = int.from_bytes(data + bytes(4 - n), "little")
        self._progress(n)
        return self.gmbus3

    def _write_data(self, value: int) -> None:
        self.gmbus3 = value
        if self.phase is not GmbusPhase.DATA or self._reading or self._slave is None:
            return
        if self._slave_gone():
            return
        n = min(4, self._total - self._done)
        self._slave.write(value.to_bytes(4, "little")[:n])
        self.counters.bytes_written += n
        self._progress(n)

    # --- interrupts -----------------------------------------------------------------------------
    def _conditions(self) -> int:
        """GMBUS4 enable bits whose condition holds now."""
        held = 0
        for enable, status in _IRQ_SOURCES:
            if self.gmbus2 & status:
                held |= enable
        if not self.gmbus2 & dr.GMBUS_ACTIVE:
            held |= dr.GMBUS_IDLE_EN
        return held

    def _interrupt(self, before: int) -> tuple[IrqEvent, ...]:
        fired = self._conditions() & ~before & self.gmbus4
        if not fired:
            return ()
        self._status(dr.GMBUS_INT)
        return (IrqEvent.GMBUS,)
