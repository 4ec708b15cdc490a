"""DP AUX channels and the virtual sink's DPCD: native and I2C-over-AUX, as i915 drives them."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gvt_core.device.display.aux import AuxChannel, pack_message, unpack_message
from gvt_core.device.display.dpcd import Dpcd
from gvt_core.device.display.edid import builtin_edid
from gvt_core.device.display.monitor import VirtualMonitor
from gvt_core.device.interrupt import IrqEvent
from gvt_core.hw import display_regs as dr

NATIVE_READ, NATIVE_WRITE = dr.DP_AUX_NATIVE_READ, dr.DP_AUX_NATIVE_WRITE
I2C_READ, I2C_WRITE, MOT = dr.DP_AUX_I2C_READ, dr.DP_AUX_I2C_WRITE, dr.DP_AUX_I2C_MOT
EDID = builtin_edid((1920, 1200))


@attrs.define
class Reply:
    ctl: int
    data: bytes
    events: tuple[IrqEvent, ...]

    @property
    def done(self) -> bool:
        return bool(self.ctl & dr.DP_AUX_CH_CTL_DONE)

    @property
    def timeout(self) -> bool:
        return bool(self.ctl & dr.DP_AUX_CH_CTL_TIME_OUT_ERROR)

    @property
    def receive_error(self) -> bool:
        return bool(self.ctl & dr.DP_AUX_CH_CTL_RECEIVE_ERROR)


def xfer(ch: AuxChannel, send: bytes, *, irq: bool = False) -> Reply:
    """i915's intel_dp_aux_xfer: load DATA, kick CTL, read back status and reply."""
    base = ch.ctl_offset
    for i, word in enumerate(pack_message(send)):
        ch.write(base + 4 + 4 * i, word)
    ctl = (dr.DP_AUX_CH_CTL_SEND_BUSY | dr.DP_AUX_CH_CTL_DONE | dr.DP_AUX_CH_CTL_TIME_OUT_ERROR
           | dr.DP_AUX_CH_CTL_RECEIVE_ERROR | (len(send) << dr.DP_AUX_CH_CTL_MESSAGE_SIZE_SHIFT)
           | (dr.DP_AUX_CH_CTL_INTERRUPT if irq else 0) | 0x3F)  # 2x bit clock divider
    events = ch.write(base, ctl)
    status = ch.read(base)
    assert not status & dr.DP_AUX_CH_CTL_SEND_BUSY
    size = (status & dr.DP_AUX_CH_CTL_MESSAGE_SIZE_MASK) >> dr.DP_AUX_CH_CTL_MESSAGE_SIZE_SHIFT
    data = unpack_message([ch.read(base + 4 + 4 * i) for i in range(5)], size)
    # clear the sticky bits as i915 does after every transfer
    ch.write(base, status | dr.DP_AUX_CH_CTL_STICKY)
    return Reply(status, data, events)


def header(request: int, address: int, length: int | None = None) -> bytes:
    out = bytes([(request << 4) | ((address >> 16) & 0xF), (address >> 8) & 0xFF, address & 0xFF])
    return out if length is None else out + bytes([length - 1])


def native_read(ch: AuxChannel, address: int, length: int) -> bytes:
    reply = xfer(ch, header(NATIVE_READ, address, length))
    assert reply.done and not reply.timeout and reply.data[0] == dr.AUX_REPLY_ACK
    return reply.data[1:]


def native_write(ch: AuxChannel, address: int, data: bytes) -> int:
    reply = xfer(ch, header(NATIVE_WRITE, address, len(data)) + data)
    assert reply.done and len(reply.data) == 1
    return reply.data[0]


@pytest.fixture
def monitor() -> VirtualMonitor:
    return VirtualMonitor(EDID)


@pytest.fixture
def aux_b(monitor: VirtualMonitor) -> AuxChannel:
    return AuxChannel(1, lambda: monitor)


