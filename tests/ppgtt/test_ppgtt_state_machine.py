"""Random guest page-table histories against the shadow PPGTT, on sim.

The guest mutates its PPGTT only through its :class:`GuestPort` (8-byte
stores, 4-byte halves, byte stores, bulk ``mem_write``): maps, unmaps,
remaps, 64K/2M/1G entries, entries outside RAM, entries pointing at their own
or an ancestor table, table pages wiped and reused at another level, whole
pages rewritten (out of sync). ``sync`` steps are workload boundaries.

Invariants:
* at every step, every guest page a shadow follows is tracked xor out of
  sync, and no shadow entry is non-present (the scratch tree fills the rest);
* after a sync, the shadows are exactly the (page, kind) pairs the guest's
  roots reach, and for sampled addresses the shadow walk reaches the very
  guest byte the guest walk names (checked by flipping it through the GPU's
  view), or scratch where the guest walk fails or the entry is refused;
* after the last reference is dropped: no page track, no DMA map, no shadow
  page left.

Kept here rather than in ``gvt_core/testing``: it drives sim's page-track and
DMA options, which are sim-specific (``MODES``).
"""

from __future__ import annotations

from itertools import product

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gvt_core.device.ppgtt import ShadowMm
from gvt_core.hw import regs
from tests.ppgtt.guest_tables import (
    IPS,
    MODES,
    PS,
    P,
    Stack,
    check_tables,
    check_tracking,
    check_walk,
    open_stack,
)

MEM = 8 * regs.MiB  # 2048 guest frames
TABLE_FRAMES = range(16, 1024)
DATA_FRAMES = range(1024, 2048)
OUTSIDE = 1 << 20  # a frame far beyond guest RAM
IDX = [0, 1, 16, 17, 511]
#: every graphics address the entries at IDX can map (page offsets drawn per sync).
GMAS = {
    4: [(a << 39) | (b << 30) | (c << 21) | (d << 12) for a, b, c, d in product(IDX, repeat=4)],
    3: [(a << 30) | (c << 21) | (d << 12) for a in range(4) for c in IDX for d in IDX],
}
HOWS = ["store8", "store8", "halves", "high_first", "mem_write", "bytes"]


