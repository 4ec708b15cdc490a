"""Command encoders: the dwords a GEN8 driver writes into rings and batch buffers.

The guest-driver model, the tests and the benchmarks build their workloads
with these; each returns a list of dwords. Layouts are GEN8's (48-bit
addresses in two dwords) as :mod:`gvt_core.hw.engine.commands` names them.
"""

from __future__ import annotations

from gvt_core.hw import display_regs as dr
from gvt_core.hw.engine import commands as c


def _lo(addr: int) -> int:
    return addr & 0xFFFF_FFFF


def _hi(addr: int) -> int:
    return (addr >> 32) & 0xFFFF


def noop(count: int = 1) -> list[int]:
    return [0] * count


def user_interrupt() -> list[int]:
    return [c.header("MI_USER_INTERRUPT")]


def arb_check() -> list[int]:
    return [c.header("MI_ARB_CHECK")]


def arb_on_off(enable: bool) -> list[int]:
    return [c.header("MI_ARB_ON_OFF", flags=c.MI_ARB_ENABLE if enable else 0)]


def report_head() -> list[int]:
    return [c.header("MI_REPORT_HEAD")]


def batch_buffer_end() -> list[int]:
    return [c.header("MI_BATCH_BUFFER_END")]


def batch_buffer_start(addr: int, *, ppgtt: bool = True, second_level: bool = False) -> list[int]:
    flags = (c.MI_BB_PPGTT if ppgtt else 0) | (c.MI_BB_SECOND_LEVEL if second_level else 0)
    return [c.header("MI_BATCH_BUFFER_START", 3, flags), _lo(addr), _hi(addr)]


def store_dword(addr: int, value: int, *, ggtt: bool = False) -> list[int]:
    """MI_STORE_DATA_IMM of one dword."""
    return [c.header("MI_STORE_DATA_IMM", 4, c.MI_USE_GGTT if ggtt else 0),
            _lo(addr), _hi(addr), value & 0xFFFF_FFFF]


def store_qword(addr: int, value: int, *, ggtt: bool = False) -> list[int]:
    flags = c.MI_SDI_STORE_QWORD | (c.MI_USE_GGTT if ggtt else 0)
    return [c.header("MI_STORE_DATA_IMM", 5, flags), _lo(addr), _hi(addr),
            value & 0xFFFF_FFFF, (value >> 32) & 0xFFFF_FFFF]


def store_dword_index(offset: int, value: int, *, pphwsp: bool = False) -> list[int]:
    """MI_STORE_DATA_INDEX: ``value`` at byte ``offset`` of the (per-process) status page."""
    return [c.header("MI_STORE_DATA_INDEX", 3, c.MI_SDX_USE_PPHWSP if pphwsp else 0),
            offset & c.MI_SDX_OFFSET_MASK, value & 0xFFFF_FFFF]


def load_register_imm(pairs: list[tuple[int, int]]) -> list[int]:
    out = [c.header("MI_LOAD_REGISTER_IMM", 1 + 2 * len(pairs))]
    for reg, value in pairs:
        out += [reg & c.MI_REG_OFFSET_MASK, value & 0xFFFF_FFFF]
    return out


def store_register_mem(reg: int, addr: int, *, ggtt: bool = False) -> list[int]:
    return [c.header("MI_STORE_REGISTER_MEM", 4, c.MI_USE_GGTT if ggtt else 0),
            reg & c.MI_REG_OFFSET_MASK, _lo(addr), _hi(addr)]


def load_register_mem(reg: int, addr: int, *, ggtt: bool = False) -> list[int]:
    return [c.header("MI_LOAD_REGISTER_MEM", 4, c.MI_USE_GGTT if ggtt else 0),
            reg & c.MI_REG_OFFSET_MASK, _lo(addr), _hi(addr)]


def load_register_reg(src: int, dst: int) -> list[int]:
    return [c.header("MI_LOAD_REGISTER_REG", 3), src & c.MI_REG_OFFSET_MASK,
            dst & c.MI_REG_OFFSET_MASK]


def flush_dw(addr: int = 0, value: int | None = None, *, timestamp: bool = False,
             notify: bool = False, ggtt: bool = False, index: bool = False) -> list[int]:
    """MI_FLUSH_DW (not on RCS); with ``value`` a dword post-sync write, with
    ``timestamp`` a timestamp write."""
    op = c.POST_SYNC_TIMESTAMP if timestamp else (
        c.POST_SYNC_IMMEDIATE if value is not None else c.POST_SYNC_NONE)
    flags = (op << c.MI_FLUSH_DW_OP_SHIFT) | (c.MI_FLUSH_DW_NOTIFY if notify else 0)
    flags |= c.MI_FLUSH_DW_STORE_INDEX if index else 0
    dw1 = (_lo(addr) & c.MI_FLUSH_DW_ADDR_MASK) | (c.MI_FLUSH_DW_USE_GTT if ggtt else 0)
    return [c.header("MI_FLUSH_DW", 4, flags), dw1, _hi(addr), (value or 0) & 0xFFFF_FFFF]


