"""The virtual DP sink's DPCD: 0x700 bytes of DisplayPort configuration data (facts 9.1).

GVT's sink is a DP 1.2 monitor (revision 0x12, 5.4 Gbps, 4 lanes with
enhanced framing, one sink). Link training always succeeds: writing
TRAINING_PATTERN_SET with pattern 1 reports clock recovery done on all four
lanes, pattern 2 channel equalisation, symbol lock and inter-lane alignment,
and "training off" the receive ports in sync (upstream
``dp_aux_ch_ctl_link_training``).
"""

from __future__ import annotations

import attrs

from gvt_core.hw import display_regs as dr

_TWO_LANES = 0x11  # the same per-lane bit in both nibbles of a LANEx_y_STATUS byte


def _fresh() -> bytearray:
    data = bytearray(dr.DPCD_SIZE)
    data[: len(dr.DPCD_FIXED_HEADER)] = dr.DPCD_FIXED_HEADER
    data[dr.DP_SINK_COUNT] = 1
    return data


@attrs.define(eq=False)
class Dpcd:
    """One sink's DPCD. Addresses beyond 0x6FF are not implemented by the sink."""

    data: bytearray = attrs.field(factory=_fresh, repr=False)
    #: training patterns written, in order (diagnostics).
    trainings: int = 0

    def covers(self, addr: int, length: int) -> bool:
        return addr >= 0 and length >= 0 and addr + length <= dr.DPCD_SIZE

    def read(self, addr: int, length: int) -> bytes:
        """``length`` bytes at ``addr``; the caller checks :meth:`covers` first."""
        return bytes(self.data[addr : addr + length])

    def write(self, addr: int, payload: bytes) -> None:
        """Store ``payload`` at ``addr`` (checked with :meth:`covers`), running link
        training when the training-pattern byte is written."""
        for i, byte in enumerate(payload):
            self.data[addr + i] = byte
            if addr + i == dr.DP_TRAINING_PATTERN_SET:
                self._train(byte)

    def _train(self, value: int) -> None:
        self.trainings += 1
        pattern = value & dr.DP_TRAINING_PATTERN_MASK
        if pattern == dr.DP_TRAINING_PATTERN_1:
            for reg in (dr.DP_LANE0_1_STATUS, dr.DP_LANE2_3_STATUS):
                self.data[reg] |= dr.DP_LANE_CR_DONE * _TWO_LANES
        elif pattern == dr.DP_TRAINING_PATTERN_2:
            for reg in (dr.DP_LANE0_1_STATUS, dr.DP_LANE2_3_STATUS):
                self.data[reg] |= (dr.DP_LANE_CHANNEL_EQ_DONE | dr.DP_LANE_SYMBOL_LOCKED) * _TWO_LANES
            self.data[dr.DP_LANE_ALIGN_STATUS_UPDATED] |= dr.DP_INTERLANE_ALIGN_DONE
        elif pattern == dr.DP_TRAINING_PATTERN_DISABLE:
            self.data[dr.DP_SINK_STATUS] = dr.DP_RECEIVE_PORT_0_STATUS | dr.DP_RECEIVE_PORT_1_STATUS

    @property
    def link_trained(self) -> bool:
        """What a source checks after training: all lanes locked, aligned, in sync."""
        full = (dr.DP_LANE_CR_DONE | dr.DP_LANE_CHANNEL_EQ_DONE | dr.DP_LANE_SYMBOL_LOCKED) * _TWO_LANES
        return (
            self.data[dr.DP_LANE0_1_STATUS] & full == full
            and self.data[dr.DP_LANE2_3_STATUS] & full == full
            and bool(self.data[dr.DP_LANE_ALIGN_STATUS_UPDATED] & dr.DP_INTERLANE_ALIGN_DONE)
        )
