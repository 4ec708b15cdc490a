"""MMIO context switch: the per-engine registers that follow the engine's owner (facts 7.5).

Some engine registers are not part of the hardware context image, so when
an engine passes from one owner to another (host, vGPU A, vGPU B) the
outgoing owner's values are saved and the incoming owner's loaded, as
upstream's ``switch_mmio`` does with ``gen8_engine_mmio_list``: a vGPU's
values are saved into and loaded from its virtual registers (so what a
guest wrote with MMIO or LRI is what its engine runs with, and what it
reads back), the host's into the list.

Registers written during an owner's tenure that are *not* in the list
(anything a guest reached with MI_LOAD_REGISTER_*) go back to the host's
values at the owner change: on real hardware the command scanner's
whitelist keeps a guest from writing those at all; here the switch also
makes sure nothing a guest writes survives into another vGPU's time.
RING_HWS_PGA is switched too, so indexed stores (MI_STORE_DATA_INDEX,
post-sync writes in index mode) land in the running vGPU's status page.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from gvt_core.hw import regs
from gvt_core.hw.engine.engine import Engine


@attrs.frozen
class EngineMmio:
    """One switched register (``struct engine_mmio``)."""

    engine: int
    offset: int
    #: masked-write mask (bits 15:0 the mask covers; 0 for a plain register).
    mask: int
    #: the register is also in the context image (restored by it for non-inhibit contexts).
    in_context: bool
    name: str


def _ring(engine: int, rel: int, mask: int, name: str) -> EngineMmio:
    base = regs.ENGINE_BASES[{v: k for k, v in regs.ENGINE_IDS.items()}[engine]]
    return EngineMmio(engine, base + rel, mask, False, name)


_RCS, _BCS = regs.ENGINE_RCS, regs.ENGINE_BCS
RING_EXCC = 0x28
GEN9_CTX_PREEMPT_REG = 0x2248
RING_FORCE_TO_NONPRIV = 0x4D0

#: upstream's gen8 list (mmio_context.c), plus RING_HWS_PGA of every engine.
GEN8_ENGINE_MMIO: tuple[EngineMmio, ...] = (
    _ring(_RCS, regs.RING_MODE_GEN7, 0xFFFF, "GFX_MODE_GEN7"),
    EngineMmio(_RCS, GEN9_CTX_PREEMPT_REG, 0, False, "GEN9_CTX_PREEMPT_REG"),
    _ring(_RCS, regs.RING_HWSTAM, 0, "HWSTAM"),
    EngineMmio(_RCS, regs.RENDER_RING_BASE + regs.RING_INSTPM, 0xFFFF, True, "INSTPM"),
    *(EngineMmio(_RCS, regs.RENDER_RING_BASE + RING_FORCE_TO_NONPRIV + 4 * i, 0, False,
                 f"RING_FORCE_TO_NONPRIV({i})") for i in range(12)),
    EngineMmio(_RCS, 0x7004, 0xFFFF, True, "CACHE_MODE_1"),
    EngineMmio(_RCS, 0x7008, 0xFFFF, True, "GEN7_GT_MODE"),
    EngineMmio(_RCS, 0x7000, 0xFFFF, True, "CACHE_MODE_0_GEN7"),
    EngineMmio(_RCS, 0x7010, 0xFFFF, True, "GEN7_COMMON_SLICE_CHICKEN1"),
    EngineMmio(_RCS, 0x7300, 0xFFFF, True, "HDC_CHICKEN0"),
    EngineMmio(_RCS, 0x83A4, 0xFFFF, True, "VF_GUARDBAND"),
    _ring(_BCS, regs.RING_MODE_GEN7, 0xFFFF, "RING_GFX_MODE(BLT)"),
    _ring(_BCS, regs.RING_MI_MODE, 0xFFFF, "RING_MI_MODE(BLT)"),
    _ring(_BCS, regs.RING_INSTPM, 0xFFFF, "RING_INSTPM(BLT)"),
    _ring(_BCS, regs.RING_HWSTAM, 0, "RING_HWSTAM(BLT)"),
    _ring(_BCS, RING_EXCC, 0, "RING_EXCC(BLT)"),
    *(_ring(e, regs.RING_HWS_PGA, 0, f"RING_HWS_PGA({n})") for n, e in regs.ENGINE_IDS.items()),
)

#: the list by engine.
BY_ENGINE: dict[int, tuple[EngineMmio, ...]] = {
    e: tuple(m for m in GEN8_ENGINE_MMIO if m.engine == e) for e in regs.ENGINE_IDS.values()
}


@attrs.define(eq=False)
class EngineOwnership:
    """Who owns one engine's registers now, and the host's values while a vGPU does."""

    engine: Engine
    #: the vGPU owning the engine, or None for the host.
    owner: Any = None
    #: the host's register file when it last gave the engine away.
    host_regs: np.ndarray | None = None
    switches: int = 0

    def switch_to(self, nxt: Any) -> None:
        """``intel_gvt_switch_mmio(owner, nxt)``; ``nxt`` None hands the engine back to the host.

        The caller holds the lock of ``nxt`` (a vGPU) and of the outgoing vGPU,
        whose virtual registers receive its values.
        """
        pre = self.owner
        if pre is nxt:
            return
        eng = self.engine
        table = BY_ENGINE[eng.id]
        if pre is None:
            self.host_regs = eng.snapshot_registers()
        elif not pre.destroyed:
            for m in table:
                value = eng.read_reg(m.offset)
                if m.mask:
                    value &= ~(m.mask << regs.MASKED_WRITE_SHIFT) & 0xFFFF_FFFF
                pre.mmio.set32(m.offset, value)
        host = self.host_regs
        assert host is not None
        eng.restore_registers(host)
        if nxt is not None:
            for m in table:
                value = nxt.mmio.get32(m.offset)
                if m.mask:
                    value |= m.mask << regs.MASKED_WRITE_SHIFT
                eng.write_reg(m.offset, value)
        else:
            self.host_regs = None
        self.owner = nxt
        self.switches += 1

    def forget(self, vgpu: Any) -> None:
        """``vgpu`` is going away: the engine goes back to the host without saving."""
        if self.owner is vgpu and self.host_regs is not None:
            self.engine.restore_registers(self.host_regs)
            self.host_regs = None
            self.owner = None
