"""A hostile guest against the real device model on sim.

Hypothesis throws arbitrary config-space and BAR0 accesses (any offset,
including beyond BAR0 and config space, any size including 0/3/5/16, any
value, PTE-shaped GGTT writes) at vGPU A through the host's CoreOps while a
second vGPU B exists and has its own GGTT mappings. Invariants after every
batch: nothing raised into the host; B's registers, config space and GGTT
are untouched; no host GGTT entry or host fence outside A's partition
changed; every host GGTT entry of A points at scratch or at a page of A's
own guest RAM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, given, settings

from gvt_core.device import limits
from gvt_core.device.registers.handlers import REGISTER_TABLE
from gvt_core.guest.port import GUEST_PHYS_LIMIT, MAX_PENDING_MSIS
from gvt_core.hw import regs

Guest = Any  # tests/device/conftest.py's Guest
P = regs.GEN8_PAGE_PRESENT
GTT = regs.GTT_START_OFFSET
MEM = 16 * regs.MiB

_TABLE_DWORDS = sorted({d for i in REGISTER_TABLE for d in i.dwords if i.size <= 64})
_EDGES = [0, regs.MMIO_SIZE - 8, regs.MMIO_SIZE - 1, regs.MMIO_SIZE, GTT - 4, GTT,
          regs.BAR0_SIZE - 8, regs.BAR0_SIZE - 4, regs.BAR0_SIZE, regs.BAR0_SIZE + 4,
          regs.VGT_PVINFO_PAGE + 0x804, regs.VGT_PVINFO_PAGE + 0x818,
          regs.VGT_PVINFO_PAGE + 0x808, regs.FENCE_REG_GEN6_LO + 8 * 31]
SIZES = st.sampled_from([4] * 8 + [8] * 3 + [0, 1, 2, 3, 5, 7, 9, 16, -1])
VALUES = st.one_of(
    st.integers(0, 0xFFFF_FFFF),
    st.integers(-(1 << 70), 1 << 72),
    st.sampled_from([0, 0xFFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_0000, 1, 0x8000_0000]),
)


def _host_state(a: Guest) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the host GGTT entries and fences that belong to A."""
    res = a.vgpu.resources
    mine = np.zeros(regs.GGTT_ENTRIES, dtype=bool)
    mine[res.low_gm_base >> 12 : res.low_gm_end >> 12] = True
    mine[res.high_gm_base >> 12 : res.high_gm_end >> 12] = True
    fences = np.zeros(len(a.gvt.gpu.fences), dtype=bool)
    fences[list(res.fences)] = True
    return mine, fences


def _addr(mv: memoryview) -> int:
    return int(np.frombuffer(mv, dtype=np.uint8).__array_interface__["data"][0])


