"""Virtual interrupts of one vGPU (facts 6, with the corrections of 0.1 #7).

An event (a workload finished, a vblank, a flip, a hotplug) maps to one bit
of one interrupt bank. Raising it sets the bit in the bank's virtual IIR
unless the guest masked it in IMR, then runs upstream's pending check
(``gen8_check_pending_irq``): nothing while the guest has the master enable
clear; otherwise every bank with IIR & IER pending sets its summary bits in
the master register, and if any summary bit is set one MSI goes out through
the backend, decoded from the vGPU's virtual MSI capability with the
``mpt.h`` rules (facts 1.3).

Guest writes follow ``interrupt.c``: IMR stores and runs the pending check;
IER stores, recomputes that bank's summary bits (set *or* clear, even with
the master enable off) and runs the pending check; IIR is write-1-to-clear
and recomputes the bank's summary bits but never injects; the master register
takes only its enable bit and runs the pending check. Only bits 15:0 of GT2
(PM) and GT3 (VECS) feed their master bits; GT0/GT1 feed one master bit per
16-bit half.

All register state lives in the vreg; this object only holds counters.
Callers (register handlers, the execlist and display emulation) hold the
vGPU lock, as for every other vreg access.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import attrs

from gvt_core.errors import GvtError
from gvt_core.hw import regs

log = logging.getLogger(__name__)

#: MSI control bits other than enable: multi-message / 64-bit formats (facts 1.3).
MSI_UNSUPPORTED_FORMAT = 0xFFFE


@enum.unique
class IrqBank(enum.Enum):
    """An interrupt register bank: (ISR offset, master summary bit fed by its low
    16 bits, master summary bit fed by its high 16 bits or 0 when they feed none)
    (interrupt.c ``gen8_irq_map``)."""

    GT0 = (regs.GEN8_GT_ISR_BASE, regs.GEN8_GT_RCS_IRQ, regs.GEN8_GT_BCS_IRQ)
    GT1 = (regs.GEN8_GT_ISR_BASE + 0x10, regs.GEN8_GT_VCS1_IRQ, regs.GEN8_GT_VCS2_IRQ)
    GT2 = (regs.GEN8_GT_ISR_BASE + 0x20, regs.GEN8_GT_PM_IRQ, 0)
    GT3 = (regs.GEN8_GT_ISR_BASE + 0x30, regs.GEN8_GT_VECS_IRQ, 0)
    DE_PIPE_A = (regs.GEN8_DE_PIPE_ISR_BASE, regs.GEN8_DE_PIPE_A_IRQ, regs.GEN8_DE_PIPE_A_IRQ)
    DE_PIPE_B = (regs.GEN8_DE_PIPE_ISR_BASE + 0x10, regs.GEN8_DE_PIPE_A_IRQ << 1,
                 regs.GEN8_DE_PIPE_A_IRQ << 1)
    DE_PIPE_C = (regs.GEN8_DE_PIPE_ISR_BASE + 0x20, regs.GEN8_DE_PIPE_A_IRQ << 2,
                 regs.GEN8_DE_PIPE_A_IRQ << 2)
    DE_PORT = (regs.GEN8_DE_PORT_ISR, regs.GEN8_DE_PORT_IRQ, regs.GEN8_DE_PORT_IRQ)
    DE_MISC = (regs.GEN8_DE_MISC_ISR, regs.GEN8_DE_MISC_IRQ, regs.GEN8_DE_MISC_IRQ)
    PCU = (regs.GEN8_PCU_ISR, regs.GEN8_PCU_IRQ, regs.GEN8_PCU_IRQ)
    PCH = (regs.SDEISR, regs.GEN8_DE_PCH_IRQ, regs.GEN8_DE_PCH_IRQ)

    @property
    def isr(self) -> int:
        return self.value[0]

    @property
    def imr(self) -> int:
        return self.value[0] + regs.IRQ_IMR

    @property
    def iir(self) -> int:
        return self.value[0] + regs.IRQ_IIR

    @property
    def ier(self) -> int:
        return self.value[0] + regs.IRQ_IER


_PIPES = (IrqBank.DE_PIPE_A, IrqBank.DE_PIPE_B, IrqBank.DE_PIPE_C)
_HI = 16  # the second engine of a GT bank uses bits 31:16


@enum.unique
class IrqEvent(enum.Enum):
    """Virtual events and their (bank, bit) (facts 6.2); names as the kernel's."""

    RCS_MI_USER_INTERRUPT = (IrqBank.GT0, regs.GT_RENDER_USER_INTERRUPT)
    RCS_PIPE_CONTROL = (IrqBank.GT0, regs.GT_RENDER_PIPECTL_NOTIFY)
    RCS_AS_CONTEXT_SWITCH = (IrqBank.GT0, regs.GT_CONTEXT_SWITCH_INTERRUPT)
    BCS_MI_USER_INTERRUPT = (IrqBank.GT0, regs.GT_RENDER_USER_INTERRUPT << _HI)
    BCS_MI_FLUSH_DW = (IrqBank.GT0, regs.GT_FLUSH_DW_NOTIFY << _HI)
    BCS_AS_CONTEXT_SWITCH = (IrqBank.GT0, regs.GT_CONTEXT_SWITCH_INTERRUPT << _HI)
    VCS_MI_USER_INTERRUPT = (IrqBank.GT1, regs.GT_RENDER_USER_INTERRUPT)
    VCS_MI_FLUSH_DW = (IrqBank.GT1, regs.GT_FLUSH_DW_NOTIFY)
    VCS_AS_CONTEXT_SWITCH = (IrqBank.GT1, regs.GT_CONTEXT_SWITCH_INTERRUPT)
    VCS2_MI_USER_INTERRUPT = (IrqBank.GT1, regs.GT_RENDER_USER_INTERRUPT << _HI)
    VCS2_MI_FLUSH_DW = (IrqBank.GT1, regs.GT_FLUSH_DW_NOTIFY << _HI)
    VCS2_AS_CONTEXT_SWITCH = (IrqBank.GT1, regs.GT_CONTEXT_SWITCH_INTERRUPT << _HI)
    VECS_MI_USER_INTERRUPT = (IrqBank.GT3, regs.GT_RENDER_USER_INTERRUPT)
    VECS_MI_FLUSH_DW = (IrqBank.GT3, regs.GT_FLUSH_DW_NOTIFY)
    VECS_AS_CONTEXT_SWITCH = (IrqBank.GT3, regs.GT_CONTEXT_SWITCH_INTERRUPT)
    PIPE_A_VBLANK = (IrqBank.DE_PIPE_A, regs.GEN8_PIPE_VBLANK)
    PIPE_B_VBLANK = (IrqBank.DE_PIPE_B, regs.GEN8_PIPE_VBLANK)
    PIPE_C_VBLANK = (IrqBank.DE_PIPE_C, regs.GEN8_PIPE_VBLANK)
    PRIMARY_A_FLIP_DONE = (IrqBank.DE_PIPE_A, regs.GEN8_PIPE_PRIMARY_FLIP_DONE)
    PRIMARY_B_FLIP_DONE = (IrqBank.DE_PIPE_B, regs.GEN8_PIPE_PRIMARY_FLIP_DONE)
    PRIMARY_C_FLIP_DONE = (IrqBank.DE_PIPE_C, regs.GEN8_PIPE_PRIMARY_FLIP_DONE)
    SPRITE_A_FLIP_DONE = (IrqBank.DE_PIPE_A, regs.GEN8_PIPE_SPRITE_FLIP_DONE)
    SPRITE_B_FLIP_DONE = (IrqBank.DE_PIPE_B, regs.GEN8_PIPE_SPRITE_FLIP_DONE)
    SPRITE_C_FLIP_DONE = (IrqBank.DE_PIPE_C, regs.GEN8_PIPE_SPRITE_FLIP_DONE)
    AUX_CHANNEL_A = (IrqBank.DE_PORT, regs.GEN8_AUX_CHANNEL_A)
    DP_A_HOTPLUG = (IrqBank.DE_PORT, regs.GEN8_PORT_DP_A_HOTPLUG)
    GSE = (IrqBank.DE_MISC, regs.GEN8_DE_MISC_GSE)
    GMBUS = (IrqBank.PCH, regs.SDE_GMBUS_CPT)
    CRT_HOTPLUG = (IrqBank.PCH, regs.SDE_CRT_HOTPLUG_CPT)
    DP_B_HOTPLUG = (IrqBank.PCH, regs.SDE_PORTB_HOTPLUG_CPT)
    DP_C_HOTPLUG = (IrqBank.PCH, regs.SDE_PORTC_HOTPLUG_CPT)
    DP_D_HOTPLUG = (IrqBank.PCH, regs.SDE_PORTD_HOTPLUG_CPT)
    AUX_CHANNEL_B = (IrqBank.PCH, regs.SDE_AUX_B_CPT)
    AUX_CHANNEL_C = (IrqBank.PCH, regs.SDE_AUX_C_CPT)
    AUX_CHANNEL_D = (IrqBank.PCH, regs.SDE_AUX_D_CPT)
    PCU_THERMAL = (IrqBank.PCU, regs.GEN8_PCU_THERMAL)
    PCU_PCODE2DRIVER_MAILBOX = (IrqBank.PCU, regs.GEN8_PCU_MAILBOX)

    @property
    def bank(self) -> IrqBank:
        return self.value[0]

    @property
    def bit(self) -> int:
        return self.value[1]

    @staticmethod
    def vblank(pipe: int) -> IrqEvent:
        return _VBLANK[pipe]

    @staticmethod
    def primary_flip_done(pipe: int) -> IrqEvent:
        return _PRIMARY_FLIP[pipe]

    @staticmethod
    def sprite_flip_done(pipe: int) -> IrqEvent:
        return _SPRITE_FLIP[pipe]


