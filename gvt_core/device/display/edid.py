"""EDID: the identity and mode list of a vGPU's virtual monitor (facts 9.2).

GVT-g ships two built-in EDID base blocks for its virtual DP monitor, an HP
ZR2440w whose best mode is 1024x768 (the ``_8`` type) or 1920x1200 (every
other type). They are reproduced byte for byte here (upstream
``virtual_dp_monitor_edid`` in gvt/display.c), checksums included; a user may
plug a monitor with any other valid EDID (:func:`load_edid`).

:class:`Edid` also lists the modes a guest's DRM core would find in it and the
one its fbdev/modeset helper would pick, so tests and the guest-driver model
can tell which resolution a guest ends up with.
"""

from __future__ import annotations

import os
import struct

import attrs

from gvt_core.device.types import RESOLUTION_1024_768, RESOLUTION_1920_1200, Resolution
from gvt_core.errors import EdidError
from gvt_core.hw import display_regs as dr

BLOCK = dr.EDID_BLOCK_SIZE

#: GVT_EDID_1024_768: an EDID 1.4 block whose largest mode is 1024x768 (established timings).
EDID_1024_768 = bytes([
    0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00,
    0x22, 0xF0, 0x54, 0x29, 0x00, 0x00, 0x00, 0x00, 0x04, 0x17,
    0x01, 0x04,
    0xA5, 0x34, 0x20, 0x78, 0x23,
    0xFC, 0x81, 0xA4, 0x55, 0x4D, 0x9D, 0x25, 0x12, 0x50, 0x54,
    0x21, 0x08, 0x00,
    0x00, 0xC0, 0x00, 0xC0, 0x00, 0x40, 0x00, 0x80, 0x00, 0x00,
    0x00, 0x40, 0x00, 0x00, 0x00, 0x01,
    0x00, 0x00, 0x80, 0xA0, 0x70, 0xB0,
    0x23, 0x40, 0x30, 0x20, 0x36, 0x00, 0x06, 0x44, 0x21, 0x00, 0x00, 0x1A,
    0x00, 0x00, 0x00, 0xFD, 0x00, 0x18, 0x3C, 0x18, 0x50, 0x11, 0x00, 0x0A,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x00, 0x00, 0x00, 0xFC, 0x00, 0x48,
    0x50, 0x20, 0x5A, 0x52, 0x32, 0x34, 0x34, 0x30, 0x77, 0x0A, 0x20, 0x20,
    0x00, 0x00, 0x00, 0xFF, 0x00, 0x43, 0x4E, 0x34, 0x33, 0x30, 0x34, 0x30,
    0x44, 0x58, 0x51, 0x0A, 0x20, 0x20,
    0x00,
    0xEF,
])

#: GVT_EDID_1920_1200: same monitor, a 1920x1200 detailed timing (154 MHz) and standard timings.
EDID_1920_1200 = bytes([
    0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00,
    0x22, 0xF0, 0x54, 0x29, 0x00, 0x00, 0x00, 0x00, 0x04, 0x17,
    0x01, 0x04,
    0xA5, 0x34, 0x20, 0x78, 0x23,
    0xFC, 0x81, 0xA4, 0x55, 0x4D, 0x9D, 0x25, 0x12, 0x50, 0x54,
    0x21, 0x08, 0x00,
    0xD1, 0xC0, 0x81, 0xC0, 0x81, 0x40, 0x81, 0x80, 0x95, 0x00,
    0xA9, 0x40, 0xB3, 0x00, 0x01, 0x01,
    0x28, 0x3C, 0x80, 0xA0, 0x70, 0xB0,
    0x23, 0x40, 0x30, 0x20, 0x36, 0x00, 0x06, 0x44, 0x21, 0x00, 0x00, 0x1A,
    0x00, 0x00, 0x00, 0xFD, 0x00, 0x18, 0x3C, 0x18, 0x50, 0x11, 0x00, 0x0A,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x00, 0x00, 0x00, 0xFC, 0x00, 0x48,
    0x50, 0x20, 0x5A, 0x52, 0x32, 0x34, 0x34, 0x30, 0x77, 0x0A, 0x20, 0x20,
    0x00, 0x00, 0x00, 0xFF, 0x00, 0x43, 0x4E, 0x34, 0x33, 0x30, 0x34, 0x30,
    0x44, 0x58, 0x51, 0x0A, 0x20, 0x20,
    0x00,
    0x45,
])

BUILTIN_EDIDS: dict[Resolution, bytes] = {
    RESOLUTION_1024_768: EDID_1024_768,
    RESOLUTION_1920_1200: EDID_1920_1200,
}

