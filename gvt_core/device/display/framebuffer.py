"""The framebuffer decoder: a plane's surface in graphics memory -> an RGBA image (facts 9.4).

Given a :class:`Surface` (base, format, tiling, stride, size, start offset),
:func:`read_rgba` computes the byte address of every visible pixel with one
vectorised tiling expression, fetches only the pages those pixels touch
through a :class:`~gvt_core.device.display.surface_memory.SurfaceMemory`
(the vGPU's GGTT view), gathers the pixel words and converts them. A surface
that cannot be read is a typed :class:`~gvt_core.errors.FramebufferError`:
reserved or unsupported format bits, a stride too small for the width or not
aligned to the tiling, a size beyond the hardware's, a page outside the
vGPU's graphics memory or unmapped.

Bounds: a plane is at most :data:`MAX_PLANE_WIDTH` x :data:`MAX_PLANE_HEIGHT`
pixels (BDW's limits, also the register fields' reach), so one decode reads
at most 8192 x 8192 x 4 bytes of the vGPU's own memory.
"""

from __future__ import annotations

import attrs
import numpy as np

from gvt_core.device.display.formats import PixelFormat, decode
from gvt_core.device.display.planes import CursorPlane, PrimaryPlane, SpritePlane
from gvt_core.device.display.surface_memory import SurfaceMemory
from gvt_core.device.display.tiling import Tiling, byte_offsets
from gvt_core.errors import (
    BadStrideError,
    PlaneDisabledError,
    SurfaceOutOfRangeError,
    UnsupportedFormatError,
)
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE

MAX_PLANE_WIDTH = 8192
MAX_PLANE_HEIGHT = 8192


@attrs.frozen
class Surface:
    """What to read: ``width`` x ``height`` pixels starting at pixel (``x_offset``,
    ``y_offset``) of the surface at graphics address ``base``."""

    base: int
    format: PixelFormat
    tiling: Tiling
    stride: int
    width: int
    height: int
    x_offset: int = 0
    y_offset: int = 0


def check_surface(s: Surface, plane: str) -> None:
    """Typed errors for a surface no plane could scan out."""
    if not (0 < s.width <= MAX_PLANE_WIDTH and 0 < s.height <= MAX_PLANE_HEIGHT):
        raise BadStrideError(plane, f"size {s.width}x{s.height} is beyond "
                                    f"{MAX_PLANE_WIDTH}x{MAX_PLANE_HEIGHT}")
    row = (s.x_offset + s.width) * s.format.cpp
    if s.stride < row:
        raise BadStrideError(plane, f"stride {s.stride} bytes is too small for "
                                    f"{s.x_offset + s.width} pixels of {s.format.name} "
                                    f"({row} bytes)", "program a stride of at least one row")
    if s.stride % s.tiling.stride_align:
        raise BadStrideError(plane, f"stride {s.stride} is not a multiple of "
                                    f"{s.tiling.stride_align} bytes ({s.tiling.value[0]} layout)")
    if s.base & PAGE_MASK or not 0 <= s.base < regs.GM_TOTAL:
        raise SurfaceOutOfRangeError(plane, f"surface address {s.base:#x} is not a page-aligned "
                                            "graphics address")


def read_pixels(memory: SurfaceMemory, s: Surface, plane: str = "primary") -> np.ndarray:
    """The (height, width) pixel words of ``s``."""
    check_surface(s, plane)
    cpp = s.format.cpp
    xb = (np.arange(s.width, dtype=np.int64) + s.x_offset) * cpp
    yy = np.arange(s.height, dtype=np.int64) + s.y_offset
    addr = s.base + byte_offsets(s.tiling, s.stride, xb[None, :], yy[:, None])
    if int(addr.max()) + cpp > regs.GM_TOTAL:
        raise SurfaceOutOfRangeError(plane, "the surface runs past the end of graphics memory")
    page = addr >> PAGE_SHIFT
    first = int(page.min())
    span = int(page.max()) - first + 1
    touched = np.zeros(span, dtype=bool)
    touched[(page - first).ravel()] = True
    needed = np.flatnonzero(touched)
    data = memory.pages(needed + first, plane)
    per_page = PAGE_SIZE // cpp
    row_start = np.zeros(span, dtype=np.int64)
    row_start[needed] = np.arange(len(needed), dtype=np.int64) * per_page
    page -= first
    addr &= PAGE_MASK
    addr //= cpp
    addr += row_start[page]
    return np.take(data.view(s.format.dtype).ravel(), addr)


def read_rgba(memory: SurfaceMemory, s: Surface, plane: str = "primary") -> np.ndarray:
    """The (height, width, 4) RGBA8 image of ``s``."""
    return decode(read_pixels(memory, s, plane), s.format)


def _format(fmt: PixelFormat | None, name: str, hw: int, plane: str) -> PixelFormat:
    if fmt is None:
        raise UnsupportedFormatError(plane, f"format bits {hw:#x} mean {name}",
                                     "use an RGB format the plane supports")
    return fmt


def primary_surface(p: PrimaryPlane) -> Surface:
    if not p.enabled:
        raise PlaneDisabledError("primary", f"it is disabled on pipe {'ABC'[p.pipe]}")
    return Surface(p.base, _format(p.format, p.format_name, p.hw_format, "primary"), p.tiling,
                   p.stride, p.width, p.height, p.x_offset, p.y_offset)


def sprite_surface(p: SpritePlane) -> Surface:
    if not p.enabled:
        raise PlaneDisabledError("sprite", f"it is disabled on pipe {'ABC'[p.pipe]}")
    return Surface(p.base, _format(p.format, p.format_name, p.hw_format, "sprite"), p.tiling,
                   p.stride, p.src_width, p.src_height, p.x_offset, p.y_offset)


def cursor_surface(p: CursorPlane) -> Surface:
    if not p.enabled:
        raise PlaneDisabledError("cursor", f"it is disabled on pipe {'ABC'[p.pipe]}")
    if p.size is None or p.format is None:
        raise UnsupportedFormatError("cursor", f"cursor mode {p.mode:#x} is not an ARGB mode",
                                     "use a 64, 128 or 256 pixel ARGB cursor")
    return Surface(p.base, p.format, Tiling.LINEAR, p.size * p.format.cpp, p.size, p.size)
