"""DP AUX channels: the AUX_CH_CTL / AUX_CH_DATA1-5 registers and the transactions behind them.

A source driver loads a request into the DATA registers (big-endian bytes:
request code and 20-bit address, then length-1, then any write payload), and
writes AUX_CH_CTL with SEND_BUSY and the message size. The emulated channel
completes at once: CTL comes back with DONE, SEND_BUSY clear and the reply
size, the DATA registers hold the reply (reply code byte, then data), and an
AUX interrupt is raised if CTL asked for one. Sticky status bits (DONE,
TIME_OUT_ERROR, RECEIVE_ERROR) clear when written with 1.

Native requests read and write the sink's DPCD (link training included);
I2C-over-AUX requests reach the monitor's DDC EEPROM at 0x50, with the
Middle-Of-Transaction bit keeping the I2C transaction open across AUX
transactions as drm_dp_i2c_xfer uses it. With no monitor on the port every
request times out, as on hardware.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from gvt_core.device.display.ddc import EdidEeprom
from gvt_core.device.display.monitor import VirtualMonitor
from gvt_core.device.interrupt import IrqEvent
from gvt_core.hw import display_regs as dr

_AUX_EVENTS = (IrqEvent.AUX_CHANNEL_A, IrqEvent.AUX_CHANNEL_B, IrqEvent.AUX_CHANNEL_C,
               IrqEvent.AUX_CHANNEL_D)
_DWORD = 0xFFFF_FFFF


def pack_message(data: bytes) -> list[int]:
    """Bytes -> the five DATA dwords (big-endian, zero padded), as i915 packs them."""
    padded = bytes(data) + bytes(dr.DP_AUX_MAX_MESSAGE_BYTES - len(data))
    return [int.from_bytes(padded[i : i + 4], "big") for i in range(0, dr.DP_AUX_MAX_MESSAGE_BYTES, 4)]


def unpack_message(words: list[int], size: int) -> bytes:
    """The first ``size`` bytes of the DATA dwords."""
    return b"".join(w.to_bytes(4, "big") for w in words)[:size]


@attrs.define(eq=False)
class AuxCounters:
    native_reads: int = 0
    native_writes: int = 0
    i2c_reads: int = 0
    i2c_writes: int = 0
    nacks: int = 0
    timeouts: int = 0
    malformed: int = 0


@attrs.frozen
class AuxReply:
    """The outcome of one transaction: reply bytes, or no reply (timeout) or a
    garbled request (receive error)."""

    data: bytes = b""
    timeout: bool = False
    receive_error: bool = False


@attrs.define(eq=False)
class AuxChannel:
    """One AUX channel (index 0..3 = A..D) of a vGPU."""

    index: int
    #: the monitor currently on this channel's port (None: nothing plugged).
    monitor_of: Callable[[], VirtualMonitor | None]
    ctl: int = 0
    data: list[int] = attrs.field(factory=lambda: [0] * dr.AUX_CH_DATA_COUNT)
    counters: AuxCounters = attrs.field(factory=AuxCounters)
    #: the I2C slave an open (MOT) I2C-over-AUX transaction addresses.
    _i2c: EdidEeprom | None = None

    @property
    def ctl_offset(self) -> int:
        return dr.AUX_CH_CTL_OFFSETS[self.index]

    @property
    def event(self) -> IrqEvent:
        return _AUX_EVENTS[self.index]

    def owns(self, offset: int) -> bool:
        return 0 <= offset - self.ctl_offset < 4 * dr.AUX_CH_REG_COUNT and offset % 4 == 0

    def reset(self) -> None:
        self.ctl = 0
        self.data = [0] * dr.AUX_CH_DATA_COUNT
        self._i2c = None

    # --- registers -----------------------------------------------------------------------
    def read(self, offset: int) -> int:
        reg = (offset - self.ctl_offset) >> 2
        return self.ctl if reg == 0 else self.data[reg - 1]

    def write(self, offset: int, value: int) -> tuple[IrqEvent, ...]:
        """A guest register write; returns the interrupt events it raises."""
        value &= _DWORD
        reg = (offset - self.ctl_offset) >> 2
        if reg:
            self.data[reg - 1] = value
            return ()
        if not value & dr.DP_AUX_CH_CTL_SEND_BUSY:
            # clear the sticky bits written as 1, keep the control fields
            sticky = self.ctl & dr.DP_AUX_CH_CTL_STICKY & ~value
            self.ctl = sticky | (value & ~dr.DP_AUX_CH_CTL_STICKY & ~dr.DP_AUX_CH_CTL_SEND_BUSY)
            return ()
        size = (value & dr.DP_AUX_CH_CTL_MESSAGE_SIZE_MASK) >> dr.DP_AUX_CH_CTL_MESSAGE_SIZE_SHIFT
        reply = self.transact(unpack_message(self.data, min(size, dr.DP_AUX_MAX_MESSAGE_BYTES)),
                              size)
        ctl = value & ~(dr.DP_AUX_CH_CTL_SEND_BUSY | dr.DP_AUX_CH_CTL_STICKY
                        | dr.DP_AUX_CH_CTL_MESSAGE_SIZE_MASK)
        ctl |= dr.DP_AUX_CH_CTL_DONE
        if reply.timeout:
            ctl |= dr.DP_AUX_CH_CTL_TIME_OUT_ERROR
        if reply.receive_error:
            ctl |= dr.DP_AUX_CH_CTL_RECEIVE_ERROR
        ctl |= len(reply.data) << dr.DP_AUX_CH_CTL_MESSAGE_SIZE_SHIFT
        self.ctl = ctl
        if reply.data:
            self.data = pack_message(reply.data)
        return (self.event,) if value & dr.DP_AUX_CH_CTL_INTERRUPT else ()

    # --- transactions ----------------------------------------------------------------------
    def transact(self, msg: bytes, size: int) -> AuxReply:
        """Run one AUX request of ``size`` bytes against the monitor."""
        monitor = self.monitor_of()
        if monitor is None:
            self._i2c = None
            self.counters.timeouts += 1
            return AuxReply(timeout=True)
        if not dr.DP_AUX_ADDRESS_ONLY_BYTES <= size <= dr.DP_AUX_MAX_MESSAGE_BYTES:
            self.counters.malformed += 1
            return AuxReply(receive_error=True)
        request = msg[0] >> 4
        address = ((msg[0] & dr.DP_AUX_ADDRESS_HI_MASK) << 16) | (msg[1] << 8) | msg[2]
        length = msg[3] + 1 if size >= dr.DP_AUX_HEADER_BYTES else 0
        if request & dr.DP_AUX_NATIVE_WRITE:
            return self._native(monitor, request, address, length, msg[dr.DP_AUX_HEADER_BYTES:size])
        return self._i2c_over_aux(monitor, request, address, length, msg[dr.DP_AUX_HEADER_BYTES:size])

    def _nack(self, code: int) -> AuxReply:
        self.counters.nacks += 1
        return AuxReply(bytes([code]))

    def _native(self, monitor: VirtualMonitor, request: int, address: int, length: int,
                payload: bytes) -> AuxReply:
        if not 0 < length <= dr.DP_AUX_MAX_PAYLOAD_BYTES:
            return self._nack(dr.AUX_NATIVE_REPLY_NAK)
        dpcd = monitor.dpcd
        if request == dr.DP_AUX_NATIVE_READ:
            self.counters.native_reads += 1
            # DP: a read of an address the sink does not implement is ACKed with zeros
            data = dpcd.read(address, length) if dpcd.covers(address, length) else bytes(length)
            return AuxReply(bytes([dr.AUX_REPLY_ACK]) + data)
        if request == dr.DP_AUX_NATIVE_WRITE:
            if len(payload) < length or not dpcd.covers(address, length):
                # DP: a write the sink cannot take is NAKed (M = 0)
                return self._nack(dr.AUX_NATIVE_REPLY_NAK)
            self.counters.native_writes += 1
            dpcd.write(address, payload[:length])
            return AuxReply(bytes([dr.AUX_REPLY_ACK]))
        return self._nack(dr.AUX_NATIVE_REPLY_NAK)

    def _i2c_over_aux(self, monitor: VirtualMonitor, request: int, address: int, length: int,
                      payload: bytes) -> AuxReply:
        mot = bool(request & dr.DP_AUX_I2C_MOT)
        op = request & dr.DP_AUX_I2C_OP_MASK
        slave = address & dr.I2C_ADDRESS_MASK
        if self._i2c is not None and self._i2c is not monitor.ddc:
            self._i2c = None  # the monitor was replaced mid-transaction
        if slave != monitor.ddc.address:
            self._i2c = None
            return self._nack(dr.AUX_I2C_REPLY_NAK)
        if self._i2c is None or not length:
            monitor.ddc.start()  # (repeated) start: address phase
            self._i2c = monitor.ddc
        data = b""
        if length:
            if length > dr.DP_AUX_MAX_PAYLOAD_BYTES:
                self._i2c = None
                return self._nack(dr.AUX_I2C_REPLY_NAK)
            if op == dr.DP_AUX_I2C_READ:
                self.counters.i2c_reads += 1
                data = self._i2c.read(length)
            elif op == dr.DP_AUX_I2C_WRITE:
                if len(payload) < length:
                    self._i2c = None
                    return self._nack(dr.AUX_I2C_REPLY_NAK)
                self.counters.i2c_writes += 1
                self._i2c.write(payload[:length])
            # WRITE_STATUS_UPDATE: every write completed already; ACK
        if not mot:
            self._i2c.stop()
            self._i2c = None
        return AuxReply(bytes([dr.AUX_REPLY_ACK]) + data)