_VBLANK = (IrqEvent.PIPE_A_VBLANK, IrqEvent.PIPE_B_VBLANK, IrqEvent.PIPE_C_VBLANK)
_PRIMARY_FLIP = (IrqEvent.PRIMARY_A_FLIP_DONE, IrqEvent.PRIMARY_B_FLIP_DONE,
                 IrqEvent.PRIMARY_C_FLIP_DONE)
_SPRITE_FLIP = (IrqEvent.SPRITE_A_FLIP_DONE, IrqEvent.SPRITE_B_FLIP_DONE,
                IrqEvent.SPRITE_C_FLIP_DONE)

#: per bank: (IIR dword, IER dword, summary bit of the low half, of the high half,
#: every summary bit the bank feeds).
_BANK_WORDS = tuple(
    (b.iir >> 2, b.ier >> 2, b.value[1], b.value[2], b.value[1] | b.value[2]) for b in IrqBank
)
#: IER or IIR register offset -> that bank's entry of _BANK_WORDS.
_BANK_BY_REG = {
    off: words for b, words in zip(IrqBank, _BANK_WORDS, strict=True) for off in (b.ier, b.iir)
}
_MASTER = regs.GEN8_MASTER_IRQ >> 2
_CONTROL = regs.GEN8_MASTER_IRQ_CONTROL
_SUMMARY = 0xFFFF_FFFF & ~_CONTROL


