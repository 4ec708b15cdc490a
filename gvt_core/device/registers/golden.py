"""The golden MMIO state: what every register reads right after a vGPU is created.

The kernel snapshots the host's registers at boot (firmware.c). The simulated
host has no boot history, so the snapshot is synthesised here from the reset
values a GEN8 part shows once its firmware has run: interrupt banks masked,
the CSB write pointer at 7 (facts 7.2), display power wells up and the
display PLL locked, the PAT programmed as the host driver leaves it. Every
register not listed reads 0.

The snapshot is built once per process. A vGPU starts from (and a DMLR
returns to) :data:`VGPU_MMIO`, the snapshot with what upstream changes for
every vGPU (``intel_vgpu_reset_mmio``: GT idle, GuC "in reset"; the strap of
the virtual DisplayPort every BDW vGPU has on port B, ``display.c``); a GT
reset copies only the GT part of the host snapshot (facts 2.3).

The fuses describe a Broadwell GT2 as i915 reads them while probing
(``bdw_sseu_info_init``): one slice, three subslices of eight EUs, none
disabled, so a guest computes 24 EUs.
"""

from __future__ import annotations

from gvt_core.hw import regs

#: registers below this offset are the render/GT range a GT reset restores (facts 2.3).
GT_RESET_END = regs.GEN8_MASTER_IRQ

#: host PAT as the host i915 programs it (8 one-byte entries, WB/WC/WT/UC mixes).
GEN8_PPAT_DEFAULT = 0x0406_0003_0407_0507


def golden_values() -> dict[int, int]:
    """Non-zero reset values by dword offset."""
    values: dict[int, int] = {}
    for base in regs.ENGINE_BASES.values():
        values[base + regs.RING_CONTEXT_STATUS_PTR] = regs.CSB_PTR_RESET
        values[base + regs.RING_HWSTAM] = 0xFFFF_FFFF
        values[base + regs.RING_IMR] = 0xFFFF_FFFF
    for bank in range(regs.GEN8_GT_BANKS):
        values[regs.GEN8_GT_ISR_BASE + 0x10 * bank + regs.IRQ_IMR] = 0xFFFF_FFFF
    for pipe in range(regs.NUM_PIPES):
        values[regs.GEN8_DE_PIPE_ISR_BASE + 0x10 * pipe + regs.IRQ_IMR] = 0xFFFF_FFFF
    values[regs.GEN8_DE_PORT_IMR] = 0xFFFF_FFFF
    values[regs.GEN8_DE_MISC_ISR + regs.IRQ_IMR] = 0xFFFF_FFFF
    values[regs.GEN8_PCU_IMR] = 0xFFFF_FFFF
    values[regs.SDEIMR] = 0xFFFF_FFFF
    ctl = regs.HSW_PWR_WELL_ENABLE_REQUEST | regs.HSW_PWR_WELL_STATE_ENABLED
    values[regs.HSW_PWR_WELL_CTL1] = ctl
    values[regs.HSW_PWR_WELL_CTL2] = ctl
    values[regs.LCPLL_CTL] = regs.LCPLL_PLL_LOCK
    values[regs.GEN8_PRIVATE_PAT_LO] = GEN8_PPAT_DEFAULT & 0xFFFF_FFFF
    values[regs.GEN8_PRIVATE_PAT_HI] = GEN8_PPAT_DEFAULT >> 32
    values[regs.GEN6_RP_STATE_CAP] = regs.GEN6_RP_STATE_CAP_RESET
    values[regs.GEN8_FUSE2] = regs.BDW_GT2_SLICE_MASK << regs.GEN8_F2_S_ENA_SHIFT
    values[regs.SFUSE_STRAP] = regs.SFUSE_STRAP_FUSE_LOCK
    for port in range(5):  # no host port driven: every DDI buffer idle
        values[regs.DDI_BUF_CTL_A + regs.DDI_PORT_STRIDE * port] = regs.DDI_BUF_IS_IDLE
    return values


def vgpu_values() -> dict[int, int]:
    """What every vGPU's registers hold after creation or a DMLR, where they differ
    from the host snapshot."""
    values = golden_values()
    values[regs.GEN6_GT_THREAD_STATUS_REG] = 0
    values[regs.GEN6_GT_CORE_STATUS] = 0  # C0
    values[regs.GUC_STATUS] = values.get(regs.GUC_STATUS, 0) | regs.GS_MIA_IN_RESET
    values[regs.SFUSE_STRAP] |= VIRTUAL_PORT_STRAP[regs.VGPU_DISPLAY_PORT_BDW]
    return values


#: the SFUSE_STRAP bit announcing a DisplayPort on each DDI port (port A has none).
VIRTUAL_PORT_STRAP = {
    regs.PORT_B: regs.SFUSE_STRAP_DDIB_DETECTED,
    regs.PORT_C: regs.SFUSE_STRAP_DDIC_DETECTED,
    regs.PORT_D: regs.SFUSE_STRAP_DDID_DETECTED,
}


def _build(values: dict[int, int]) -> bytes:
    image = bytearray(regs.MMIO_SIZE)
    for offset, value in values.items():
        image[offset : offset + 4] = value.to_bytes(4, "little")
    return bytes(image)


#: the 2 MiB golden register image of the host (immutable; copy it).
GOLDEN_MMIO: bytes = _build(golden_values())
#: what a vGPU's registers start from and return to at a DMLR.
VGPU_MMIO: bytes = _build(vgpu_values())
