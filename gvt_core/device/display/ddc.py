"""The monitor's DDC EEPROM: an I2C slave at 0x50 holding the EDID.

Both ways a driver reads an EDID end here: GMBUS drives the DDC pins of the
port, DP AUX tunnels I2C (I2C-over-AUX). Like a real DDC EEPROM, a write sets
the 8-bit offset pointer (extra written bytes are ignored: the EEPROM is
write-protected) and each read returns the byte at the pointer and advances
it, wrapping at 256. Bytes past the end of the EDID read as 0, as upstream.
"""

from __future__ import annotations

import attrs

from gvt_core.hw import display_regs as dr


@attrs.define(eq=False)
class EdidEeprom:
    """The I2C slave a monitor presents at :data:`display_regs.DDC_EDID_ADDR`."""

    edid: bytes = attrs.field(repr=False)
    offset: int = 0
    #: True between a start condition and the first byte written (the offset byte).
    _expect_offset: bool = False
    bytes_read: int = 0

    address: int = dr.DDC_EDID_ADDR

    def start(self) -> None:
        """A (repeated) start addressed to us; a following write sets the offset."""
        self._expect_offset = True

    def stop(self) -> None:
        self._expect_offset = False

    def write(self, data: bytes) -> None:
        for byte in data:
            if self._expect_offset:
                self.offset = byte
                self._expect_offset = False

    def read(self, count: int) -> bytes:
        self._expect_offset = False
        out = bytearray()
        for _ in range(count):
            out.append(self.edid[self.offset] if self.offset < len(self.edid) else 0)
            self.offset = (self.offset + 1) % dr.DDC_OFFSET_SPACE
        self.bytes_read += count
        return bytes(out)
