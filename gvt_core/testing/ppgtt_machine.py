"""Random guest page-table histories against the shadow PPGTT, on any backend.

The guest's side of PPGTT testing: a vGPU on a backend, page tables written
the way a guest CPU writes them (through its :class:`GuestPort`: 8-byte
stores, 4-byte halves in either order, byte stores, bulk ``mem_write``), an
oracle that walks the guest's tables as the hardware would, and
:class:`PpgttMachine`, a hypothesis state machine of guest histories: maps,
unmaps, remaps, 64K/2M/1G entries, entries outside RAM, entries pointing at
their own or an ancestor table, table pages wiped and reused at another
level, whole pages rewritten (out of sync). ``sync`` steps are workload
boundaries. The page sizes are Broadwell's (the 64K bit ignored, 2M pages
split) unless the manager was set up otherwise; a PPGTT whose tables reach a
1 GiB entry cannot be shadowed (announcing it is refused, as upstream).

Invariants:

* at every step, every guest page a shadow follows is tracked xor out of
  sync, and no shadow entry is non-present (the scratch tree fills the rest);
* after a sync, the shadows are exactly the (page, kind) pairs the guest's
  roots reach; the 2 MiB guest pages are split into host PTs exactly when they
  cannot stay huge (always on Broadwell); for sampled
  addresses the shadow walk reaches the very guest byte the guest walk names
  (checked by flipping it through the GPU's view), or scratch where the guest
  walk fails or the entry is refused;
* after the last reference is dropped: no page track, no DMA map, no shadow
  page left.

The oracle reads guest RAM through the port and shares no code with the
device model's walk, so the shadow is checked against an independent reading
of the same memory. Nothing here depends on which backend runs it: what
differs between backends is read from their capabilities. Used by
``test_ppgtt_scenarios`` (every backend) and by the core's own PPGTT tests
(every page-track and DMA mode of sim).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import product
from typing import Any, ClassVar

import attrs
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from gvt_core.device.gvt import Gvt
from gvt_core.device.memory.ppgtt import PpgttManager, ShadowMm
from gvt_core.device.memory.ppgtt_entry import TableKind
from gvt_core.device.vgpu import Vgpu
from gvt_core.errors import GuestMemoryError
from gvt_core.guest.driver import notify_ppgtt
from gvt_core.hw import regs
from gvt_core.testing.guests import enable_decoding

P = regs.PPGTT_PRESENT | regs.PPGTT_RW
PS = regs.PPGTT_PS
IPS = regs.PPGTT_IPS_64K
PAGE = 4096
SIZE_2M = 2 * regs.MiB

#: guest RAM of the machine's guest: 2048 frames.
MEM = 8 * regs.MiB
TABLE_FRAMES = range(16, 1024)
DATA_FRAMES = range(1024, 2048)
#: a frame far beyond guest RAM.
OUTSIDE = 1 << 20
IDX = [0, 1, 16, 17, 511]
#: every graphics address the entries at IDX can map (page offsets drawn per sync).
GMAS = {
    4: [(a << 39) | (b << 30) | (c << 21) | (d << 12) for a, b, c, d in product(IDX, repeat=4)],
    3: [(a << 30) | (c << 21) | (d << 12) for a in range(4) for c in IDX for d in IDX],
}
HOWS = ["store8", "store8", "halves", "high_first", "mem_write", "bytes"]


@attrs.define(eq=False)
class Stack:
    """A host, a guest and its vGPU on one backend; the vGPU's PPGTT manager."""

    gvt: Gvt
    vm: Any
    vgpu: Vgpu
    port: Any
    bar0: int

    @property
    def mgr(self) -> PpgttManager:
        ppgtt = self.vgpu.ppgtt
        assert isinstance(ppgtt, PpgttManager)
        return ppgtt

    def close(self) -> None:
        """Destroy the vGPU and the host, then the guest (the host does not own it)."""
        try:
            self.gvt.close()
        finally:
            self.vm.close()

    # --- guest CPU ------------------------------------------------------------------------
    def set_entry(self, table_gfn: int, idx: int, value: int, how: str = "store8") -> None:
        """The guest writes entry ``idx`` of the table at ``table_gfn``."""
        gpa = (table_gfn << 12) + idx * 8
        if how == "store8":
            self.port.store(gpa, value, 8)
        elif how == "halves":  # a 32-bit guest: low dword, then high dword
            self.port.store(gpa, value & 0xFFFF_FFFF, 4)
            self.port.store(gpa + 4, value >> 32, 4)
        elif how == "high_first":
            self.port.store(gpa + 4, value >> 32, 4)
            self.port.store(gpa, value & 0xFFFF_FFFF, 4)
        elif how == "mem_write":
            self.port.mem_write(gpa, value.to_bytes(8, "little"))
        elif how == "bytes":  # byte by byte: odd-sized stores
            for i, b in enumerate(value.to_bytes(8, "little")):
                self.port.store(gpa + i, b, 1)
        else:
            raise ValueError(f"unknown way to write an entry: {how!r}; one of {sorted(set(HOWS))}")

    def entry(self, table_gfn: int, idx: int) -> int:
        return int.from_bytes(self.port.mem_read((table_gfn << 12) + idx * 8, 8), "little")

    def zero_page(self, gfn: int) -> None:
        self.port.mem_write(gfn << 12, bytes(PAGE))

    def g2v(self, create: bool, levels: int, roots: tuple[int, int, int, int]) -> None:
        """PVINFO: pdp[] then g2v_notify, as the guest driver announces a PPGTT."""
        notify_ppgtt(self.port, self.bar0, levels, roots, create)


