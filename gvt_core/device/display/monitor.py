"""A virtual DisplayPort monitor: its EDID, its DPCD and its DDC EEPROM."""

from __future__ import annotations

import attrs

from gvt_core.device.display.ddc import EdidEeprom
from gvt_core.device.display.dpcd import Dpcd
from gvt_core.device.display.edid import Edid


@attrs.define(eq=False)
class VirtualMonitor:
    """What is plugged into a port. A new plug is a new monitor (fresh DPCD)."""

    edid: Edid
    dpcd: Dpcd = attrs.field(factory=Dpcd)
    ddc: EdidEeprom = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.ddc = EdidEeprom(self.edid.data)