@attrs.define(eq=False)
class IrqCounters:
    events: int = 0
    #: events dropped because the guest masked them in IMR.
    masked: int = 0
    injected: int = 0
    #: MSIs not sent because the guest had MSI disabled.
    msi_disabled: int = 0
    #: "only support one MSI format": control bits other than enable were set.
    msi_format_errors: int = 0
    #: the backend failed to deliver.
    inject_failures: int = 0


class VirtualIrq:
    """Interrupt state machine of one vGPU (its registers live in ``vgpu.mmio``)."""

    def __init__(self, vgpu: Any) -> None:
        self.vgpu = vgpu
        self.counters = IrqCounters()

    def reset(self) -> None:
        """The banks are vreg state and come back with the MMIO reset; counters restart."""
        self.counters = IrqCounters()

    def raise_event(self, event: IrqEvent) -> None:
        """``intel_vgpu_trigger_virtual_event``: IIR unless masked, then the pending check."""
        v32 = self.vgpu.mmio.v32
        bank, bit = event.value
        self.counters.events += 1
        if v32[bank.imr >> 2] & bit:
            self.counters.masked += 1
        else:
            v32[bank.iir >> 2] |= bit
        self.check_pending()

    @staticmethod
    def _update_upstream(v32: Any, words: tuple[int, int, int, int, int]) -> None:
        """``update_upstream_irq``: set or clear the master bits one bank feeds."""
        iir, ier, lo, hi, bits = words
        active = v32[iir] & v32[ier]
        on = (lo if active & 0xFFFF else 0) | (hi if active >> 16 else 0)
        v32[_MASTER] = (v32[_MASTER] & ~bits | on) & 0xFFFF_FFFF

    def pending(self) -> int:
        """The master summary bits the banks currently assert."""
        v32 = self.vgpu.mmio.v32
        summary = 0
        for iir, ier, lo, hi, _ in _BANK_WORDS:
            active = v32[iir] & v32[ier]
            if active & 0xFFFF:
                summary |= lo
            if active >> 16:
                summary |= hi
        return summary

    def check_pending(self) -> None:
        """``gen8_check_pending_irq``: nothing while the master enable is clear; else
        every bank with something pending sets its summary bits, and any summary
        bit set sends one MSI."""
        v32 = self.vgpu.mmio.v32
        if not v32[_MASTER] & _CONTROL:
            return
        for words in _BANK_WORDS:
            if v32[words[0]] & v32[words[1]]:
                self._update_upstream(v32, words)
        if v32[_MASTER] & _SUMMARY:
            self.inject_msi()

    def ier_written(self, offset: int) -> None:
        """The guest wrote an IER: the bank's summary bits follow, then the pending check."""
        self._update_upstream(self.vgpu.mmio.v32, _BANK_BY_REG[offset])
        self.check_pending()

    def iir_written(self, offset: int) -> None:
        """The guest cleared IIR bits: the bank's summary bits follow; no MSI."""
        self._update_upstream(self.vgpu.mmio.v32, _BANK_BY_REG[offset])

    def write_master(self, value: int) -> None:
        """The guest sets/clears the control bit; summary bits are the device's."""
        v32 = self.vgpu.mmio.v32
        v32[_MASTER] = (value & _CONTROL) | (v32[_MASTER] & _SUMMARY)
        self.check_pending()

    def inject_msi(self) -> None:
        """``intel_gvt_hypervisor_inject_msi``: decode the virtual MSI capability."""
        msi = self.vgpu.cfg.msi()
        if not msi.enabled:
            self.counters.msi_disabled += 1
            return
        if msi.control & MSI_UNSUPPORTED_FORMAT:
            self.counters.msi_format_errors += 1
            log.warning("vGPU %d: only support one MSI format (control %#x)",
                        self.vgpu.id, msi.control)
            return
        try:
            self.vgpu.mpt.inject_msi(self.vgpu.handle, msi.address, msi.data)
        except GvtError as exc:
            self.counters.inject_failures += 1
            log.warning("vGPU %d: MSI injection failed: %s", self.vgpu.id, exc)
            return
        self.counters.injected += 1