def test_dpcd_header() -> None:
    dpcd = Dpcd()
    assert len(dpcd.data) == 0x700
    assert dpcd.read(0, 11) == bytes([0x12, 0x14, 0x84]) + bytes(8)
    assert dpcd.read(dr.DP_SINK_COUNT, 1) == b"\x01"
    assert not dpcd.link_trained


def test_native_read_receiver_caps(aux_b: AuxChannel) -> None:
    assert native_read(aux_b, 0x000, 15) == bytes([0x12, 0x14, 0x84]) + bytes(12)
    assert native_read(aux_b, dr.DP_SINK_COUNT, 1) == b"\x01"


def test_link_training_succeeds(aux_b: AuxChannel, monitor: VirtualMonitor) -> None:
    """intel_dp_link_train: set link rate/lanes, TPS1 (scrambling off), check CR,
    TPS2, check EQ + alignment, training off, sink in sync."""
    assert native_write(aux_b, 0x100, bytes([0x14, 0x84])) == dr.AUX_REPLY_ACK
    assert native_write(aux_b, dr.DP_TRAINING_PATTERN_SET, bytes([0x21, 0, 0, 0, 0])) == 0
    status = native_read(aux_b, dr.DP_LANE0_1_STATUS, 6)
    assert status[0] & 0x11 == 0x11 and status[1] & 0x11 == 0x11  # CR done, 4 lanes
    assert native_write(aux_b, dr.DP_TRAINING_PATTERN_SET, bytes([0x22])) == 0
    status = native_read(aux_b, dr.DP_LANE0_1_STATUS, 6)
    assert status[0] == status[1] == 0x77 and status[2] & dr.DP_INTERLANE_ALIGN_DONE
    assert native_write(aux_b, dr.DP_TRAINING_PATTERN_SET, bytes([0x00])) == 0
    assert native_read(aux_b, dr.DP_SINK_STATUS, 1) == b"\x03"
    assert monitor.dpcd.link_trained and monitor.dpcd.trainings == 3
    assert native_write(aux_b, dr.DP_SET_POWER, b"\x01") == 0
    assert monitor.dpcd.read(dr.DP_SET_POWER, 1) == b"\x01"


def test_native_out_of_range(aux_b: AuxChannel) -> None:
    # DP: reads of unimplemented addresses are ACKed with zeros, writes are NAKed
    assert native_read(aux_b, 0x6FC, 8) == bytes(8)
    assert native_write(aux_b, 0x6FF, b"\x01\x02") == dr.AUX_NATIVE_REPLY_NAK
    assert native_write(aux_b, 0x6FF, b"\x07") == dr.AUX_REPLY_ACK  # the last byte is writable
    reply = xfer(aux_b, header(NATIVE_READ, 0, 17))
    assert reply.data == bytes([dr.AUX_NATIVE_REPLY_NAK])  # more than 16 bytes
    reply = xfer(aux_b, header(NATIVE_WRITE, 0x100, 4) + b"\x01")  # payload shorter than length
    assert reply.data == bytes([dr.AUX_NATIVE_REPLY_NAK])


def i2c_read_edid(ch: AuxChannel, offset: int = 0, length: int = 128) -> bytes:
    """drm_do_probe_ddc_edid over drm_dp_i2c_xfer: write the offset, read, close."""
    out = b""
    assert xfer(ch, header(I2C_WRITE | MOT, 0x50)).data == b"\x00"  # address-only start
    assert xfer(ch, header(I2C_WRITE | MOT, 0x50, 1) + bytes([offset])).data == b"\x00"
    assert xfer(ch, header(I2C_READ | MOT, 0x50)).data == b"\x00"  # repeated start, read
    while len(out) < length:
        n = min(16, length - len(out))
        reply = xfer(ch, header(I2C_READ | MOT, 0x50, n))
        assert reply.data[0] == dr.AUX_REPLY_ACK and len(reply.data) == n + 1
        out += reply.data[1:]
    assert xfer(ch, header(I2C_READ, 0x50)).data == b"\x00"  # stop
    return out


