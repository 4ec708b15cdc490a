"""A vGPU's current screen as the host sees it: the host's way to the guest framebuffer.

Upstream exposes the decoded plane as a dma-buf (``vgpu_get_dmabuf``); here
:func:`capture` returns it as pixels. The screen is the first enabled pipe
(upstream's ``get_active_pipe``), pipe-source sized: the primary plane, the
sprite plane on top (placed at SPRPOS, scaled nearest-neighbour when SPRSCALE
asks for it), then the ARGB cursor blended on top (straight alpha) and
clipped to the pipe. The vGPU's lock is held while registers and pixels are
read, so the picture is one consistent frame.
"""

from __future__ import annotations

import io
from typing import Any

import attrs
import numpy as np

from gvt_core.device.display.framebuffer import (
    cursor_surface,
    primary_surface,
    read_rgba,
    sprite_surface,
)
from gvt_core.device.display.planes import (
    CursorPlane,
    PrimaryPlane,
    SpritePlane,
    active_pipe,
    decode_cursor,
    decode_primary,
    decode_sprite,
)
from gvt_core.device.display.surface_memory import SurfaceMemory, VgpuSurfaceMemory
from gvt_core.device.display.vregs import RegisterView
from gvt_core.errors import PlaneDisabledError, VgpuStateError


@attrs.frozen
class Screen:
    """One captured frame: RGB pixels and the plane state they came from."""

    rgb: np.ndarray = attrs.field(repr=False, eq=False)
    pipe: int
    primary: PrimaryPlane
    sprite: SpritePlane
    cursor: CursorPlane

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def format(self) -> str:
        """The primary plane's pixel format (DRM name)."""
        return self.primary.format_name

    def png(self) -> bytes:
        return encode_png(self.rgb)


def encode_png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


def _place(dst: np.ndarray, src: np.ndarray, x: int, y: int, blend: bool) -> None:
    """Put ``src`` (h, w, 4) at (x, y) of ``dst`` (H, W, 3), clipped; alpha-blended
    with ``blend``, else opaque."""
    h, w = src.shape[:2]
    H, W = dst.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 >= x1 or y0 >= y1:
        return
    part = src[y0 - y : y1 - y, x0 - x : x1 - x]
    if not blend:
        dst[y0:y1, x0:x1] = part[..., :3]
        return
    alpha = part[..., 3:4].astype(np.uint32)
    under = dst[y0:y1, x0:x1].astype(np.uint32)
    dst[y0:y1, x0:x1] = ((part[..., :3].astype(np.uint32) * alpha + under * (255 - alpha)
                          + 127) // 255).astype(np.uint8)


def _scale(img: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    ys = np.arange(height) * h // height
    xs = np.arange(width) * w // width
    return img[ys[:, None], xs[None, :]]


def compose(view: RegisterView, memory: SurfaceMemory) -> Screen:
    """The current frame of the first enabled pipe (typed errors when there is none)."""
    pipe = active_pipe(view)
    if pipe is None:
        raise PlaneDisabledError("primary", "no pipe is enabled (the guest set no mode)")
    primary = decode_primary(view, pipe)
    sprite = decode_sprite(view, pipe)
    cursor = decode_cursor(view, pipe)
    rgb = np.ascontiguousarray(read_rgba(memory, primary_surface(primary), "primary")[..., :3])
    if sprite.enabled:
        img = read_rgba(memory, sprite_surface(sprite), "sprite")
        _place(rgb, _scale(img, sprite.width, sprite.height), sprite.x, sprite.y, blend=False)
    if cursor.enabled:
        img = read_rgba(memory, cursor_surface(cursor), "cursor")
        _place(rgb, img, cursor.x, cursor.y, blend=True)
    return Screen(rgb, pipe, primary, sprite, cursor)


def capture(vgpu: Any) -> Screen:
    """``vgpu``'s screen now. Raises :class:`~gvt_core.errors.FramebufferError`
    subclasses for what the guest set up wrong, :class:`VgpuStateError` for a
    destroyed vGPU."""
    with vgpu.lock:
        if vgpu.destroyed:
            raise VgpuStateError(f"cannot capture the screen of vGPU {vgpu.id}: it was destroyed")
        return compose(vgpu.mmio, VgpuSurfaceMemory(vgpu))


def screen_array(vgpu: Any) -> np.ndarray:
    """``vgpu``'s screen as an (height, width, 3) uint8 RGB array."""
    return capture(vgpu).rgb


def screen_png(vgpu: Any) -> bytes:
    """``vgpu``'s screen as PNG bytes."""
    return capture(vgpu).png()