def open_stack(backend: str, mem: int = MEM, type_name: str | None = None,
               **backend_options: Any) -> Stack:
    """A host on ``backend``, a guest it launches and a vGPU (the smallest type unless
    ``type_name``) with memory decoding and bus mastering on."""
    gvt = Gvt.open(backend, **backend_options)
    try:
        vm = gvt.create_vm(mem, "ppgtt-guest")
    except BaseException:
        gvt.close()
        raise
    try:
        name = type_name or gvt.smallest_type
        vgpu = gvt.create_vgpu(name, vm)
        port = vm.port()
        bar0 = enable_decoding(port)
    except BaseException:
        try:
            gvt.close()
        finally:
            vm.close()
        raise
    return Stack(gvt, vm, vgpu, port, bar0)


# --- the oracle ------------------------------------------------------------------------------


@attrs.frozen
class Expect:
    """What the hardware would reach for one graphics address."""

    gpa: int | None
    #: the walk ended on something the shadow must put on scratch (1G page,
    #: a frame outside RAM), or failed (gpa None).
    scratch: bool


def ips_honoured(st: Stack) -> bool:
    """Whether the host's hardware reads a PDE's IPS bit (never on Broadwell)."""
    return st.mgr.ips_64k


@attrs.frozen
class Reach:
    """What a guest's roots reach, as the hardware would read its tables."""

    #: every (guest frame, kind) read as a page table.
    tables: frozenset[tuple[int, TableKind]]
    #: first guest frame of every 2 MiB page a reached PD entry maps.
    pages_2m: frozenset[int]
    #: a reached PDP entry maps a 1 GiB page (the PPGTT cannot be shadowed).
    has_1g: bool = False


def oracle_walk(st: Stack, levels: int, roots: tuple[int, ...], gma: int) -> Expect:
    """The hardware's walk of the guest tables, reading guest RAM through the port."""
    mem = st.port.mem_size
    if levels == 4:
        root, level = roots[0], 4
    else:
        root, level = roots[(gma >> 30) & 3], 2
    if not root:
        return Expect(None, True)
    table = root & regs.ADDR_MASK_4K
    ips = False
    while True:
        idx = (gma >> (12 + 9 * (level - 1))) & 511
        if ips:
            idx &= ~15
        if table + idx * 8 + 8 > mem:
            return Expect(None, True)
        e = int.from_bytes(st.port.mem_read(table + idx * 8, 8), "little")
        if not e & 1:
            return Expect(None, True)
        if level == 3 and e & PS:
            return Expect((e & regs.ADDR_MASK_1G) | (gma & (regs.GiB - 1)), True)
        if level == 2 and e & PS:
            gpa = (e & regs.ADDR_MASK_2M) | (gma & (SIZE_2M - 1))
            return Expect(gpa, gpa >= mem)
        if level == 2:
            ips = bool(e & IPS) and ips_honoured(st)
        if level == 1:
            if ips:
                gpa = (e & regs.ADDR_MASK_64K) | (gma & 0xFFFF)
                return Expect(gpa, gpa >= mem)
            gpa = (e & regs.ADDR_MASK_4K) | (gma & 0xFFF)
            return Expect(gpa, gpa >= mem)
        table = e & regs.ADDR_MASK_4K
        level -= 1