# EDID 1.4 base-block layout
_MANUFACTURER = 0x08
_VERSION = 0x12
_FEATURES = 0x18
_FEATURE_PREFERRED_TIMING = 1 << 1
_ESTABLISHED = 0x23
_STANDARD = 0x26
_STANDARD_COUNT = 8
_DESCRIPTORS = (0x36, 0x48, 0x5A, 0x6C)
_DESCRIPTOR_SIZE = 18
_TAG_SERIAL = 0xFF
_TAG_NAME = 0xFC
_TAG_RANGE = 0xFD

#: established timings I/II/manufacturer: (byte, bit) -> (width, height, refresh Hz);
#: 1024x768 at 87 Hz interlaced is left out (DRM does not offer it to userspace).
_ESTABLISHED_MODES: dict[tuple[int, int], tuple[int, int, int]] = {
    (0, 7): (720, 400, 70), (0, 6): (720, 400, 88), (0, 5): (640, 480, 60),
    (0, 4): (640, 480, 67), (0, 3): (640, 480, 72), (0, 2): (640, 480, 75),
    (0, 1): (800, 600, 56), (0, 0): (800, 600, 60),
    (1, 7): (800, 600, 72), (1, 6): (800, 600, 75), (1, 5): (832, 624, 75),
    (1, 3): (1024, 768, 60), (1, 2): (1024, 768, 70), (1, 1): (1024, 768, 75),
    (1, 0): (1280, 1024, 75),
    (2, 7): (1152, 870, 75),
}
#: standard timing aspect ratio (bits 7:6 of the second byte, EDID 1.3+): (num, den)
_STD_ASPECT = {0: (10, 16), 1: (3, 4), 2: (4, 5), 3: (9, 16)}
_STD_UNUSED = ((0x01, 0x01), (0x00, 0x00), (0x20, 0x20))


@attrs.frozen(order=True)
class DisplayMode:
    """One mode a monitor offers. ``refresh_mhz`` is the vertical refresh in mHz
    (GVT's ``vrefresh_k``); ``pixel_clock_khz`` is known for detailed timings only."""

    width: int
    height: int
    refresh_mhz: int
    pixel_clock_khz: int | None = attrs.field(default=None, order=False)
    #: where it came from: "detailed", "standard" or "established".
    source: str = attrs.field(default="established", order=False)
    htotal: int | None = attrs.field(default=None, order=False)
    vtotal: int | None = attrs.field(default=None, order=False)

    @property
    def size(self) -> Resolution:
        return (self.width, self.height)

    @property
    def refresh_hz(self) -> float:
        return self.refresh_mhz / 1000


def _checksum_ok(block: bytes) -> bool:
    return sum(block) % 256 == 0


def fix_checksum(block: bytes) -> bytes:
    """``block`` with its last byte set so the 128 bytes sum to 0 mod 256."""
    if len(block) != BLOCK:
        raise ValueError(f"an EDID block is {BLOCK} bytes, got {len(block)}")
    return block[:-1] + bytes([(-sum(block[:-1])) & 0xFF])


def _validate(data: bytes, source: str) -> None:
    """The checks every :class:`Edid` passes (typed :class:`EdidError` naming what is wrong)."""
    if not data or len(data) % BLOCK:
        raise EdidError(source, f"size {len(data)} is not a whole number of {BLOCK}-byte blocks")
    blocks = len(data) // BLOCK
    if blocks > dr.EDID_MAX_BLOCKS:
        raise EdidError(source, f"{blocks} blocks; at most {dr.EDID_MAX_BLOCKS} are served")
    if data[: len(dr.EDID_HEADER)] != dr.EDID_HEADER:
        raise EdidError(source, f"bad header {data[:8].hex(' ')}")
    for i in range(blocks):
        block = data[i * BLOCK : (i + 1) * BLOCK]
        if not _checksum_ok(block):
            raise EdidError(source, f"block {i} checksum fails (sum {sum(block) % 256:#04x} "
                                    "mod 256, must be 0)")
    declared = data[dr.EDID_EXTENSION_COUNT]
    if declared != blocks - 1:
        raise EdidError(source, f"the base block declares {declared} extension blocks but "
                                f"{blocks - 1} follow it")