class PpgttMachine(RuleBasedStateMachine):
    mode: tuple[str, str] = MODES[0]

    def __init__(self) -> None:
        super().__init__()
        self.st: Stack = open_stack(*self.mode, mem=MEM)
        self.next_table = TABLE_FRAMES.start
        self.tables: list[int] = []
        self.levels = 4
        self.roots: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.live = False

    def fresh_table(self) -> int:
        gfn = self.next_table
        self.next_table += 1
        self.st.zero_page(gfn)
        self.tables.append(gfn)
        return gfn

    @property
    def mm(self) -> ShadowMm:
        mm = self.st.mgr.find(self.levels, self.roots)
        assert mm is not None
        return mm

    def build_pt(self, ips: bool = False) -> int:
        """A PT with pages mapped at every index of IDX (64K pages when ``ips``)."""
        pt = self.fresh_table()
        for i, idx in enumerate(IDX):
            if ips:
                if idx % 16 == 0:
                    gfn = DATA_FRAMES.start + 16 * (i + 1)
                    self.st.set_entry(pt, idx, (gfn << 12) | P)
            else:
                self.st.set_entry(pt, idx, ((DATA_FRAMES.start + 7 * i) << 12) | P)
        return pt

    def build_pd(self) -> int:
        """A PD with a 4K PT, a 64K PT, a 2M page and an empty slot."""
        pd = self.fresh_table()
        self.st.set_entry(pd, 0, (self.build_pt() << 12) | P)
        self.st.set_entry(pd, 1, (self.build_pt(ips=True) << 12) | P | IPS)
        self.st.set_entry(pd, 16, ((DATA_FRAMES.start + 512) << 12) | P | PS)
        return pd

    @initialize(levels=st.sampled_from([3, 4]), nroots=st.integers(1, 4))
    def start(self, levels: int, nroots: int) -> None:
        """A guest PPGTT with every kind of entry, written before it is announced."""
        self.levels = levels
        if levels == 4:
            pml4, pdp = self.fresh_table(), self.fresh_table()
            self.st.set_entry(pml4, 0, (pdp << 12) | P)
            self.st.set_entry(pdp, 0, (self.build_pd() << 12) | P)
            self.st.set_entry(pdp, 1, (self.build_pd() << 12) | P)
            self.roots = (pml4 << 12, 0, 0, 0)
        else:
            roots = [self.build_pd() << 12 for _ in range(nroots)] + [0] * (4 - nroots)
            self.roots = (roots[0], roots[1], roots[2], roots[3])
        self.st.g2v(True, levels, self.roots)
        self.live = True
        assert self.mm.shadowed

    # --- guest mutations --------------------------------------------------------------------
    @precondition(lambda self: self.next_table < TABLE_FRAMES.stop)
    @rule(data=st.data())
    def link_new_table(self, data: st.DataObject) -> None:
        parent = data.draw(st.sampled_from(self.tables))
        idx = data.draw(st.sampled_from(IDX))
        flags = data.draw(st.sampled_from([P, P, P | IPS]))
        child = self.fresh_table()
        self.st.set_entry(parent, idx, (child << 12) | flags, data.draw(st.sampled_from(HOWS)))

    @rule(data=st.data())
    def write_entry(self, data: st.DataObject) -> None:
        table = data.draw(st.sampled_from(self.tables))
        idx = data.draw(st.sampled_from(IDX))
        data_gfn = data.draw(st.sampled_from(DATA_FRAMES))
        value = data.draw(st.sampled_from([
            0,
            (data_gfn << 12) | P,  # a 4K page (or, above the PT level, a "table" of data)
            (data.draw(st.sampled_from(self.tables)) << 12) | P,  # own table, an ancestor, another level
            (data.draw(st.sampled_from(self.tables)) << 12) | P | IPS,
            (OUTSIDE << 12) | P,  # outside guest RAM
            ((data_gfn & ~511) << 12) | P | PS,  # a 2M page (a 1G page at the PDP level)
            ((data_gfn & ~15) << 12) | P,  # 64K aligned
            data.draw(st.integers(0, (1 << 64) - 1)),  # garbage
            (data.draw(st.sampled_from(self.tables)) << 12),  # not present
        ]))
        self.st.set_entry(table, idx, value, data.draw(st.sampled_from(HOWS)))

    @rule(data=st.data())
    def half_written_entry(self, data: st.DataObject) -> None:
        """Only the low dword lands before the workload (a torn 32-bit update)."""
        table = data.draw(st.sampled_from(self.tables))
        idx = data.draw(st.sampled_from(IDX))
        gfn = data.draw(st.sampled_from(DATA_FRAMES))
        self.st.port.store((table << 12) + idx * 8, (gfn << 12) | P, 4)

    @rule(data=st.data())
    def rewrite_page(self, data: st.DataObject) -> None:
        """A whole table rewritten at once (drives pages out of sync)."""
        table = data.draw(st.sampled_from(self.tables))
        base = data.draw(st.sampled_from(DATA_FRAMES))
        # 512 present entries over 8 frames: a PD rewritten this way gets 8 PTs, not 512
        ents = (np.arange(512, dtype=np.uint64) % np.uint64(8) + np.uint64(base)) << 12
        ents |= np.uint64(P)
        self.st.port.mem_write(table << 12, ents.astype("<u8").tobytes())

    @rule(data=st.data())
    def wipe_table(self, data: st.DataObject) -> None:
        """Free a table page: zero it (it may later be linked at another level)."""
        self.st.port.mem_write(data.draw(st.sampled_from(self.tables)) << 12, bytes(4096))

    @rule()
    def recreate(self) -> None:
        """The guest retires its PPGTT and announces it again: a fresh shadow."""
        self.st.g2v(False, self.levels, self.roots)
        assert self.st.mgr.find(self.levels, self.roots) is None
        self.check_empty()
        self.st.g2v(True, self.levels, self.roots)

    @rule()
    def reset(self) -> None:
        """GT reset: every shadow goes; the guest announces its PPGTT again."""
        self.st.gvt.reset_vgpu(self.st.vgpu, dmlr=False)
        self.check_empty()
        self.st.g2v(True, self.levels, self.roots)

    @rule(data=st.data())
    def sync_and_check(self, data: st.DataObject) -> None:
        """A workload boundary: after sync the shadow equals the guest's tables."""
        self.st.mgr.sync()
        assert self.st.mgr.out_of_sync_count == 0
        check_tables(self.st)
        mm = self.mm
        offset = data.draw(st.integers(0, 4095))
        for gma in GMAS[self.levels]:
            check_walk(self.st, mm, gma | offset)

    # --- invariants -----------------------------------------------------------------------------
    @invariant()
    def tracked_or_out_of_sync(self) -> None:
        if self.live:
            check_tracking(self.st)

    @invariant()
    def no_empty_shadow_entry(self) -> None:
        if not self.live:
            return
        mgr = self.st.mgr
        for sp in mgr.shadow_pages():
            assert np.all(sp.ents & np.uint64(1)), sp
        for mm in mgr.mms:
            if mm.shadowed:
                n = 1 if mm.levels == 4 else 4
                assert all(mm.shadow_roots[:n])

    def check_empty(self) -> None:
        held = self.st.vm.held()
        assert held.page_tracks == 0 and held.dma_maps == 0
        assert self.st.gvt.gpu.sysmem.count(self.st.mgr.env.owner) == 0
        assert self.st.mgr.shadow_page_count == 0

    def teardown(self) -> None:
        try:
            if self.live:
                self.st.mgr.sync()
                check_tables(self.st)
                self.st.g2v(False, self.levels, self.roots)
                self.check_empty()
                assert self.st.mgr.stats.leak_swept == 0
        finally:
            self.st.close()


def _machine(mode: tuple[str, str]) -> type[PpgttMachine]:
    return type(f"PpgttMachine_{mode[0]}_{mode[1]}", (PpgttMachine,), {"mode": mode})


@pytest.mark.parametrize("mode", MODES, ids=[f"{a}-{b}" for a, b in MODES])
def test_shadow_follows_the_guest(mode: tuple[str, str]) -> None:
    machine = _machine(mode)
    machine.TestCase.settings = settings(
        max_examples=25,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    machine.TestCase().runTest()
