"""The picture each demo guest puts on its screen: recognisable, and different per guest.

A guest's picture is a list of filled rectangles on black, so it costs the
same to draw with the CPU (stores through the aperture, two pixels each) or
the GPU (one blit per rectangle): a border in the guest's colour, its number
as large seven-segment digits in the middle, and as many tally squares along
the bottom as its number. The colour comes from a palette of well-separated
hues (index by guest number), so a mix-up between guests is visible at a
glance: wrong colour, wrong digit, wrong count. Sizes scale with the screen.
:func:`render` is the reference image of a picture, to compare what the host
decodes with what the guest drew.
"""

from __future__ import annotations

import numpy as np

from gvt_core.guest.display import Rect

#: well-separated colours (XRGB8888), one per guest number (wrapping after the last).
PALETTE = (
    0xE6194B, 0x3CB44B, 0xFFE119, 0x4363D8, 0xF58231, 0x911EB4, 0x46F0F0, 0xF032E6,
    0xBCF60C, 0xFABEBE, 0x008080, 0xE6BEFF, 0x9A6324, 0xFFFAC8, 0x800000, 0xAAFFC3,
)
#: which of the segments a..g (top, top right, bottom right, bottom, bottom left,
#: top left, middle) each decimal digit lights.
SEGMENTS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg",
            "abcdfg")
#: at most this many tally squares are drawn (the digits carry the rest).
MAX_TALLY = 16


def colour_of(number: int) -> int:
    return PALETTE[(number - 1) % len(PALETTE)]


def _digit(d: int, x: int, y: int, w: int, h: int, t: int, colour: int) -> list[Rect]:
    half = h // 2
    boxes = {
        "a": (x, y, w, t),
        "b": (x + w - t, y, t, half),
        "c": (x + w - t, y + half, t, h - half),
        "d": (x, y + h - t, w, t),
        "e": (x, y + half, t, h - half),
        "f": (x, y, t, half),
        "g": (x, y + half - t // 2, w, t),
    }
    return [Rect(*boxes[s], colour) for s in SEGMENTS[d]]


def picture(number: int, width: int, height: int) -> list[Rect]:
    """Guest ``number``'s picture for a ``width`` x ``height`` screen."""
    if number < 1 or width < 16 or height < 16:
        raise ValueError(f"a picture needs a guest number >= 1 and at least 16x16 pixels, "
                         f"got {number} and {width}x{height}")
    colour = colour_of(number)
    edge = max(2, height // 256)
    rects = [Rect(0, 0, width, edge, colour), Rect(0, height - edge, width, edge, colour),
             Rect(0, 0, edge, height, colour), Rect(width - edge, 0, edge, height, colour)]
    digits = [int(c) for c in str(number)]
    dh = height * 3 // 8
    dw = min(dh // 2, (width * 3 // 4) // (len(digits) * 5 // 4 + 1))
    thick = max(2, dw // 5)
    gap = dw // 4
    total = len(digits) * dw + (len(digits) - 1) * gap
    x, y = (width - total) // 2, (height - dh) // 2 - height // 16
    for d in digits:
        rects += _digit(d, x, y, dw, dh, thick, colour)
        x += dw + gap
    side = max(4, height // 24)
    tally = min(number, MAX_TALLY)
    x = (width - (2 * tally - 1) * side) // 2
    y = height - 3 * side
    for i in range(tally):
        rects.append(Rect(x + 2 * i * side, y, side, side, colour))
    return rects


def render(rects: list[Rect], width: int, height: int) -> np.ndarray:
    """The (height, width, 3) RGB image of ``rects`` on black, drawn in order."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    for r in rects:
        x0, y0 = max(r.x, 0), max(r.y, 0)
        x1, y1 = min(r.x + r.width, width), min(r.y + r.height, height)
        if x0 < x1 and y0 < y1:
            img[y0:y1, x0:x1] = ((r.colour >> 16) & 0xFF, (r.colour >> 8) & 0xFF, r.colour & 0xFF)
    return img


def pixel_count(rects: list[Rect]) -> int:
    """Pixels the rectangles cover, overlaps counted twice (what drawing costs)."""
    return sum(r.width * r.height for r in rects)