@st.composite
def ops(draw: st.DrawFn, a_ranges: tuple[int, int, int, int], b_ranges: tuple[int, int, int, int]
        ) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(
        ["mmio_r", "mmio_w", "mmio_w", "cfg_r", "cfg_w", "ggtt", "ggtt_half", "gpa_w",
         "aperture"]))
    if kind in ("cfg_r", "cfg_w"):
        return (kind, draw(st.integers(-8, 4200)), draw(SIZES), draw(VALUES))
    if kind in ("ggtt", "ggtt_half"):
        lo, lsize, hi, hsize = draw(st.sampled_from([a_ranges, a_ranges, b_ranges]))
        base, size = draw(st.sampled_from([(lo, lsize), (hi, hsize)]))
        gm = base + draw(st.integers(-4, size // 4096 + 4)) * 4096
        gfn = draw(st.one_of(st.integers(0, MEM // 4096 + 64), st.integers(0, (1 << 34) - 1)))
        pte = (gfn << 12) | draw(st.integers(0, 0xFFF)) | draw(st.sampled_from([0, P, P]))
        pte |= draw(st.sampled_from([0, 0, 1 << 63, 0x7FF << 52]))
        return (kind, GTT + (gm >> 12) * 8 + (4 * draw(st.integers(0, 1)) if kind == "ggtt_half"
                                              else 0), 8, pte)
    if kind == "gpa_w":
        return (kind, draw(st.integers(-(1 << 40), 1 << 40)), draw(SIZES), draw(VALUES))
    if kind == "aperture":  # a CPU store through A's aperture, mapped entry or not
        lo, lsize = a_ranges[0], a_ranges[1]
        return (kind, lo + draw(st.integers(0, lsize // 8 - 1)) * 8, 8,
                draw(st.integers(0, (1 << 64) - 1)))
    table = st.sampled_from(_TABLE_DWORDS)
    offset = draw(st.one_of(
        table, table, table,
        st.tuples(table, st.integers(-2, 6)).map(sum),
        st.integers(-0x100, regs.BAR0_SIZE + 0x100),
        st.sampled_from(_EDGES),
        st.integers(0, 0xFFF).map(lambda o: regs.VGT_PVINFO_PAGE + o),
    ))
    return (kind, offset, draw(SIZES), draw(VALUES))


def test_hostile_guest_cannot_reach_outside_its_vgpu(make_guest: Callable[..., Guest]) -> None:
    a, b = make_guest(mem=MEM), make_guest(mem=MEM)
    gvt, gpu = a.gvt, a.gvt.gpu
    ra, rb = a.vgpu.resources, b.vgpu.resources
    # B is a live guest with mappings and state of its own
    for i in range(16):
        b.port.mem_write(i * 4096, bytes([i + 1]) * 4096)
        b.ggtt_w(rb.low_gm_base + i * 4096, (i * 4096) | P)
        b.ggtt_w(rb.high_gm_base + i * 4096, (i * 4096) | P)
    b.read_pvinfo()
    b.w(regs.RENDER_RING_BASE + regs.RING_TAIL, 0x100)
    b.w(regs.FENCE_REG_GEN6_LO, (((rb.low_gm_base + 0xF000) << 32) | rb.low_gm_base | 1), 8)
    # A's driver has touched every register once (first touches take their own path)
    for d in sorted({d for i in REGISTER_TABLE if i.size <= regs.VGT_PVINFO_SIZE for d in i.dwords}):
        gvt.emulate_mmio_write(a.vgpu, a.bar0 + d, a.vgpu.mmio.get32(d), 4)
        gvt.emulate_mmio_read(a.vgpu, a.bar0 + d, 4)
    gvt.reset_vgpu(a.vgpu)
    b_vreg = bytes(b.vgpu.mmio.vreg)
    b_cfg = b.vgpu.cfg.snapshot()
    b_virtual = b.vgpu.ggtt.virtual.copy()
    mine, my_fences = _host_state(a)
    host_ggtt = gpu.ggtt.copy()
    host_fences = np.array(gpu.fences, dtype=np.uint64)
    scratch = gpu.scratch_pte
    scratch_page = gpu.sysmem._pages[gpu.scratch_frame]  # the real page, not a copy
    a_ranges = (ra.low_gm_base, ra.low_gm_size, ra.high_gm_base, ra.high_gm_size)
    b_ranges = (rb.low_gm_base, rb.low_gm_size, rb.high_gm_base, rb.high_gm_size)

    def run(op: tuple[Any, ...]) -> None:
        kind, offset, size, value = op
        vgpu = a.vgpu
        if kind == "cfg_r":
            gvt.emulate_cfg_read(vgpu, offset, size)
        elif kind == "cfg_w":
            gvt.emulate_cfg_write(vgpu, offset, value, size)
        elif kind == "mmio_r":
            gvt.emulate_mmio_read(vgpu, vgpu.cfg.bar0_base + offset, size)
        elif kind == "gpa_w":
            gvt.emulate_mmio_write(vgpu, offset, value, size)
        elif kind == "aperture":
            bar2 = (vgpu.cfg.bar2_base if vgpu.cfg.memory_enabled else -1)
            # the fuzzed config writes may move the 64-bit BAR beyond the CPU's
            # guest-physical space, which no store can reach
            if bar2 > 0 and bar2 + offset + size <= GUEST_PHYS_LIMIT:
                a.port.mmio_write(bar2 + offset, value, size)
        elif kind == "ggtt_half":
            gvt.emulate_mmio_write(vgpu, vgpu.cfg.bar0_base + offset, value & 0xFFFF_FFFF, 4)
        else:
            gvt.emulate_mmio_write(vgpu, vgpu.cfg.bar0_base + offset, value, size)

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.booleans(), st.lists(ops(a_ranges, b_ranges), min_size=20, max_size=60))
    def hostile(pv_aware: bool, batch: list[tuple[Any, ...]]) -> None:
        if a.vgpu.failsafe:  # keep exercising the emulation, not only failsafe storage
            gvt.reset_vgpu(a.vgpu)
            assert not a.vgpu.failsafe and a.vgpu.ggtt.mapped == 0
        if not a.vgpu.cfg.memory_enabled:  # keep the aperture reachable (a reset clears it)
            a.enable_decoding()
        if pv_aware:  # a PV guest is not put into failsafe for fences / RING_MODE
            gvt.emulate_mmio_read(a.vgpu, a.vgpu.cfg.bar0_base + regs.VGT_PVINFO_PAGE, 8)
        for op in batch:
            run(op)
        # what A can grow stays bounded; nothing persists in the shared scratch page
        assert a.vm.pending_msis <= MAX_PENDING_MSIS
        assert len(a.vgpu.mmio.unknown_offsets) <= limits.MAX_LOGGED_OFFSETS
        assert bytes(scratch_page) == bytes(4096)
        # B untouched
        assert bytes(b.vgpu.mmio.vreg) == b_vreg
        assert b.vgpu.cfg.snapshot() == b_cfg
        assert (b.vgpu.ggtt.virtual == b_virtual).all()
        # nothing outside A's partition changed on the host
        assert (gpu.ggtt[~mine] == host_ggtt[~mine]).all()
        fences = np.array(gpu.fences, dtype=np.uint64)
        assert (fences[~my_fences] == host_fences[~my_fences]).all()
        # A's host entries: scratch, or a page of A's own RAM named by its own PTE
        # (in failsafe the virtual GGTT moves on alone; the host keeps older own pages)
        ggtt = a.vgpu.ggtt
        ram_start = _addr(a.vm.ram.page(0))
        addr = np.uint64(regs.GTT_ADDR_MASK)
        for index in np.flatnonzero(mine & ((gpu.ggtt & addr) != (np.uint64(scratch) & addr))):
            slot = ggtt.slot(int(index))
            assert slot is not None
            frame = (int(gpu.ggtt[index]) & regs.GTT_ADDR_MASK) >> 12
            where = _addr(gpu.sysmem.page(frame)) - ram_start
            assert 0 <= where < MEM and where % 4096 == 0
            if not a.vgpu.failsafe:
                gfn = (int(ggtt.virtual[slot]) & regs.GTT_ADDR_MASK) >> 12
                assert where == gfn * 4096

    hostile()
    # the hostile guest can still be reset and destroyed cleanly; B keeps working
    gvt.reset_vgpu(a.vgpu)
    assert a.vm.held().dma_maps == 0
    gvt.destroy_vgpu(a.vgpu)
    assert a.vm.held().total == 0
    assert gpu.gm_read(rb.low_gm_base + 3 * 4096, 4) == b"\x04" * 4
