"""The guest's side of PPGTT tests: a vGPU on a backend, PPGTT pages written the
way a guest CPU writes them (through its :class:`GuestPort`), and an oracle.

The oracle walks the guest's tables as the hardware would, reading guest RAM
through the port; it shares no code with the device model's walk, so the
shadow is checked against an independent reading of the same memory.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from gvt_core.device.gvt import Gvt
from gvt_core.device.ppgtt import PpgttManager, ShadowMm
from gvt_core.device.ppgtt_entry import TableKind
from gvt_core.device.vgpu import Vgpu
from gvt_core.errors import GuestMemoryError
from gvt_core.hw import regs

P = regs.PPGTT_PRESENT | regs.PPGTT_RW
PS = regs.PPGTT_PS
IPS = regs.PPGTT_IPS_64K
PAGE = 4096
#: (page_track, dma) options of sim: both page-track timings, both DMA models.
MODES = [
    ("forwarded", "iommu"),
    ("forwarded", "identity"),
    ("landed", "iommu"),
    ("landed", "identity"),
]


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
        self.gvt.close()

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
            raise ValueError(how)

    def entry(self, table_gfn: int, idx: int) -> int:
        return int.from_bytes(self.port.mem_read((table_gfn << 12) + idx * 8, 8), "little")

    def zero_page(self, gfn: int) -> None:
        self.port.mem_write(gfn << 12, bytes(PAGE))

    def g2v(self, create: bool, levels: int, roots: tuple[int, int, int, int]) -> None:
        """PVINFO: pdp[] then g2v_notify, as the guest driver announces a PPGTT."""
        base = self.bar0 + regs.VGT_PVINFO_PAGE
        for i, r in enumerate(roots):
            self.port.mmio_write(base + regs.PVINFO_PDP0_LO + 8 * i, r & 0xFFFF_FFFF, 4)
            self.port.mmio_write(base + regs.PVINFO_PDP0_LO + 8 * i + 4, r >> 32, 4)
        code = {
            (3, True): regs.VGT_G2V_PPGTT_L3_PAGE_TABLE_CREATE,
            (3, False): regs.VGT_G2V_PPGTT_L3_PAGE_TABLE_DESTROY,
            (4, True): regs.VGT_G2V_PPGTT_L4_PAGE_TABLE_CREATE,
            (4, False): regs.VGT_G2V_PPGTT_L4_PAGE_TABLE_DESTROY,
        }[(levels, create)]
        self.port.mmio_write(base + regs.PVINFO_G2V_NOTIFY, code, 4)


def open_stack(page_track: str = "forwarded", dma: str = "iommu",
               mem: int = 8 * regs.MiB) -> Stack:
    gvt = Gvt.open("sim", page_track=page_track, dma=dma)
    vm = gvt.create_vm(mem, "ppgtt-guest")
    vgpu = gvt.create_vgpu("GVTg_V4_8", vm)
    port = vm.port()
    port.cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY | regs.PCI_COMMAND_MASTER, 2)
    bar0 = (port.cfg_read(regs.PCI_BASE_ADDRESS_0, 4) & ~0xF) | (
        port.cfg_read(regs.PCI_BASE_ADDRESS_1, 4) << 32)
    return Stack(gvt, vm, vgpu, port, bar0)


# --- the oracle ------------------------------------------------------------------------------


@attrs.frozen
class Expect:
    """What the hardware would reach for one graphics address."""

    gpa: int | None
    #: the walk ended on something the shadow must put on scratch (1G page,
    #: a frame outside RAM), or failed (gpa None).
    scratch: bool


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
            gpa = (e & regs.ADDR_MASK_2M) | (gma & (2 * regs.MiB - 1))
            return Expect(gpa, gpa >= mem)
        if level == 2:
            ips = bool(e & IPS)
        if level == 1:
            if ips:
                gpa = (e & regs.ADDR_MASK_64K) | (gma & 0xFFFF)
                return Expect(gpa, gpa >= mem)
            gpa = (e & regs.ADDR_MASK_4K) | (gma & 0xFFF)
            return Expect(gpa, gpa >= mem)
        table = e & regs.ADDR_MASK_4K
        level -= 1


def reachable_tables(st: Stack, levels: int, roots: tuple[int, ...]) -> set[tuple[int, TableKind]]:
    """Every (guest frame, kind) the hardware could read as a page table from ``roots``."""
    mem_pages = st.port.mem_size >> 12
    top = TableKind.PML4 if levels == 4 else TableKind.PD
    todo = [((r & regs.ADDR_MASK_4K) >> 12, top) for r in (roots[:1] if levels == 4 else roots) if r]
    seen: set[tuple[int, TableKind]] = set()
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
                    continue
                todo.append((child, TableKind.PT64K if e & IPS else TableKind.PT))
            elif kind is TableKind.PDP and e & PS:
                continue
            else:
                todo.append((child, below[kind]))
    return seen


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
    and each guest table page is tracked or out of sync."""
    mgr = st.mgr
    want: set[tuple[int, TableKind]] = set()
    for mm in mgr.mms:
        if mm.shadowed:
            want |= reachable_tables(st, mm.levels, mm.guest_roots)
    have = {(sp.gfn, sp.kind) for sp in mgr.shadow_pages() if sp.kind is not TableKind.SPLIT2M}
    assert have == want


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