def reach(st: Stack, levels: int, roots: tuple[int, ...]) -> Reach:
    """Every table and 2 MiB page the hardware could reach from ``roots``."""
    mem_pages = st.port.mem_size >> 12
    top = TableKind.PML4 if levels == 4 else TableKind.PD
    todo = [((r & regs.ADDR_MASK_4K) >> 12, top) for r in (roots[:1] if levels == 4 else roots) if r]
    seen: set[tuple[int, TableKind]] = set()
    pages_2m: set[int] = set()
    has_1g = False
    ips = ips_honoured(st)
    below = {TableKind.PML4: TableKind.PDP, TableKind.PDP: TableKind.PD}
    while todo:
        gfn, kind = todo.pop()
        if (gfn, kind) in seen or gfn >= mem_pages:
            continue
        seen.add((gfn, kind))
        if kind.is_leaf:
            continue
        ents = np.frombuffer(st.port.mem_read(gfn << 12, PAGE), dtype="<u8")
        for e in ents[(ents & np.uint64(1)) != 0].tolist():
            child = (e & regs.ADDR_MASK_4K) >> 12
            if kind is TableKind.PD:
                if e & PS:
                    pages_2m.add((e & regs.ADDR_MASK_2M) >> 12)
                    continue
                todo.append((child, TableKind.PT64K if e & IPS and ips else TableKind.PT))
            elif kind is TableKind.PDP and e & PS:
                has_1g = True
                continue
            else:
                todo.append((child, below[kind]))
    return Reach(frozenset(seen), frozenset(pages_2m), has_1g)


def reachable_tables(st: Stack, levels: int, roots: tuple[int, ...]) -> set[tuple[int, TableKind]]:
    """Every (guest frame, kind) the hardware could read as a page table from ``roots``."""
    return set(reach(st, levels, roots).tables)


def check_walk(st: Stack, mm: ShadowMm, gma: int) -> None:
    """The shadow walk reaches exactly the guest page the guest walk names, or scratch."""
    want = oracle_walk(st, mm.levels, mm.guest_roots, gma)
    assert st.mgr.gma_to_gpa(mm, gma) == want.gpa, hex(gma)
    dma = st.mgr.gma_to_dma(mm, gma)
    sysmem = st.gvt.gpu.sysmem
    if want.scratch:
        assert st.mgr.scratch.is_scratch(dma), (hex(gma), hex(dma))
        return
    assert want.gpa is not None
    assert not st.mgr.scratch.is_scratch(dma), hex(gma)
    # the bus address reaches that very guest byte: flip it through the GPU's view
    before = st.port.mem_read(want.gpa, 1)
    flipped = bytes([before[0] ^ 0x5A])
    sysmem.write(dma, flipped)
    try:
        assert st.port.mem_read(want.gpa, 1) == flipped, (hex(gma), hex(want.gpa), hex(dma))
    finally:
        sysmem.write(dma, before)


def check_tables(st: Stack) -> None:
    """After a sync: the shadows are exactly the tables the guest's live roots reach,
    and 2 MiB guest pages are split into host PTs exactly when the backend cannot
    DMA-map 2 MiB at once (where it can, a split is only the fallback for a 2 MiB
    page that could not be mapped whole)."""
    mgr = st.mgr
    tables: set[tuple[int, TableKind]] = set()
    pages_2m: set[int] = set()
    for mm in mgr.mms:
        if mm.shadowed:
            r = reach(st, mm.levels, mm.guest_roots)
            tables |= r.tables
            pages_2m |= r.pages_2m
    have = {(sp.gfn, sp.kind) for sp in mgr.shadow_pages() if sp.kind is not TableKind.SPLIT2M}
    assert have == tables
    splits = {sp.gfn for sp in mgr.shadow_pages() if sp.kind is TableKind.SPLIT2M}
    if not mgr.huge_2m:
        assert splits == pages_2m
        assert mgr.stats.huge_2m == 0
    else:
        assert splits <= pages_2m