@attrs.frozen
class Edid:
    """A validated EDID: the base block and its extension blocks. Every instance is
    checked when made (a host caller may build one directly), so what reaches a
    monitor is never larger than :data:`~gvt_core.hw.display_regs.EDID_MAX_BLOCKS`
    blocks nor malformed."""

    data: bytes = attrs.field(repr=False, converter=bytes)
    source: str = "built-in"

    def __attrs_post_init__(self) -> None:
        _validate(self.data, self.source)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "bytes") -> Edid:
        """Validate ``data`` (typed :class:`EdidError` naming what is wrong)."""
        return cls(data, source)

    # --- identity ------------------------------------------------------------------------
    @property
    def base(self) -> bytes:
        return self.data[:BLOCK]

    @property
    def manufacturer(self) -> str:
        """The three-letter PNP id."""
        word = int.from_bytes(self.base[_MANUFACTURER : _MANUFACTURER + 2], "big")
        return "".join(chr(ord("A") - 1 + ((word >> s) & 0x1F)) for s in (10, 5, 0))

    @property
    def product(self) -> int:
        return int.from_bytes(self.base[_MANUFACTURER + 2 : _MANUFACTURER + 4], "little")

    @property
    def version(self) -> tuple[int, int]:
        return (self.base[_VERSION], self.base[_VERSION + 1])

    def _descriptor_text(self, tag: int) -> str | None:
        for off in _DESCRIPTORS:
            d = self.base[off : off + _DESCRIPTOR_SIZE]
            if d[0] == 0 and d[1] == 0 and d[3] == tag:
                return d[5:].split(b"\x0a")[0].decode("ascii", "replace").rstrip()
        return None

    @property
    def name(self) -> str | None:
        return self._descriptor_text(_TAG_NAME)

    @property
    def serial(self) -> str | None:
        return self._descriptor_text(_TAG_SERIAL)

    # --- modes -----------------------------------------------------------------------------
    def detailed_modes(self) -> list[DisplayMode]:
        out = []
        for off in _DESCRIPTORS:
            d = self.base[off : off + _DESCRIPTOR_SIZE]
            clock = struct.unpack_from("<H", d)[0] * 10
            if clock == 0:
                continue  # a display descriptor, not a timing
            hactive = d[2] | ((d[4] & 0xF0) << 4)
            hblank = d[3] | ((d[4] & 0x0F) << 8)
            vactive = d[5] | ((d[7] & 0xF0) << 4)
            vblank = d[6] | ((d[7] & 0x0F) << 8)
            htotal, vtotal = hactive + hblank, vactive + vblank
            if not hactive or not vactive or not htotal or not vtotal:
                continue
            refresh = round(clock * 1_000_000 / (htotal * vtotal))
            out.append(DisplayMode(hactive, vactive, refresh, clock, "detailed", htotal, vtotal))
        return out

    def standard_modes(self) -> list[DisplayMode]:
        out = []
        for i in range(_STANDARD_COUNT):
            a, b = self.base[_STANDARD + 2 * i], self.base[_STANDARD + 2 * i + 1]
            if (a, b) in _STD_UNUSED or a == 0:
                continue
            width = (a + 31) * 8
            num, den = _STD_ASPECT[b >> 6]
            height = width * num // den
            out.append(DisplayMode(width, height, ((b & 0x3F) + 60) * 1000, None, "standard"))
        return out

    def established_modes(self) -> list[DisplayMode]:
        out = []
        for (byte, bit), (w, h, hz) in _ESTABLISHED_MODES.items():
            if self.base[_ESTABLISHED + byte] & (1 << bit):
                out.append(DisplayMode(w, h, hz * 1000, None, "established"))
        return out

    def modes(self) -> list[DisplayMode]:
        """Every mode, detailed first, without duplicates of the same size and rate."""
        seen: set[tuple[int, int, int]] = set()
        out = []
        for m in self.detailed_modes() + self.standard_modes() + self.established_modes():
            key = (m.width, m.height, round(m.refresh_mhz / 1000))
            if key not in seen:
                seen.add(key)
                out.append(m)
        return out

    @property
    def preferred_mode(self) -> DisplayMode | None:
        """The first detailed timing, when the monitor marks it preferred."""
        detailed = self.detailed_modes()
        if detailed and self.base[_FEATURES] & _FEATURE_PREFERRED_TIMING:
            return detailed[0]
        return None

    def best_mode(self) -> DisplayMode:
        """The mode a guest's DRM modeset helper picks: the preferred one, else the
        largest (then the fastest), as ``drm_mode_sort`` orders them."""
        preferred = self.preferred_mode
        if preferred is not None:
            return preferred
        modes = self.modes()
        if not modes:
            raise EdidError(self.source, "it lists no usable mode")
        return max(modes, key=lambda m: (m.width * m.height, m.refresh_mhz))


def builtin_edid(resolution: Resolution) -> Edid:
    """GVT's virtual-monitor EDID for a vGPU type's resolution."""
    try:
        data = BUILTIN_EDIDS[resolution]
    except KeyError:
        known = ", ".join(f"{w}x{h}" for w, h in BUILTIN_EDIDS)
        raise EdidError(f"the built-in table ({resolution[0]}x{resolution[1]})",
                        f"no built-in EDID for that resolution (built in: {known})") from None
    return Edid(data, f"built-in {resolution[0]}x{resolution[1]}")


def load_edid(path: str | os.PathLike[str]) -> Edid:
    """Read and validate an EDID file (raw binary, as ``/sys/class/drm/*/edid``)."""
    limit = dr.EDID_MAX_BLOCKS * BLOCK
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise EdidError(str(path), f"larger than {limit} bytes")
    return Edid.from_bytes(data, str(path))