def pipe_control(addr: int = 0, value: int | None = None, *, timestamp: bool = False,
                 notify: bool = False, ggtt: bool = False, index: bool = False) -> list[int]:
    """PIPE_CONTROL (RCS), 6 dwords; post-sync writes a qword."""
    op = c.POST_SYNC_TIMESTAMP if timestamp else (
        c.POST_SYNC_IMMEDIATE if value is not None else c.POST_SYNC_NONE)
    flags = (op << c.PIPE_CONTROL_POST_SYNC_SHIFT) | (c.PIPE_CONTROL_NOTIFY if notify else 0)
    flags |= (c.PIPE_CONTROL_GLOBAL_GTT if ggtt else 0)
    flags |= c.PIPE_CONTROL_STORE_DATA_INDEX if index else 0
    v = value or 0
    return [c.header("PIPE_CONTROL", 6), flags, _lo(addr), _hi(addr),
            v & 0xFFFF_FFFF, (v >> 32) & 0xFFFF_FFFF]


def semaphore_wait(addr: int, value: int, compare: int = c.SAD_EQUAL_SDD, *,
                   ggtt: bool = False) -> list[int]:
    """MI_SEMAPHORE_WAIT in polling mode."""
    flags = c.MI_SEMAPHORE_POLL | (compare << c.MI_SEMAPHORE_COMPARE_SHIFT)
    flags |= c.MI_USE_GGTT if ggtt else 0
    return [c.header("MI_SEMAPHORE_WAIT", 4, flags), value & 0xFFFF_FFFF, _lo(addr), _hi(addr)]


def conditional_batch_buffer_end(addr: int, value: int, *, ggtt: bool = False) -> list[int]:
    return [c.header("MI_CONDITIONAL_BATCH_BUFFER_END", 4, c.MI_USE_GGTT if ggtt else 0),
            value & 0xFFFF_FFFF, _lo(addr), _hi(addr)]


_DEPTH = {1: 0, 2: 1, 4: 3}


def _br13(pitch: int, cpp: int, rop: int, clip: bool) -> int:
    return ((pitch & c.BR13_PITCH_MASK) | (rop << c.BR13_ROP_SHIFT)
            | (_DEPTH[cpp] << c.BR13_DEPTH_SHIFT) | (c.BR13_CLIP_ENABLE if clip else 0))


def _xy(x: int, y: int) -> int:
    return ((y & 0xFFFF) << 16) | (x & 0xFFFF)


def _write_bits(cpp: int) -> int:
    return c.XY_BLT_WRITE_ALPHA | c.XY_BLT_WRITE_RGB if cpp == 4 else 0


def color_blt(dst: int, pitch: int, x1: int, y1: int, x2: int, y2: int, color: int, *,
              cpp: int = 4, rop: int = c.ROP_PATCOPY, clip: bool = False,
              write_bits: int | None = None) -> list[int]:
    """XY_COLOR_BLT: fill (x1, y1)-(x2, y2) exclusive of a linear surface."""
    bits = _write_bits(cpp) if write_bits is None else write_bits
    return [c.header("XY_COLOR_BLT", 7, bits), _br13(pitch, cpp, rop, clip),
            _xy(x1, y1), _xy(x2, y2), _lo(dst), _hi(dst), color & 0xFFFF_FFFF]


def src_copy_blt(dst: int, dst_pitch: int, x1: int, y1: int, x2: int, y2: int,
                 src: int, src_pitch: int, sx: int, sy: int, *, cpp: int = 4,
                 rop: int = c.ROP_SRCCOPY, clip: bool = False,
                 write_bits: int | None = None) -> list[int]:
    """XY_SRC_COPY_BLT: copy to (x1, y1)-(x2, y2) from (sx, sy) of the source surface."""
    bits = _write_bits(cpp) if write_bits is None else write_bits
    return [c.header("XY_SRC_COPY_BLT", 10, bits), _br13(dst_pitch, cpp, rop, clip),
            _xy(x1, y1), _xy(x2, y2), _lo(dst), _hi(dst), _xy(sx, sy),
            src_pitch & c.BR13_PITCH_MASK, _lo(src), _hi(src)]


def display_flip(plane_code: int, surface: int, pitch: int, *, tiled: bool = False,
                 asynchronous: bool = False) -> list[int]:
    """MI_DISPLAY_FLIP (GEN8): plane ``plane_code`` (0 = primary A, see
    ``display_regs.MI_FLIP_PLANES``) to the GGTT ``surface``, ``pitch`` bytes a row."""
    return [c.header("MI_DISPLAY_FLIP", 3, (plane_code & dr.MI_FLIP_PLANE_MASK)
                     << dr.MI_FLIP_PLANE_SHIFT),
            (pitch & dr.MI_FLIP_PITCH_MASK) | (dr.MI_FLIP_TILED if tiled else 0),
            (surface & dr.MI_FLIP_BASE_MASK)
            | (dr.MI_FLIP_ASYNC if asynchronous else dr.MI_FLIP_SYNC)]


def setup_clip_blt(x1: int, y1: int, x2: int, y2: int) -> list[int]:
    return [c.header("XY_SETUP_CLIP_BLT", 3), _xy(x1, y1), _xy(x2, y2)]