def check_tracking(st: Stack) -> None:
    """Every guest page a shadow follows is write-tracked or out of sync (any time)."""
    mgr, track = st.mgr, st.vgpu.page_track
    for gfn in mgr.guest_table_gfns():
        assert track.is_tracked(gfn) != mgr.is_out_of_sync(gfn), hex(gfn)
    assert st.vm.held().page_tracks == track.tracked_count


def read_or_none(st: Stack, gpa: int, n: int) -> bytes | None:
    try:
        return st.port.mem_read(gpa, n)
    except GuestMemoryError:
        return None


# --- the machine ------------------------------------------------------------------------------


class PpgttMachine(RuleBasedStateMachine):
    """Guest page-table histories on the stack :attr:`open_stack` builds (see the module
    docstring); make one per backend or mode with :func:`machine_for`."""

    #: builds a fresh stack for each example.
    open_stack: ClassVar[Callable[[], Stack]]
    #: the scenario's time budget (``time.monotonic()`` deadline), set by :func:`run_machine`.
    deadline: ClassVar[ScenarioDeadline | None] = None

    def __init__(self) -> None:
        super().__init__()
        if type(self).deadline is not None:
            type(self).deadline.check()
        self.st: Stack = type(self).open_stack()
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
        self.st.port.mem_write(data.draw(st.sampled_from(self.tables)) << 12, bytes(PAGE))

    def announce(self) -> None:
        """The guest announces its PPGTT: shadowed, or refused when it reaches a
        1 GiB entry (nothing held then)."""
        refuse = reach(self.st, self.levels, self.roots).has_1g
        self.st.g2v(True, self.levels, self.roots)
        self.live = self.st.mgr.find(self.levels, self.roots) is not None
        assert self.live != refuse
        if not self.live:
            self.check_empty()

    @rule()
    def recreate(self) -> None:
        """The guest retires its PPGTT and announces it again: a fresh shadow."""
        if self.live:
            self.st.g2v(False, self.levels, self.roots)
            assert self.st.mgr.find(self.levels, self.roots) is None
        self.check_empty()
        self.announce()

    @rule()
    def reset(self) -> None:
        """GT reset: every shadow goes; the guest announces its PPGTT again."""
        self.st.gvt.reset_vgpu(self.st.vgpu, dmlr=False)
        self.check_empty()
        self.announce()

    @precondition(lambda self: self.live)
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
    def within_budget(self) -> None:
        if type(self).deadline is not None:
            type(self).deadline.check()

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


def machine_for(name: str, opener: Callable[[], Stack]) -> type[PpgttMachine]:
    """A :class:`PpgttMachine` whose examples each run on a fresh ``opener()`` stack."""
    return type(f"PpgttMachine_{name}", (PpgttMachine,), {"open_stack": staticmethod(opener)})


@attrs.define
class ScenarioDeadline:
    """A time budget for one scenario run, shrinking included."""

    what: str
    budget_s: float
    start: float = attrs.field(factory=time.monotonic)
    expired: bool = False

    def check(self) -> None:
        if self.expired or time.monotonic() - self.start > self.budget_s:
            self.expired = True
            raise ScenarioDeadlineError(self.message())

    def message(self) -> str:
        spent = time.monotonic() - self.start
        return (
            f"{self.what} ran past its {self.budget_s:.0f} s budget ({spent:.0f} s): the "
            "backend is too slow for this suite, or broken (hypothesis replays a failing "
            "history many times while it shrinks it); what hypothesis reported is below"
        )


class ScenarioDeadlineError(AssertionError):
    """A scenario used up its time budget."""


#: seconds one PPGTT scenario run may take, shrinking a failure included.
SCENARIO_BUDGET_S = 180.0


def run_machine(machine: type[PpgttMachine], max_examples: int, steps: int,
                budget_s: float = SCENARIO_BUDGET_S) -> None:
    """Run ``machine`` for ``max_examples`` histories of up to ``steps`` steps each,
    within ``budget_s`` seconds (a :class:`ScenarioDeadlineError` says so past it)."""
    deadline = machine.deadline = ScenarioDeadline(machine.__name__, budget_s)
    machine.TestCase.settings = settings(
        max_examples=max_examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    try:
        machine.TestCase().runTest()
    except BaseException as exc:
        if deadline.expired:
            raise ScenarioDeadlineError(deadline.message()) from exc
        raise
    if deadline.expired:
        raise ScenarioDeadlineError(deadline.message())
