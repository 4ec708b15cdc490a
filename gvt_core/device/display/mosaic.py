"""A mosaic of guest screens: every vGPU's screen side by side, labelled, for people to look at.

Each tile is one screen scaled to a common height (aspect kept), with a label
strip under it ("vGPU 3  GVTg_V4_8  1024x768"). A vGPU with nothing to show
(no mode set, a plane the decoder refuses) gets a dark tile saying why, so a
missing screen is visible rather than silently absent. Tiles flow in rows of
at most :data:`DEFAULT_COLUMNS`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import numpy as np

from gvt_core.device.display.screen import capture, encode_png
from gvt_core.errors import FramebufferError

DEFAULT_TILE_HEIGHT = 300
DEFAULT_COLUMNS = 4
_LABEL_HEIGHT = 22
_GAP = 8
_BACKGROUND = (32, 32, 32)
_NO_SIGNAL = (12, 12, 40)
_TEXT = (235, 235, 235)


@attrs.frozen
class MosaicTile:
    """One guest: its label and screen, or why there is no screen."""

    label: str
    image: np.ndarray | None = attrs.field(default=None, eq=False, repr=False)
    note: str = ""


def _fit(img: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    width = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(img, "RGB").resize((width, height), Image.BILINEAR))


def _font() -> Any:
    from PIL import ImageFont

    return ImageFont.load_default()


def _text_tile(width: int, height: int, lines: Sequence[str], colour: tuple[int, int, int]) -> Any:
    from PIL import Image, ImageDraw

    tile = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(tile)
    y = 4
    for line in lines:
        draw.text((6, y), line, fill=_TEXT, font=_font())
        y += 14
    return tile


def build_mosaic(tiles: Sequence[MosaicTile], *, tile_height: int = DEFAULT_TILE_HEIGHT,
                 columns: int = DEFAULT_COLUMNS) -> np.ndarray:
    """The mosaic of ``tiles`` as an RGB array."""
    from PIL import Image

    if not tiles:
        raise ValueError("a mosaic needs at least one tile")
    if tile_height < 16 or columns < 1:
        raise ValueError("tile height must be at least 16 pixels and columns at least 1")
    blocks = []
    for t in tiles:
        if t.image is not None:
            body = Image.fromarray(_fit(t.image, tile_height), "RGB")
        else:
            width = tile_height * 4 // 3
            lines = ["no signal", *textwrap.wrap(t.note, max(8, width // 7))]
            body = _text_tile(width, tile_height, lines[: tile_height // 14], _NO_SIGNAL)
        label = _text_tile(body.width, _LABEL_HEIGHT, [t.label], _BACKGROUND)
        block = Image.new("RGB", (body.width, tile_height + _LABEL_HEIGHT), _BACKGROUND)
        block.paste(body, (0, 0))
        block.paste(label, (0, tile_height))
        blocks.append(block)
    rows = [blocks[i : i + columns] for i in range(0, len(blocks), columns)]
    width = max(sum(b.width for b in row) + _GAP * (len(row) + 1) for row in rows)
    height = len(rows) * (tile_height + _LABEL_HEIGHT + _GAP) + _GAP
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    y = _GAP
    for row in rows:
        x = _GAP
        for block in row:
            canvas.paste(block, (x, y))
            x += block.width + _GAP
        y += tile_height + _LABEL_HEIGHT + _GAP
    return np.asarray(canvas)


def vgpu_tile(vgpu: Any) -> MosaicTile:
    """The tile of one vGPU: its screen, or the reason it has none."""
    try:
        screen = capture(vgpu)
    except FramebufferError as exc:
        return MosaicTile(f"vGPU {vgpu.id}  {vgpu.type.name}", None, str(exc))
    return MosaicTile(f"vGPU {vgpu.id}  {vgpu.type.name}  {screen.width}x{screen.height}",
                      screen.rgb)


def mosaic_of(vgpus: Iterable[Any], **kwargs: Any) -> np.ndarray:
    """All ``vgpus``' screens side by side, in id order."""
    return build_mosaic([vgpu_tile(v) for v in sorted(vgpus, key=lambda v: v.id)], **kwargs)


def mosaic_png(vgpus: Iterable[Any], **kwargs: Any) -> bytes:
    return encode_png(mosaic_of(vgpus, **kwargs))
