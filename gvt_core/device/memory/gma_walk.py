"""Graphics-address walks of a PPGTT (facts 4.8).

:func:`gma_to_gpa` walks the *guest's* tables (reading guest memory through
the backend), as the command parser and context handling need it;
:func:`gma_to_dma` walks the *shadow* tables through the host's system
memory, exactly as the GPU does with the roots a shadow context carries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from gvt_core.device.memory.ppgtt_entry import GM_SIZE, index
from gvt_core.errors import DmaFault, GuestMemoryError, InvalidGfnError, VgpuStateError
from gvt_core.hw import regs

if TYPE_CHECKING:
    from gvt_core.device.memory.ppgtt import ShadowMm

_P = regs.PPGTT_PRESENT
_PS = regs.PPGTT_PS
_IPS = regs.PPGTT_IPS_64K
_A4K = regs.ADDR_MASK_4K
_STRIDE_MASK = ~(regs.PPGTT_64K_STRIDE - 1)


@attrs.frozen
class GuestWalk:
    """Where a guest walk ended."""

    #: guest-physical address, or None when an entry was not present or unreadable.
    gpa: int | None
    #: size of the page mapped (4K, 64K, 2M or 1G); 0 when the walk failed.
    page_size: int
    #: guest frames of the tables walked through, top first.
    tables: tuple[int, ...]


def _range_ok(levels: int, gma: int) -> None:
    if not 0 <= gma < GM_SIZE[levels]:
        raise ValueError(
            f"graphics address {gma:#x} is outside the {GM_SIZE[levels]:#x}-byte address "
            f"space of a {levels}-level PPGTT"
        )


def walk_guest(mm: ShadowMm, gma: int) -> GuestWalk:
    """Walk ``mm``'s guest tables for ``gma``, honouring 1G/2M PS, and 64K IPS where
    the host enables it (never on Broadwell)."""
    levels = mm.levels
    _range_ok(levels, gma)
    env = mm.manager.env
    if levels == 4:
        root, level = mm.guest_roots[0], 4
    else:
        root, level = mm.guest_roots[(gma >> regs.PPGTT_PDPE_SHIFT) & regs.PPGTT_L3_PDPE_MASK], 2
    if not root:
        return GuestWalk(None, 0, ())
    table = root & _A4K
    tables: list[int] = []
    ips = False
    while True:
        tables.append(table >> regs.PPGTT_PTE_SHIFT)
        idx = index(gma, level)
        if ips:
            idx &= _STRIDE_MASK
        try:
            raw = env.mpt.read_gpa(env.handle, table + idx * regs.GTT_ENTRY_SIZE, 8)
        except (GuestMemoryError, InvalidGfnError):
            return GuestWalk(None, 0, tuple(tables))
        e = int.from_bytes(raw, "little")
        if not e & _P:
            return GuestWalk(None, 0, tuple(tables))
        if level == 3 and e & _PS:
            size = regs.PAGE_SIZE_1G
            return GuestWalk((e & regs.ADDR_MASK_1G) | (gma & (size - 1)), size, tuple(tables))
        if level == 2:
            if e & _PS:
                size = regs.PAGE_SIZE_2M
                return GuestWalk((e & regs.ADDR_MASK_2M) | (gma & (size - 1)), size,
                                 tuple(tables))
            ips = bool(e & _IPS) and mm.manager.ips_64k
        if level == 1:
            if ips:
                size = regs.PAGE_SIZE_64K
                return GuestWalk((e & regs.ADDR_MASK_64K) | (gma & (size - 1)), size,
                                 tuple(tables))
            return GuestWalk((e & _A4K) | (gma & (regs.GTT_PAGE_SIZE - 1)), regs.GTT_PAGE_SIZE,
                             tuple(tables))
        table = e & _A4K
        level -= 1


def gma_to_gpa(mm: ShadowMm, gma: int) -> int | None:
    """Guest-physical address of ``gma`` through the guest's tables; None when the
    walk meets a non-present entry or a table outside guest RAM."""
    return walk_guest(mm, gma).gpa


def gma_to_dma(mm: ShadowMm, gma: int) -> int:
    """Bus address the GPU reaches for ``gma`` through ``mm``'s shadow tables.

    Where the guest walk fails (or the entry was refused) this lands in the
    vGPU's scratch tree, never on an unmapped address.

    :raises VgpuStateError: ``mm`` is not shadowed (reclaimed or destroyed).
    :raises DmaFault: a shadow entry is not present (a shadowing bug).
    """
    if not mm.shadowed:
        raise VgpuStateError("the shadow PPGTT is not shadowed now; pin it before walking it")
    levels = mm.levels
    _range_ok(levels, gma)
    sysmem = mm.manager.env.sysmem
    if levels == 4:
        table, level = mm.shadow_roots[0], 4
    else:
        table, level = mm.shadow_roots[(gma >> regs.PPGTT_PDPE_SHIFT) & regs.PPGTT_L3_PDPE_MASK], 2
    while True:
        addr = table + index(gma, level) * regs.GTT_ENTRY_SIZE
        e = int.from_bytes(sysmem.read(addr, 8), "little")
        if not e & _P:
            raise DmaFault(addr, 8, who=f"shadow PPGTT walk (non-present level-{level} entry)")
        if level == 3 and e & _PS:
            return (e & regs.ADDR_MASK_1G) | (gma & (regs.PAGE_SIZE_1G - 1))
        if level == 2 and e & _PS:
            return (e & regs.ADDR_MASK_2M) | (gma & (regs.PAGE_SIZE_2M - 1))
        if level == 1:
            return (e & _A4K) | (gma & (regs.GTT_PAGE_SIZE - 1))
        table = e & _A4K
        level -= 1