def test_i2c_over_aux_reads_the_edid(aux_b: AuxChannel) -> None:
    assert i2c_read_edid(aux_b) == EDID.data
    assert i2c_read_edid(aux_b, 0x40, 16) == EDID.data[0x40:0x50]
    assert aux_b.counters.i2c_reads == 8 + 1


def test_i2c_other_slave_is_nacked(aux_b: AuxChannel) -> None:
    assert xfer(aux_b, header(I2C_WRITE | MOT, 0x37)).data == bytes([dr.AUX_I2C_REPLY_NAK])
    assert xfer(aux_b, header(I2C_READ | MOT, 0x51, 4)).data == bytes([dr.AUX_I2C_REPLY_NAK])


def test_no_monitor_times_out() -> None:
    ch = AuxChannel(1, lambda: None)
    reply = xfer(ch, header(NATIVE_READ, 0, 1))
    assert reply.done and reply.timeout and reply.data == b""
    assert ch.counters.timeouts == 1


def test_interrupt_and_sticky_bits(aux_b: AuxChannel) -> None:
    reply = xfer(aux_b, header(NATIVE_READ, 0, 1), irq=True)
    assert reply.events == (IrqEvent.AUX_CHANNEL_B,)
    assert AuxChannel(0, lambda: None).event is IrqEvent.AUX_CHANNEL_A
    # the helper cleared DONE; a transfer leaves it set until written with 1
    aux_b.write(aux_b.ctl_offset + 4, int.from_bytes(header(NATIVE_READ, 0, 1), "big"))
    aux_b.write(aux_b.ctl_offset, dr.DP_AUX_CH_CTL_SEND_BUSY | (4 << 20))
    assert aux_b.read(aux_b.ctl_offset) & dr.DP_AUX_CH_CTL_DONE
    aux_b.write(aux_b.ctl_offset, 0)  # writing 0 keeps sticky bits
    assert aux_b.read(aux_b.ctl_offset) & dr.DP_AUX_CH_CTL_DONE
    aux_b.write(aux_b.ctl_offset, dr.DP_AUX_CH_CTL_DONE)
    assert not aux_b.read(aux_b.ctl_offset) & dr.DP_AUX_CH_CTL_DONE


@pytest.mark.parametrize("size", [0, 1, 2, 21, 31])
def test_malformed_sizes(aux_b: AuxChannel, size: int) -> None:
    base = aux_b.ctl_offset
    aux_b.write(base, dr.DP_AUX_CH_CTL_SEND_BUSY | (size << dr.DP_AUX_CH_CTL_MESSAGE_SIZE_SHIFT))
    ctl = aux_b.read(base)
    assert ctl & dr.DP_AUX_CH_CTL_DONE and ctl & dr.DP_AUX_CH_CTL_RECEIVE_ERROR


def test_monitor_replaced_mid_transaction() -> None:
    current = [VirtualMonitor(EDID)]
    ch = AuxChannel(1, lambda: current[0])
    xfer(ch, header(I2C_WRITE | MOT, 0x50, 1) + b"\x10")
    current[0] = VirtualMonitor(builtin_edid((1024, 768)))
    reply = xfer(ch, header(I2C_READ | MOT, 0x50, 8))
    # a fresh start on the new monitor's EEPROM: offset 0 of its EDID
    assert reply.data[1:] == current[0].edid.data[:8]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 0xFFFF_FFFF)), max_size=40))
def test_hostile_register_writes_never_raise(writes: list[tuple[int, int]]) -> None:
    monitor = VirtualMonitor(EDID)
    ch = AuxChannel(1, lambda: monitor)
    for reg, value in writes:
        ch.write(ch.ctl_offset + 4 * reg, value)
        for r in range(6):
            assert 0 <= ch.read(ch.ctl_offset + 4 * r) <= 0xFFFF_FFFF
    assert len(ch.data) == 5 and len(monitor.dpcd.data) == 0x700
