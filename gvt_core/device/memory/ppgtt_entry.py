"""Gen8 PPGTT table kinds and entry encoding (facts 4.3).

A guest page-table page is interpreted by the level it is reached at, so a
shadow is keyed by the guest frame *and* its :class:`TableKind`. The kinds of
the leaf level differ by how the guest entries are read: 4 KiB PTEs, 64 KiB
PTEs (the parent PDE has IPS; one entry at every 16th index) and the
host-only table a 2 MiB entry is split into when it cannot stay huge.
"""

from __future__ import annotations

import enum

from gvt_core.errors import AddressingModeError
from gvt_core.hw import regs

#: the guest's PPGTT root pointers as the context (or PVINFO) carries them.
Roots = tuple[int, int, int, int]


class TableKind(enum.Enum):
    """What a page of a PPGTT holds, from the leaf level up."""

    PT = "pt"  # 512 4K PTEs
    PT64K = "pt64k"  # PT below a PDE with IPS: a 64K PTE at every 16th index
    SPLIT2M = "split2m"  # host-only PT of 512 4K entries a 2M guest entry is split into
    PD = "pd"
    PDP = "pdp"
    PML4 = "pml4"

    @property
    def level(self) -> int:
        """1 for PTs, 2 PD, 3 PDP, 4 PML4."""
        return _LEVEL[self]

    @property
    def is_leaf(self) -> bool:
        return _LEVEL[self] == 1

    @property
    def shift(self) -> int:
        """Bit position of this table's index inside a graphics address."""
        return _SHIFT[_LEVEL[self]]


_LEVEL = {
    TableKind.PT: 1,
    TableKind.PT64K: 1,
    TableKind.SPLIT2M: 1,
    TableKind.PD: 2,
    TableKind.PDP: 3,
    TableKind.PML4: 4,
}
_SHIFT = {
    1: regs.PPGTT_PTE_SHIFT,
    2: regs.PPGTT_PDE_SHIFT,
    3: regs.PPGTT_PDPE_SHIFT,
    4: regs.PPGTT_PML4E_SHIFT,
}
#: the table kind of the top level of a PPGTT with that many levels (roots point at it).
TOP_KIND = {3: TableKind.PD, 4: TableKind.PML4}
#: size of the graphics address space of a PPGTT with that many levels.
GM_SIZE = {3: regs.PPGTT_L3_GM_SIZE, 4: regs.PPGTT_L4_GM_SIZE}


def index(gma: int, level: int) -> int:
    """Index of ``gma`` in a table of ``level`` (4-level PDP indexing for level 3)."""
    return (gma >> _SHIFT[level]) & regs.PPGTT_INDEX_MASK


def present(entry: int) -> bool:
    return bool(entry & regs.PPGTT_PRESENT)


def frame(entry: int) -> int:
    """The 4 KiB frame an entry points at (a table, or a 4K page)."""
    return (entry & regs.ADDR_MASK_4K) >> regs.PPGTT_PTE_SHIFT


def normalize_roots(levels: int, roots: Roots) -> Roots:
    """Roots as they identify a PPGTT: a 4-level table only uses ``pdp[0]``."""
    if levels == 4:
        return (int(roots[0]), 0, 0, 0)
    return (int(roots[0]), int(roots[1]), int(roots[2]), int(roots[3]))


def split_2m_leaf_flags(entry: int) -> int:
    """Flags of the 4K entries a 2M guest entry is split into (gtt.c
    ``split_2MB_gtt_entry``): the guest entry with only its address replaced,
    bit 7 (PS in the 2M entry) taking the PAT bit from bit 12, where a 4K PTE
    keeps it; bits 63:46 stay as the guest wrote them."""
    low = entry & (regs.PPGTT_ENTRY_FLAGS | regs.PPGTT_HIGH_BITS) & ~regs.PPGTT_PS
    return low | ((entry & regs.PPGTT_PAT_HUGE) >> regs.PPGTT_PAT_HUGE_TO_4K_SHIFT)


def addressing_mode(descriptor: int) -> int:
    """The addressing mode field (bits 4:3) of a context descriptor."""
    return (descriptor >> regs.GEN8_CTX_ADDRESSING_MODE_SHIFT) & regs.GEN8_CTX_ADDRESSING_MODE_MASK


#: PPGTT levels of each addressing mode GVT-g runs (scheduler.c ``prepare_mm``).
LEVELS_BY_ADDRESSING_MODE = {regs.LEGACY_32B_CONTEXT: 3, regs.LEGACY_64B_CONTEXT: 4}


def levels_for_addressing_mode(mode: int) -> int:
    """3 for legacy 32-bit contexts (mode 1), 4 for legacy 64-bit ones (mode 3).

    :raises AddressingModeError: any other mode (the advanced/SVM modes), which
        upstream refuses ("Advanced Context mode(SVM) is not supported").
    """
    levels = LEVELS_BY_ADDRESSING_MODE.get(mode)
    if levels is None:
        raise AddressingModeError(mode)
    return levels
