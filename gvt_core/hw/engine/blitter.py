"""The 2D engine of BCS: XY_COLOR_BLT and XY_SRC_COPY_BLT, vectorised with numpy.

A blit works on rectangles of linear surfaces: a destination base address,
a signed pitch in bytes and a colour depth (8, 16 or 32 bits per pixel),
with coordinates (x1, y1) inclusive to (x2, y2) exclusive. What is clipped:

* negative coordinates to 0, and an empty rectangle (x2 <= x1 or y2 <= y1)
  does nothing;
* with clipping enabled (BR13 bit 30), to the clip rectangle of the last
  XY_SETUP_CLIP_BLT (a copy's source origin moves with the destination);
* a row to the surface: x2 to the pitch in pixels when the pitch is positive.

The raster operation is evaluated on bytes for any ROP3 code (PATCOPY,
SRCCOPY, BLACKNESS, WHITENESS are direct), and at 32 bpp the write-alpha /
write-RGB bits of the header mask the bytes written. Tiled surfaces are not
modelled (an engine fault, not a wrong picture). A blit may move at most
``MAX_SURFACE_SIZE`` (36 MiB, upstream's audit limit) per surface; a larger
one is a malformed command.

Memory is reached only through the context's address spaces: whole rows of
a dense surface (pitch == row bytes) move as one span of pages, others row
by row. Rows are never read or written outside the rectangle.
"""

from __future__ import annotations

import attrs
import numpy as np

from gvt_core.hw import regs
from gvt_core.hw.engine import commands as c
from gvt_core.hw.engine.memory import Access, AddressSpace, Fault, FaultKind, read, write
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SIZE

_COORD_MASK = 0xFFFF


def _s16(v: int) -> int:
    v &= _COORD_MASK
    return v - 0x10000 if v & 0x8000 else v


@attrs.define
class ClipRect:
    """The clip rectangle of XY_SETUP_CLIP_BLT (exclusive bottom-right)."""

    x1: int = 0
    y1: int = 0
    x2: int = 0x7FFF
    y2: int = 0x7FFF


@attrs.frozen
class Surface:
    """A linear surface as a blit command names it."""

    space: AddressSpace
    base: int
    pitch: int
    cpp: int


@attrs.frozen
class BlitStats:
    bytes_read: int
    bytes_written: int


# --- raster operations ------------------------------------------------------------------------


