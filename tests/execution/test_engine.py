"""The software engines on their own: native host contexts, no vGPU."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gvt_core.guest import commands as cmd
from gvt_core.hw import regs
from gvt_core.hw.engine import commands as c
from gvt_core.hw.engine import context as lrc
from gvt_core.hw.engine.cost import DEFAULT_COST_MODEL, TIMESTAMP_NS_PER_TICK
from gvt_core.hw.engine.memory import Access, Fault, FaultKind, GgttSpace, PpgttSpace
from gvt_core.hw.engine.native import NativeContext
from gvt_core.hw.engine.state import EngineEvent, RunState
from gvt_core.hw.gpu import HostGpu
from gvt_core.hw.sysmem import PAGE_SIZE
from tests.execution.blocks import get, put

RCS, BCS, VCS = regs.ENGINE_RCS, regs.ENGINE_BCS, regs.ENGINE_VCS


# --- the command table ------------------------------------------------------------------


def test_table_covers_the_mi_opcodes_of_the_gvt_parser() -> None:
    opcodes = {s.opcode for s in c.COMMANDS if s.cmd_type == c.CMD_TYPE_MI}
    facts_8_2 = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C,
                 0x0D, 0x0E, 0x0F, 0x12, 0x13, 0x14, 0x16, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x20,
                 0x21, 0x22, 0x23, 0x24, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x2B, 0x2C, 0x2D, 0x31,
                 0x36}
    assert facts_8_2 - {0x0E} <= opcodes


@pytest.mark.parametrize("spec", c.COMMANDS, ids=lambda s: s.name)
def test_header_round_trips_through_the_decoder(spec: c.CommandSpec) -> None:
    length = spec.fixed_length or 5
    h = c.header(spec.name, length)
    assert c.key_of(h) == spec.key
    assert c.BY_KEY[c.key_of(h)] is spec
    assert spec.length(h) == length


def test_each_engine_decodes_only_its_commands() -> None:
    assert "XY_COLOR_BLT" in {s.name for s in c.for_engine(BCS).values()}
    assert "XY_COLOR_BLT" not in {s.name for s in c.for_engine(RCS).values()}
    assert "PIPE_CONTROL" not in {s.name for s in c.for_engine(BCS).values()}
    assert "MI_FLUSH_DW" not in {s.name for s in c.for_engine(RCS).values()}


# --- MI commands ------------------------------------------------------------------------------


def test_stores_batches_chained_and_second_level(native: Callable[..., NativeContext],
                                                 buf: Any) -> None:
    ctx = native(RCS)
    out, b1, b2, b3 = buf(), buf(), buf(), buf()
    put(b2, cmd.store_dword(out.gm + 8, 2) + cmd.batch_buffer_end())
    # the chained 2nd level replaces b2's level: its end returns to b1
    put(b3, cmd.store_dword(out.gm + 12, 3) + cmd.batch_buffer_end())
    put(b2, cmd.store_dword(out.gm + 8, 2) + cmd.batch_buffer_start(b3.gm, ppgtt=False))
    put(b1, cmd.store_dword(out.gm + 4, 1)
        + cmd.batch_buffer_start(b2.gm, ppgtt=False, second_level=True)
        + cmd.store_qword(out.gm + 16, 0x6666_0000_5555) + cmd.batch_buffer_end())
    ctx.emit(cmd.batch_buffer_end()  # in the ring: ignored
             + cmd.store_dword(out.gm, 0xA) + cmd.batch_buffer_start(b1.gm, ppgtt=False)
             + cmd.store_dword(out.gm + 24, 7))
    done = ctx.run()
    assert done.fault is None and done.done
    assert get(out, 7) == (0xA, 1, 2, 3, 0x5555, 0x6666, 7)
    assert done.commands == 12


def test_second_level_from_the_ring_is_first_level(native: Callable[..., NativeContext],
                                                  buf: Any) -> None:
    ctx = native(RCS)
    out, b1 = buf(), buf()
    put(b1, cmd.store_dword(out.gm, 1) + cmd.batch_buffer_end())
    ctx.emit(cmd.batch_buffer_start(b1.gm, ppgtt=False, second_level=True)
             + cmd.store_dword(out.gm + 4, 2))
    assert ctx.run().fault is None
    assert get(out, 2) == (1, 2)


def test_ppgtt_addresses_need_a_ppgtt(native: Callable[..., NativeContext], buf: Any) -> None:
    ctx = native(RCS)
    ctx.emit(cmd.batch_buffer_start(buf().gm, ppgtt=True))
    fault = ctx.run().fault
    assert fault is not None and fault.kind is FaultKind.NO_PPGTT


def test_store_data_index_and_report_head(native: Callable[..., NativeContext], buf: Any,
                                          gpu: HostGpu) -> None:
    ctx = native(RCS)
    hws = buf()
    ctx.engine.write_reg(regs.RENDER_RING_BASE + regs.RING_HWS_PGA, hws.gm)
    ctx.emit(cmd.store_dword_index(0x40, 0xABCD) + cmd.report_head())
    assert ctx.run().fault is None
    assert get(hws, 1, 0x40) == (0xABCD,)
    assert get(hws, 1, 4 * lrc.HWS_RING_HEAD_INDEX) == (16,)  # after SDX (3) + pad, at dword 4


def test_registers_lri_srm_lrm_lrr(native: Callable[..., NativeContext], buf: Any) -> None:
    ctx = native(RCS)
    out = buf()
    base = regs.RENDER_RING_BASE
    gpr0, gpr1 = base + 0x600, base + 0x604
    put(out, [0x5151], 0x100)
    low_bytes_off = [c.header("MI_LOAD_REGISTER_IMM", 3, 0b0011 << 8), gpr1, 0xFFFF_FFFF]
    ctx.emit(cmd.load_register_imm([(gpr0, 0x1234_5678)]) + low_bytes_off
             + cmd.store_register_mem(gpr0, out.gm, ggtt=True)
             + cmd.store_register_mem(gpr1, out.gm + 4, ggtt=True)
             + cmd.load_register_mem(gpr0, out.gm + 0x100, ggtt=True)
             + cmd.load_register_reg(gpr0, gpr1)
             + cmd.store_register_mem(gpr1, out.gm + 8, ggtt=True)
             # masked register: only bits selected in 31:16 change
             + cmd.load_register_imm([(base + regs.RING_MI_MODE, (0x3 << 16) | 0x1)])
             + cmd.store_register_mem(base + regs.RING_MI_MODE, out.gm + 12, ggtt=True))
    assert ctx.run().fault is None
    assert get(out, 4) == (0x1234_5678, 0xFFFF_0000, 0x5151, 0x1)


def test_timestamps_come_from_the_host_clock(native: Callable[..., NativeContext],
                                             buf: Any) -> None:
    ctx = native(RCS)
    out = buf()
    ctx.time_ns = 800_000
    ctx.emit(cmd.store_register_mem(regs.RENDER_RING_BASE + regs.RING_TIMESTAMP, out.gm,
                                    ggtt=True)
             + cmd.pipe_control(out.gm + 8, timestamp=True, ggtt=True))
    assert ctx.run().fault is None
    first, _, ts_lo, ts_hi = get(out, 4)
    assert first >= 800_000 // TIMESTAMP_NS_PER_TICK
    assert (ts_hi << 32 | ts_lo) >= first


def test_flush_dw_and_pipe_control_post_sync(native: Callable[..., NativeContext],
                                             buf: Any) -> None:
    bcs, rcs = native(BCS), native(RCS)
    out, hws = buf(), buf()
    bcs.engine.write_reg(regs.BLT_RING_BASE + regs.RING_HWS_PGA, hws.gm)
    bcs.emit(cmd.flush_dw(out.gm, 0x77, ggtt=True, notify=True)
             + cmd.flush_dw(0x80, 0x88, index=True) + cmd.user_interrupt())
    done = bcs.run()
    assert done.fault is None
    assert done.events == {EngineEvent.FLUSH_DW_NOTIFY, EngineEvent.USER_INTERRUPT}
    assert get(out, 1) == (0x77,) and get(hws, 1, 0x80) == (0x88,)
    rcs.emit([*cmd.pipe_control(out.gm + 16, 4294967449, ggtt=True, notify=True), c.header("PIPE_CONTROL", 6), c.PIPE_CONTROL_LRI_POST_SYNC, regs.RENDER_RING_BASE + 1536, 0, 16962, 0, *cmd.store_register_mem(regs.RENDER_RING_BASE + 1536, out.gm + 24, ggtt=True)])
    done = rcs.run()
    assert done.fault is None and done.events == {EngineEvent.PIPE_CONTROL_NOTIFY}
    assert get(out, 3, 16) == (0x99, 1, 0x4242)


def test_commands_of_another_engine_fault(native: Callable[..., NativeContext],
                                          buf: Any) -> None:
    rcs = native(RCS)
    rcs.emit(cmd.flush_dw())
    fault = rcs.run().fault
    assert fault is not None and fault.kind is FaultKind.WRONG_ENGINE
    vcs = native(VCS)
    vcs.emit(cmd.color_blt(buf().gm, 64, 0, 0, 4, 4, 0))
    fault = vcs.run().fault
    assert fault is not None and fault.kind is FaultKind.WRONG_ENGINE


@pytest.mark.parametrize(("dwords", "kind"), [
    ([0x2000_0000, 0], FaultKind.UNKNOWN_COMMAND),  # command type 1
    ([0x0F80_0000], FaultKind.UNKNOWN_COMMAND),  # MI opcode 0x1F
    ([c.header("MI_MATH", 2), 0], FaultKind.NOT_MODELLED),
    ([c.header("MI_UPDATE_GTT", 3), 0, 0], FaultKind.NOT_MODELLED),
    ([c.header("MI_LOAD_REGISTER_IMM", 2), 0], FaultKind.BAD_COMMAND),
])
def test_undecodable_commands_fault(native: Callable[..., NativeContext], dwords: list[int],
                                    kind: FaultKind) -> None:
    ctx = native(RCS)
    ctx.emit(dwords)
    fault = ctx.run().fault
    assert fault is not None and fault.kind is kind


def test_no_effect_commands_are_skipped(native: Callable[..., NativeContext], buf: Any) -> None:
    ctx = native(RCS)
    out = buf()
    ctx.emit([c.header("MI_FLUSH"), c.header("PIPELINE_SELECT"), *cmd.arb_on_off(False), *cmd.arb_check(), *cmd.store_dword(out.gm, 1)])
    done = ctx.run()
    assert done.fault is None and not done.arbitration and get(out, 1) == (1,)


def test_unmapped_and_scratch_ggtt_addresses_fault(native: Callable[..., NativeContext],
                                                   gpu: HostGpu) -> None:
    ctx = native(RCS)
    ctx.emit(cmd.store_dword(0x3000_0000, 1, ggtt=True))  # entry on the scratch page
    fault = ctx.run().fault
    assert fault is not None and fault.kind is FaultKind.UNMAPPED and fault.address == 0x3000_0000
    gpu.ggtt[0x3000_0000 >> 12] = 0  # not present at all
    ctx2 = native(RCS)
    ctx2.emit(cmd.store_dword(0x3000_0000, 1, ggtt=True))
    assert ctx2.run().fault.kind is FaultKind.UNMAPPED  # type: ignore[union-attr]


def test_ggtt_windows_confine_a_context(gpu: HostGpu, buf: Any) -> None:
    inside, outside = buf(), buf()
    space = GgttSpace(gpu.ggtt, gpu.sysmem, frozenset({gpu.scratch_frame}),
                      windows=((inside.gm, inside.end),), fetch_windows=((outside.gm, outside.end),))
    assert len(space.page(inside.gm >> 12, Access.WRITE)) == PAGE_SIZE
    space.page(outside.gm >> 12, Access.FETCH)
    with pytest.raises(Fault) as exc:
        space.page(outside.gm >> 12, Access.WRITE)
    assert exc.value.kind is FaultKind.OUTSIDE_PARTITION
    with pytest.raises(Fault):
        space.pages(inside.gm, 2 * PAGE_SIZE, Access.READ)


def test_semaphore_wait_spins_until_another_engine_writes(native: Callable[..., NativeContext],
                                                          buf: Any) -> None:
    rcs, bcs = native(RCS), native(BCS)
    sem, out = buf(), buf()
    rcs.emit(cmd.semaphore_wait(sem.gm, 5, c.SAD_GREATER_THAN_OR_EQUAL_SDD, ggtt=True)
             + cmd.store_dword(out.gm, 1, ggtt=True))
    eng = rcs.engine
    ectx = eng.load_context(rcs.state, levels=None, ggtt=rcs.ggtt)
    assert eng.run(ectx, 100_000, 0) is RunState.WAITING
    assert ectx.cost_ns >= 100_000 and get(out, 1) == (0,)
    bcs.emit(cmd.store_dword(sem.gm, 7, ggtt=True))
    assert bcs.run().fault is None
    assert eng.run(ectx, 100_000, 100_000) is RunState.DONE
    assert get(out, 1) == (1,)


def test_conditional_batch_end(native: Callable[..., NativeContext], buf: Any) -> None:
    ctx = native(RCS)
    mem, out, b = buf(), buf(), buf()
    put(mem, [3])
    put(b, cmd.conditional_batch_buffer_end(mem.gm, 2, ggtt=True)  # 3 <= 2: go on
        + cmd.store_dword(out.gm, 1, ggtt=True)
        + cmd.conditional_batch_buffer_end(mem.gm, 3, ggtt=True)  # 3 <= 3: end
        + cmd.store_dword(out.gm + 4, 1, ggtt=True) + cmd.batch_buffer_end())
    ctx.emit(cmd.batch_buffer_start(b.gm, ppgtt=False) + cmd.store_dword(out.gm + 8, 1))
    assert ctx.run().fault is None
    assert get(out, 3) == (1, 0, 1)


def test_ring_wraps_and_a_command_past_the_tail_faults(native: Callable[..., NativeContext],
                                                       buf: Any) -> None:
    ctx = native(RCS, ring_pages=1)
    out = buf()
    for i in range(300):  # more than a ring of 4 KiB over several runs: wraps
        ctx.emit(cmd.store_dword(out.gm, i, ggtt=True))
        if i % 100 == 99:
            assert ctx.run().fault is None
    assert get(out, 1) == (299,)
    bad = native(RCS)
    struct.pack_into("<I", bad.state, 4 * (lrc.CTX_RING_TAIL + 1), 8)
    bad.ring.write(0, struct.pack("<I", c.header("MI_STORE_DATA_IMM", 4)))
    fault = bad.run().fault
    assert fault is not None and fault.kind is FaultKind.BAD_RING


def test_a_context_image_with_head_beyond_the_ring_faults(native: Callable[..., NativeContext]) -> None:
    ctx = native(RCS, ring_pages=1)
    struct.pack_into("<I", ctx.state, 4 * (lrc.CTX_RING_HEAD + 1), 0x2000)
    fault = ctx.run().fault
    assert fault is not None and fault.kind is FaultKind.BAD_RING


# --- the blitter ----------------------------------------------------------------------------------


def _px(block: Any, pitch: int, x: int, y: int, cpp: int = 4) -> int:
    return int.from_bytes(block.read(y * pitch + x * cpp, cpp), "little")


@pytest.mark.parametrize("cpp", [1, 2, 4])
def test_color_fill_at_each_depth(native: Callable[..., NativeContext], buf: Any,
                                  cpp: int) -> None:
    ctx = native(BCS)
    pitch, w, h = 64 * cpp + 32, 64, 16
    surf = buf(pitch * h)
    ctx.emit(cmd.color_blt(surf.gm, pitch, 2, 1, w, h, 0xA1B2C3D4, cpp=cpp))
    done = ctx.run()
    assert done.fault is None
    color = 0xA1B2C3D4 & ((1 << (8 * cpp)) - 1)
    assert _px(surf, pitch, 2, 1, cpp) == color == _px(surf, pitch, w - 1, h - 1, cpp)
    assert _px(surf, pitch, 1, 1, cpp) == 0 and _px(surf, pitch, 2, 0, cpp) == 0
    assert surf.read(pitch * h - 32, 32) == bytes(32)  # past the row: untouched
    assert done.bytes_written == (w - 2) * (h - 1) * cpp
    assert done.cost_ns >= DEFAULT_COST_MODEL.blit(0, (w - 2) * (h - 1) * cpp)


def test_write_masks_and_rops(native: Callable[..., NativeContext], buf: Any) -> None:
    ctx = native(BCS)
    a, b = buf(), buf()
    ctx.emit(cmd.color_blt(a.gm, 64, 0, 0, 16, 1, 0x11223344)
             + cmd.color_blt(a.gm, 64, 0, 0, 8, 1, 0xFF000000, write_bits=c.XY_BLT_WRITE_ALPHA)
             + cmd.color_blt(b.gm, 64, 0, 0, 16, 1, 0x0F0F0F0F)
             + cmd.src_copy_blt(b.gm, 64, 0, 0, 16, 1, a.gm, 64, 0, 0, rop=0x66)  # S xor D
             + cmd.color_blt(a.gm, 64, 8, 0, 16, 1, 0, rop=c.ROP_WHITENESS))
    assert ctx.run().fault is None
    assert _px(a, 64, 0, 0) == 0xFF223344 and _px(a, 64, 7, 0) == 0xFF223344
    assert _px(a, 64, 8, 0) == 0xFFFFFFFF
    assert _px(b, 64, 0, 0) == 0xFF223344 ^ 0x0F0F0F0F
    assert _px(b, 64, 15, 0) == 0x11223344 ^ 0x0F0F0F0F


def test_overlapping_copy_behaves_as_through_a_buffer(native: Callable[..., NativeContext],
                                                      buf: Any) -> None:
    ctx = native(BCS)
    pitch, h = 256, 32
    surf = buf(pitch * h)
    rows = np.arange(h * pitch, dtype=np.uint32).astype(np.uint8).tobytes()
    surf.write(0, rows)
    ctx.emit(cmd.src_copy_blt(surf.gm, pitch, 0, 1, 64, h, surf.gm, pitch, 0, 0))  # scroll down
    assert ctx.run().fault is None
    assert surf.read(pitch * 5, pitch) == rows[pitch * 4: pitch * 5]


def test_clipping(native: Callable[..., NativeContext], buf: Any) -> None:
    ctx = native(BCS)
    surf = buf(64 * 8)
    ctx.emit(cmd.color_blt(surf.gm, 64, -4, -4, 2, 2, 0x01)  # negative: clipped at 0
             + cmd.color_blt(surf.gm, 64, 10, 0, 100, 1, 0x02)  # beyond the pitch: clipped
             + cmd.setup_clip_blt(4, 4, 6, 6)
             + cmd.color_blt(surf.gm, 64, 0, 0, 16, 8, 0x03, clip=True)
             + cmd.color_blt(surf.gm, 64, 8, 8, 4, 4, 0x04))  # empty: nothing
    assert ctx.run().fault is None
    assert _px(surf, 64, 0, 0) == 1 and _px(surf, 64, 1, 1) == 1 and _px(surf, 64, 2, 2) == 0
    assert _px(surf, 64, 15, 0) == 2
    assert _px(surf, 64, 4, 4) == 3 and _px(surf, 64, 5, 5) == 3 and _px(surf, 64, 6, 6) == 0


def test_negative_pitch_walks_upwards(native: Callable[..., NativeContext], buf: Any) -> None:
    ctx = native(BCS)
    surf = buf(4096)
    bottom = surf.gm + 64 * 3  # row 0 is the last one in memory
    ctx.emit(cmd.color_blt(bottom, -64 & 0xFFFF, 0, 0, 4, 2, 0x09))
    assert ctx.run().fault is None
    assert _px(surf, 64, 0, 3) == 9 and _px(surf, 64, 0, 2) == 9 and _px(surf, 64, 0, 1) == 0


@pytest.mark.parametrize(("blit", "kind"), [
    (lambda g: cmd.color_blt(g, 64, 0, 0, 4, 4, 0, write_bits=c.XY_DST_TILED),
     FaultKind.NOT_MODELLED),
    (lambda g: cmd.color_blt(g, 0x7FFC, 0, 0, 0x1FFF, 0x7FFF, 0), FaultKind.BAD_COMMAND),
    (lambda g: cmd.color_blt(g + (1 << 20), 64, 0, 0, 4, 4, 0), FaultKind.UNMAPPED),
])
def test_bad_blits_fault(native: Callable[..., NativeContext], buf: Any, blit: Any,
                         kind: FaultKind) -> None:
    ctx = native(BCS)
    ctx.emit(blit(buf().gm))
    fault = ctx.run().fault
    assert fault is not None and fault.kind is kind


# --- address spaces ------------------------------------------------------------------------------


def _table(gpu: HostGpu, entries: dict[int, int]) -> int:
    frame, page = gpu.pages.alloc(owner="test")
    ents = np.frombuffer(page, dtype="<u8")
    for i, v in entries.items():
        ents[i] = v
    return frame << 12


@pytest.mark.parametrize("levels", [3, 4])
def test_ppgtt_walks_4k_and_2m_entries(gpu: HostGpu, levels: int) -> None:
    data = [gpu.pages.alloc(owner="test") for _ in range(3)]
    p = regs.PPGTT_PRESENT | regs.PPGTT_RW
    pt = _table(gpu, {0: (data[0][0] << 12) | p, 1: (data[1][0] << 12) | p})
    huge_frame = 0x7_0000_0000 >> 12  # 2 MiB of consecutive frames nobody else uses
    huge_mem = memoryview(bytearray(regs.PAGE_SIZE_2M))
    gpu.sysmem.register_range(huge_frame, huge_mem, "test")
    two_m = huge_frame << 12
    pd = _table(gpu, {0: pt | p, 1: two_m | p | regs.PPGTT_PS})
    if levels == 4:
        pdp = _table(gpu, {0: pd | p})
        roots: tuple[int, ...] = (_table(gpu, {0: pdp | p}),)
    else:
        roots = (pd, 0, 0, 0)
    space = PpgttSpace(gpu.sysmem, levels, roots, fault_frames=frozenset({data[2][0]}))
    assert space.page(0, Access.READ) is not None
    space.page(0, Access.WRITE)[0:4] = b"abcd"
    assert bytes(data[0][1][0:4]) == b"abcd"
    views = space.pages(0, 2 * PAGE_SIZE, Access.READ)
    assert [bytes(v[:4]) for v in views] == [b"abcd", bytes(4)]
    huge = space.pages(regs.PAGE_SIZE_2M + 3 * PAGE_SIZE, 2 * PAGE_SIZE, Access.READ)
    huge[0][0:2] = b"xy"
    assert bytes(huge_mem[3 * PAGE_SIZE : 3 * PAGE_SIZE + 2]) == b"xy"
    with pytest.raises(Fault):
        space.page(2, Access.READ)  # not present
    with pytest.raises(Fault):
        space.pages(PAGE_SIZE, 2 * PAGE_SIZE, Access.READ)
    if levels == 3:
        with pytest.raises(Fault):
            space.page((regs.PPGTT_L3_GM_SIZE >> 12), Access.READ)  # past 4 GiB


def test_ppgtt_walks_a_1g_entry(gpu: HostGpu) -> None:
    base = 0x40_0000_0000 >> 12  # 1 GiB of frames behind a window: each resolves on access
    asked: list[int] = []
    page = memoryview(bytearray(PAGE_SIZE))

    def resolve(frame: int) -> memoryview:
        asked.append(frame)
        return page

    gpu.sysmem.register_window(base, regs.PAGE_SIZE_1G >> 12, resolve)
    p = regs.PPGTT_PRESENT
    pdp = _table(gpu, {1: (base << 12) | p | regs.PPGTT_PS})
    space = PpgttSpace(gpu.sysmem, 4, (_table(gpu, {0: pdp | p}),))
    space.page((regs.PAGE_SIZE_1G + 5 * PAGE_SIZE) >> 12, Access.READ)
    assert asked == [base + 5]


def test_ppgtt_leaf_on_a_fault_frame_is_unmapped(gpu: HostGpu) -> None:
    scratch = gpu.pages.alloc(owner="test")
    p = regs.PPGTT_PRESENT
    pt = _table(gpu, {0: (scratch[0] << 12) | p})
    pd = _table(gpu, {0: pt | p})
    space = PpgttSpace(gpu.sysmem, 3, (pd, 0, 0, 0), fault_frames=frozenset({scratch[0]}))
    with pytest.raises(Fault) as exc:
        space.page(0, Access.READ)
    assert exc.value.kind is FaultKind.UNMAPPED


def test_host_gm_blocks_are_accounted_and_coalesced(gpu: HostGpu) -> None:
    heap = gpu.host_gm
    free0, pages0 = heap.free_bytes, gpu.pages.in_use
    a = heap.alloc(4, "a")
    b = heap.alloc(8, "b", backed=[0, 7])
    assert heap.in_use("a") == 4 * PAGE_SIZE and heap.in_use() == 12 * PAGE_SIZE
    assert gpu.pages.in_use == pages0 + 6
    assert int(gpu.ggtt[(b.gm >> 12) + 3]) == gpu.scratch_pte
    heap.free(a)
    heap.free(b)
    heap.free(b)  # idempotent
    assert heap.free_bytes == free0 and heap.in_use() == 0 and gpu.pages.in_use == pages0


def test_a_native_context_with_its_own_ppgtt(gpu: HostGpu) -> None:
    from gvt_core.hw.engine.native import NativePpgtt

    ppgtt = NativePpgtt(gpu)
    ctx = NativeContext(gpu, BCS, ppgtt=ppgtt)
    try:
        surf, out = ppgtt.alloc(64 * 16 * 4), ppgtt.alloc(4096)
        ctx.emit(cmd.color_blt(surf.gma, 256, 0, 0, 64, 16, 0x0BADCAFE)
                 + cmd.store_dword(out.gma, 7))
        done = ctx.run()
        assert done.fault is None and done.ppgtt is not None
        assert surf.read(256 * 15 + 4 * 63, 4) == (0x0BADCAFE).to_bytes(4, "little")
        assert out.read(0, 4) == (7).to_bytes(4, "little")
        ctx.emit(cmd.store_dword(out.gma + 2 * PAGE_SIZE, 1))  # past the buffer: unmapped
        fault = ctx.run().fault
        assert fault is not None and fault.kind is FaultKind.UNMAPPED
    finally:
        ctx.close()
        ppgtt.close()
