"""GEN8 command encoders for scanner tests (headers from the command table)."""

from __future__ import annotations

from gvt_core.hw.engine import commands as T


def header(name: str, length: int) -> int:
    """Header of ``name`` for a ``length``-dword command (the length field set if variable)."""
    info = T.BY_NAME[name]
    if info.fixed_length is not None:
        return info.header
    return info.header | ((length - T.LENGTH_BIAS) & info.length_mask)


def cmd(name: str, *body: int, flags: int = 0) -> list[int]:
    """A command: header (with ``flags`` or'ed in) and ``body`` dwords."""
    return [header(name, 1 + len(body)) | flags, *[b & 0xFFFF_FFFF for b in body]]


def lo(addr: int) -> int:
    return addr & 0xFFFF_FFFF


def hi(addr: int) -> int:
    return (addr >> 32) & 0xFFFF


NOOP = [0]
BB_END = cmd("MI_BATCH_BUFFER_END")


def bb_start(addr: int, *, ppgtt: bool = False, second: bool = False,
             predicated: bool = False) -> list[int]:
    flags = (1 << 8 if ppgtt else 0) | (1 << 22 if second else 0) | (1 << 15 if predicated else 0)
    return cmd("MI_BATCH_BUFFER_START", lo(addr), hi(addr), flags=flags)


def sdi(addr: int, value: int, *, ggtt: bool = True, qword: bool = False) -> list[int]:
    flags = (1 << 22 if ggtt else 0) | (1 << 21 if qword else 0)
    data = [value, 0] if qword else [value]
    return cmd("MI_STORE_DATA_IMM", lo(addr), hi(addr), *data, flags=flags)


def lri(*pairs: tuple[int, int]) -> list[int]:
    body: list[int] = []
    for reg, value in pairs:
        body += [reg, value]
    return cmd("MI_LOAD_REGISTER_IMM", *body)


def lrr(src: int, dst: int) -> list[int]:
    return cmd("MI_LOAD_REGISTER_REG", src, dst)


def lrm(reg: int, addr: int, *, ggtt: bool = True) -> list[int]:
    return cmd("MI_LOAD_REGISTER_MEM", reg, lo(addr), hi(addr), flags=(1 << 22) if ggtt else 0)


def srm(reg: int, addr: int, *, ggtt: bool = True) -> list[int]:
    return cmd("MI_STORE_REGISTER_MEM", reg, lo(addr), hi(addr), flags=(1 << 22) if ggtt else 0)


def flush_dw(addr: int = 0, value: int = 0, *, post_sync: int = 1, ggtt: bool = True,
             index: bool = False, notify: bool = False) -> list[int]:
    flags = (post_sync << 14) | (1 << 21 if index else 0) | (1 << 8 if notify else 0)
    return cmd("MI_FLUSH_DW", lo(addr) | (4 if ggtt else 0), hi(addr), value, flags=flags)


def pipe_control(addr: int = 0, value: int = 0, *, post_sync: int = 1, ggtt: bool = True,
                 index: bool = False, notify: bool = False, lri_reg: int | None = None) -> list[int]:
    dw1 = (post_sync << 14) | (1 << 24 if ggtt else 0) | (1 << 21 if index else 0) \
        | (1 << 8 if notify else 0)
    dw2 = lo(addr)
    if lri_reg is not None:
        dw1 |= 1 << 23
        dw2 = lri_reg
    return cmd("PIPE_CONTROL", dw1, dw2, hi(addr), value, 0)


def semaphore_wait(addr: int, value: int = 0, *, ggtt: bool = True) -> list[int]:
    return cmd("MI_SEMAPHORE_WAIT", value, lo(addr), hi(addr), flags=(1 << 22) if ggtt else 0)


def cond_bb_end(addr: int, value: int = 0, *, ggtt: bool = True) -> list[int]:
    return cmd("MI_CONDITIONAL_BATCH_BUFFER_END", value, lo(addr), hi(addr),
               flags=(1 << 22) if ggtt else 0)


def report_perf_count(addr: int, *, ggtt: bool = True) -> list[int]:
    return cmd("MI_REPORT_PERF_COUNT", lo(addr) | (1 if ggtt else 0), hi(addr), 0)


def xy_color_blt(dst: int, pitch: int = 4096, w: int = 16, h: int = 16, color: int = 0) -> list[int]:
    return cmd("XY_COLOR_BLT", (3 << 24) | (0xF0 << 16) | pitch, 0, (h << 16) | w, lo(dst),
               hi(dst), color, flags=(3 << 20))


def xy_src_copy_blt(dst: int, src: int, pitch: int = 4096, w: int = 16, h: int = 16) -> list[int]:
    return cmd("XY_SRC_COPY_BLT", (3 << 24) | (0xCC << 16) | pitch, 0, (h << 16) | w, lo(dst),
               hi(dst), 0, pitch, lo(src), hi(src), flags=(3 << 20))


def fill(name: str) -> list[int]:
    """Some valid instance of ``name``: its minimum length, zero operands."""
    info = T.BY_NAME[name]
    n = info.min_length
    return [header(name, n)] + [0] * (n - 1)