def rop3(rop: int, pat: np.ndarray | None, src: np.ndarray | None,
         dst: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Bitwise ROP3 on byte arrays: result bit = bit ((P << 2) | (S << 1) | D) of ``rop``."""
    if rop == c.ROP_PATCOPY and pat is not None:
        return np.broadcast_to(pat, shape)
    if rop == c.ROP_SRCCOPY and src is not None:
        return src
    if rop == c.ROP_BLACKNESS:
        return np.zeros(shape, np.uint8)
    if rop == c.ROP_WHITENESS:
        return np.full(shape, 0xFF, np.uint8)
    zero = np.zeros(shape, np.uint8)
    p = np.broadcast_to(pat, shape) if pat is not None else zero
    s = src if src is not None else zero
    d = dst if dst is not None else zero
    out = np.zeros(shape, np.uint8)
    for i in range(8):
        if rop >> i & 1:
            term = (p if i & 4 else ~p) & (s if i & 2 else ~s) & (d if i & 1 else ~d)
            out |= term
    return out


def rop_uses(rop: int) -> tuple[bool, bool, bool]:
    """Whether the result of ``rop`` depends on (pattern, source, destination)."""
    def depends(shift: int) -> bool:
        return any((rop >> i & 1) != (rop >> (i ^ (1 << shift)) & 1) for i in range(8))

    return depends(2), depends(1), depends(0)


# --- moving rows ------------------------------------------------------------------------------


def _dense(pitch: int, row_bytes: int, rows: int) -> bool:
    return rows == 1 or pitch == row_bytes


def gather(space: AddressSpace, start: int, pitch: int, row_bytes: int, rows: int) -> np.ndarray:
    """Rows ``[start + r * pitch, + row_bytes)`` as a (rows, row_bytes) uint8 array."""
    if _dense(pitch, row_bytes, rows):
        total = row_bytes * rows
        pages = space.pages(start, total, Access.READ)
        off = start & PAGE_MASK
        if len(pages) == 1:
            data = bytes(pages[0][off : off + total])
        else:
            parts = [pages[0][off:], *pages[1:-1]]
            tail = (start + total - 1) % PAGE_SIZE + 1
            parts.append(pages[-1][:tail])
            data = b"".join(parts)
        return np.frombuffer(data, np.uint8).reshape(rows, row_bytes)
    out = np.empty((rows, row_bytes), np.uint8)
    for r in range(rows):
        out[r] = np.frombuffer(read(space, start + r * pitch, row_bytes), np.uint8)
    return out


def scatter(space: AddressSpace, start: int, pitch: int, data: np.ndarray) -> None:
    """Write the (rows, row_bytes) ``data`` back to the rows it was gathered from."""
    rows, row_bytes = data.shape
    if _dense(pitch, row_bytes, rows):
        flat = np.ascontiguousarray(data).reshape(-1)
        total = flat.size
        pages = space.pages(start, total, Access.WRITE)
        off = start & PAGE_MASK
        pos = 0
        for i, page in enumerate(pages):
            lo = off if i == 0 else 0
            k = min(PAGE_SIZE - lo, total - pos)
            page[lo : lo + k] = flat[pos : pos + k].data
            pos += k
        return
    for r in range(rows):
        write(space, start + r * pitch, data[r].tobytes())


def _fill_rows(space: AddressSpace, start: int, pitch: int, row: bytes, rows: int) -> None:
    """Write the same ``row`` into ``rows`` rows (a solid fill)."""
    row_bytes = len(row)
    if _dense(pitch, row_bytes, rows):
        total = row_bytes * rows
        pages = space.pages(start, total, Access.WRITE)
        data = memoryview(row * rows)
        off = start & PAGE_MASK
        pos = 0
        for i, page in enumerate(pages):
            lo = off if i == 0 else 0
            k = min(PAGE_SIZE - lo, total - pos)
            page[lo : lo + k] = data[pos : pos + k]
            pos += k
        return
    for r in range(rows):
        write(space, start + r * pitch, row)


# --- the blit commands --------------------------------------------------------------------------


@attrs.frozen
class _Rect:
    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def empty(self) -> bool:
        return self.x2 <= self.x1 or self.y2 <= self.y1


def _dst_rect(br13: int, tl: int, br: int, cpp: int, clip: ClipRect) -> _Rect:
    x1, y1 = _s16(tl), _s16(tl >> 16)
    x2, y2 = _s16(br), _s16(br >> 16)
    x1, y1 = max(x1, 0), max(y1, 0)
    if br13 & c.BR13_CLIP_ENABLE:
        x1, y1 = max(x1, clip.x1), max(y1, clip.y1)
        x2, y2 = min(x2, clip.x2), min(y2, clip.y2)
    pitch = _s16(br13 & c.BR13_PITCH_MASK)
    if pitch > 0:
        x2 = min(x2, pitch // cpp)
    return _Rect(x1, y1, x2, y2)


def _check_size(rows: int, row_bytes: int, what: str, address: int) -> None:
    if rows * row_bytes > regs.MAX_SURFACE_SIZE:
        raise Fault(FaultKind.BAD_COMMAND, address,
                    f"{what} of {rows * row_bytes} bytes exceeds {regs.MAX_SURFACE_SIZE}")


def _write_mask(header: int, cpp: int) -> np.ndarray | None:
    """Per-byte write enables at 32 bpp (None = write every byte)."""
    if cpp != 4:
        return None
    alpha, rgb = bool(header & c.XY_BLT_WRITE_ALPHA), bool(header & c.XY_BLT_WRITE_RGB)
    if alpha and rgb:
        return None
    return np.array([rgb, rgb, rgb, alpha], dtype=bool)


def _depth(br13: int) -> int:
    return c.BR13_DEPTH_CPP[(br13 >> c.BR13_DEPTH_SHIFT) & c.BR13_DEPTH_MASK]


def color_blt(dw: tuple[int, ...], space: AddressSpace, clip: ClipRect) -> BlitStats:
    """XY_COLOR_BLT (gen8, 7 dwords): fill a rectangle with the solid pattern colour."""
    header, br13 = dw[0], dw[1]
    dst_addr = (dw[4] | (dw[5] << 32)) & c.GM_ADDR_MASK
    if header & c.XY_DST_TILED:
        raise Fault(FaultKind.NOT_MODELLED, dst_addr, "tiled destination")
    cpp = _depth(br13)
    pitch = _s16(br13 & c.BR13_PITCH_MASK)
    rect = _dst_rect(br13, dw[2], dw[3], cpp, clip)
    if rect.empty:
        return BlitStats(0, 0)
    rows, row_bytes = rect.y2 - rect.y1, (rect.x2 - rect.x1) * cpp
    _check_size(rows, row_bytes, "XY_COLOR_BLT", dst_addr)
    start = dst_addr + rect.y1 * pitch + rect.x1 * cpp
    color = np.frombuffer((dw[6] & 0xFFFF_FFFF).to_bytes(4, "little")[:cpp], np.uint8)
    pat_row = np.tile(color, rect.x2 - rect.x1)
    rop = (br13 >> c.BR13_ROP_SHIFT) & 0xFF
    mask = _write_mask(header, cpp)
    _, use_s, use_d = rop_uses(rop)
    if mask is None and not use_d and not use_s:
        row = rop3(rop, pat_row, None, None, pat_row.shape).tobytes()
        _fill_rows(space, start, pitch, row, rows)
        return BlitStats(0, rows * row_bytes)
    if mask is not None and not mask.any():
        return BlitStats(0, 0)
    dst = gather(space, start, pitch, row_bytes, rows)
    out = rop3(rop, pat_row, None, dst, dst.shape)
    if mask is not None:
        out = np.where(np.tile(mask, rect.x2 - rect.x1), out, dst)
    scatter(space, start, pitch, np.ascontiguousarray(out, np.uint8))
    return BlitStats(rows * row_bytes, rows * row_bytes)


def src_copy_blt(dw: tuple[int, ...], dst_space: AddressSpace, src_space: AddressSpace,
                 clip: ClipRect) -> BlitStats:
    """XY_SRC_COPY_BLT (gen8, 10 dwords): copy a rectangle, ROP applied per byte.

    The source is read completely before the destination is written, so an
    overlapping copy (a scroll) gives the result of copying through a buffer.
    """
    header, br13 = dw[0], dw[1]
    dst_addr = (dw[4] | (dw[5] << 32)) & c.GM_ADDR_MASK
    src_addr = (dw[8] | (dw[9] << 32)) & c.GM_ADDR_MASK
    if header & c.XY_DST_TILED or header & c.XY_SRC_TILED:
        raise Fault(FaultKind.NOT_MODELLED, dst_addr, "tiled surface")
    cpp = _depth(br13)
    pitch = _s16(br13 & c.BR13_PITCH_MASK)
    src_pitch = _s16(dw[7] & c.BR13_PITCH_MASK)
    raw_x1, raw_y1 = _s16(dw[2]), _s16(dw[2] >> 16)
    rect = _dst_rect(br13, dw[2], dw[3], cpp, clip)
    sx, sy = _s16(dw[6]) + (rect.x1 - raw_x1), _s16(dw[6] >> 16) + (rect.y1 - raw_y1)
    if sx < 0 or sy < 0:  # the source rectangle starts left of / above its surface
        rect = _Rect(rect.x1 - min(sx, 0), rect.y1 - min(sy, 0), rect.x2, rect.y2)
        sx, sy = max(sx, 0), max(sy, 0)
    if src_pitch > 0:
        rect = _Rect(rect.x1, rect.y1, min(rect.x2, rect.x1 + src_pitch // cpp - sx), rect.y2)
    if rect.empty:
        return BlitStats(0, 0)
    rows, row_bytes = rect.y2 - rect.y1, (rect.x2 - rect.x1) * cpp
    _check_size(rows, row_bytes, "XY_SRC_COPY_BLT", dst_addr)
    dst_start = dst_addr + rect.y1 * pitch + rect.x1 * cpp
    src_start = src_addr + sy * src_pitch + sx * cpp
    src = gather(src_space, src_start, src_pitch, row_bytes, rows)
    rop = (br13 >> c.BR13_ROP_SHIFT) & 0xFF
    mask = _write_mask(header, cpp)
    _, _, use_d = rop_uses(rop)
    if mask is not None and not mask.any():
        return BlitStats(rows * row_bytes, 0)
    if mask is None and not use_d:
        out = rop3(rop, None, src, None, src.shape)
        scatter(dst_space, dst_start, pitch, np.ascontiguousarray(out, np.uint8))
        return BlitStats(rows * row_bytes, rows * row_bytes)
    dst = gather(dst_space, dst_start, pitch, row_bytes, rows)
    out = rop3(rop, None, src, dst, dst.shape)
    if mask is not None:
        out = np.where(np.tile(mask, rect.x2 - rect.x1), out, dst)
    scatter(dst_space, dst_start, pitch, np.ascontiguousarray(out, np.uint8))
    return BlitStats(2 * rows * row_bytes, rows * row_bytes)


def setup_clip(dw: tuple[int, ...], clip: ClipRect) -> None:
    """XY_SETUP_CLIP_BLT: top-left in dword 1, bottom-right (exclusive) in dword 2."""
    clip.x1, clip.y1 = max(_s16(dw[1]), 0), max(_s16(dw[1] >> 16), 0)
    clip.x2, clip.y2 = _s16(dw[2]), _s16(dw[2] >> 16)
