"""Virtual interrupts (facts 6): events -> IIR/IMR/IER/master -> MSI through the backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gvt_core.device.interrupt import IrqBank, IrqEvent
from gvt_core.device.registers.cfg_space import MsiConfig
from gvt_core.errors import BackendError
from gvt_core.hw import regs
from gvt_core.mpt.ops import Msi

Guest = Any  # tests/device/conftest.py's Guest
MASTER = regs.GEN8_MASTER_IRQ
ENABLE = regs.GEN8_MASTER_IRQ_CONTROL
GT0 = regs.GEN8_GT_ISR_BASE
ADDR, DATA = 0xFEE0_1000, 0x4062


@pytest.fixture
def guest(make_guest: Callable[..., Guest]) -> Guest:
    g = make_guest()
    g.enable_msi(ADDR, DATA)
    return g


def _unmask(guest: Guest, bank: IrqBank, bits: int) -> None:
    guest.w(bank.imr, ~bits & 0xFFFF_FFFF)
    guest.w(bank.ier, bits)


def _no_msi(guest: Guest) -> bool:
    return guest.port.wait_msi(0) is None


def test_event_table_follows_the_hardware() -> None:
    table = {e.name: (e.bank, e.bit) for e in IrqEvent}
    assert table["RCS_MI_USER_INTERRUPT"] == (IrqBank.GT0, 1 << 0)
    assert table["RCS_PIPE_CONTROL"] == (IrqBank.GT0, 1 << 4)
    assert table["RCS_AS_CONTEXT_SWITCH"] == (IrqBank.GT0, 1 << 8)
    assert table["BCS_MI_USER_INTERRUPT"] == (IrqBank.GT0, 1 << 16)
    assert table["BCS_MI_FLUSH_DW"] == (IrqBank.GT0, 1 << 20)
    assert table["BCS_AS_CONTEXT_SWITCH"] == (IrqBank.GT0, 1 << 24)
    assert table["VCS_AS_CONTEXT_SWITCH"] == (IrqBank.GT1, 1 << 8)
    assert table["VCS2_MI_USER_INTERRUPT"] == (IrqBank.GT1, 1 << 16)
    assert table["VECS_MI_FLUSH_DW"] == (IrqBank.GT3, 1 << 4)
    assert table["PIPE_B_VBLANK"] == (IrqBank.DE_PIPE_B, 1 << 0)
    assert table["PRIMARY_C_FLIP_DONE"] == (IrqBank.DE_PIPE_C, 1 << 4)
    assert table["DP_A_HOTPLUG"] == (IrqBank.DE_PORT, 1 << 3)
    assert table["DP_D_HOTPLUG"] == (IrqBank.PCH, 1 << 23)
    assert len(set(table.values())) == len(table)
    assert IrqBank.PCH.iir == 0xC4008 and IrqBank.DE_MISC.ier == 0x4446C


def test_masked_event_sets_nothing(guest: Guest) -> None:
    guest.w(MASTER, ENABLE)
    guest.vgpu.irq.raise_event(IrqEvent.RCS_MI_USER_INTERRUPT)
    assert guest.r(GT0 + regs.IRQ_IIR) == 0
    assert guest.r(MASTER) == ENABLE
    assert _no_msi(guest)
    assert guest.vgpu.irq.counters.masked == 1


def test_event_reaches_the_guest_as_its_msi(guest: Guest) -> None:
    _unmask(guest, IrqBank.GT0, 0xFFFF_FFFF)
    guest.w(MASTER, ENABLE)
    assert _no_msi(guest)
    guest.vgpu.irq.raise_event(IrqEvent.RCS_AS_CONTEXT_SWITCH)
    assert guest.port.wait_msi(1.0) == Msi(ADDR, DATA)
    assert guest.r(GT0 + regs.IRQ_IIR) == 1 << 8
    assert guest.r(MASTER) == ENABLE | regs.GEN8_GT_RCS_IRQ
    assert _no_msi(guest)


def test_the_i915_handler_sequence(guest: Guest) -> None:
    """Master off, read and clear IIR, master on: nothing pending -> no second MSI."""
    _unmask(guest, IrqBank.GT0, 0xFFFF_FFFF)
    guest.w(MASTER, ENABLE)
    guest.vgpu.irq.raise_event(IrqEvent.BCS_MI_USER_INTERRUPT)
    assert guest.port.wait_msi(1.0) is not None
    guest.w(MASTER, 0)
    assert guest.r(MASTER) == regs.GEN8_GT_BCS_IRQ
    iir = guest.r(GT0 + regs.IRQ_IIR)
    assert iir == 1 << 16
    guest.vgpu.irq.raise_event(IrqEvent.BCS_AS_CONTEXT_SWITCH)  # arrives while off
    assert _no_msi(guest)
    guest.w(GT0 + regs.IRQ_IIR, iir)  # write-1-to-clear only what it saw
    assert guest.r(GT0 + regs.IRQ_IIR) == 1 << 24
    guest.w(MASTER, ENABLE)  # still pending: the level fires again
    assert guest.port.wait_msi(1.0) == Msi(ADDR, DATA)
    guest.w(MASTER, 0)
    guest.w(GT0 + regs.IRQ_IIR, 0xFFFF_FFFF)
    guest.w(MASTER, ENABLE)
    assert guest.r(MASTER) == ENABLE
    assert _no_msi(guest)


def test_ier_gates_the_summary_and_unmasking_later_fires(guest: Guest) -> None:
    guest.w(IrqBank.GT1.imr, 0)
    guest.w(MASTER, ENABLE)
    guest.vgpu.irq.raise_event(IrqEvent.VCS2_AS_CONTEXT_SWITCH)
    assert guest.r(IrqBank.GT1.iir) == 1 << 24
    assert guest.r(MASTER) == ENABLE
    assert _no_msi(guest)
    guest.w(IrqBank.GT1.ier, 1 << 24)
    assert guest.port.wait_msi(1.0) is not None
    assert guest.r(MASTER) == ENABLE | regs.GEN8_GT_VCS2_IRQ


def test_summary_bits_are_read_only(guest: Guest) -> None:
    guest.w(MASTER, 0x7FFF_FFFF)
    assert guest.r(MASTER) == 0


@pytest.mark.parametrize(("event", "summary"), [
    (IrqEvent.VECS_MI_USER_INTERRUPT, regs.GEN8_GT_VECS_IRQ),
    (IrqEvent.VCS_MI_FLUSH_DW, regs.GEN8_GT_VCS1_IRQ),
    (IrqEvent.PIPE_C_VBLANK, regs.GEN8_DE_PIPE_A_IRQ << 2),
    (IrqEvent.DP_A_HOTPLUG, regs.GEN8_DE_PORT_IRQ),
    (IrqEvent.GSE, regs.GEN8_DE_MISC_IRQ),
    (IrqEvent.DP_B_HOTPLUG, regs.GEN8_DE_PCH_IRQ),
    (IrqEvent.PCU_THERMAL, regs.GEN8_PCU_IRQ),
])
def test_each_bank_has_its_master_bit(guest: Guest, event: IrqEvent, summary: int) -> None:
    _unmask(guest, event.bank, event.bit)
    guest.w(MASTER, ENABLE)
    guest.vgpu.irq.raise_event(event)
    assert guest.r(MASTER) == ENABLE | summary
    assert guest.port.wait_msi(1.0) == Msi(ADDR, DATA)


def test_msi_disabled_in_config_space_sends_nothing(make_guest: Callable[..., Guest]) -> None:
    guest = make_guest()
    guest.port.cfg_write(regs.MSI_CAP_OFFSET + regs.PCI_MSI_FLAGS, 0, 2)  # the guest turns it off
    _unmask(guest, IrqBank.GT0, 1)
    guest.w(MASTER, ENABLE)
    guest.vgpu.irq.raise_event(IrqEvent.RCS_MI_USER_INTERRUPT)
    assert guest.r(MASTER) == ENABLE | regs.GEN8_GT_RCS_IRQ
    assert _no_msi(guest)
    assert guest.vgpu.irq.counters.msi_disabled == 1


def test_unsupported_msi_format_is_counted_not_raised(
    guest: Guest, monkeypatch: pytest.MonkeyPatch
) -> None:
    multi = MsiConfig(enabled=True, address=ADDR, data=DATA,
                      control=regs.PCI_MSI_FLAGS_ENABLE | regs.PCI_MSI_FLAGS_64BIT)
    monkeypatch.setattr(guest.vgpu.cfg, "msi", lambda: multi)
    _unmask(guest, IrqBank.GT0, 1)
    guest.w(MASTER, ENABLE)
    guest.vgpu.irq.raise_event(IrqEvent.RCS_MI_USER_INTERRUPT)
    assert _no_msi(guest)
    assert guest.vgpu.irq.counters.msi_format_errors == 1


def test_backend_failure_is_counted_not_raised(
    guest: Guest, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(handle: Any, address: int, data: int) -> None:
        raise BackendError("sim", "MSI route gone")

    monkeypatch.setattr(guest.vgpu.mpt, "inject_msi", broken)
    _unmask(guest, IrqBank.GT0, 1)
    guest.w(MASTER, ENABLE)
    guest.vgpu.irq.raise_event(IrqEvent.RCS_MI_USER_INTERRUPT)
    assert guest.vgpu.irq.counters.inject_failures == 1


def test_vblank_delivers_pending_flip_then_vblank(guest: Guest) -> None:
    bank = IrqBank.DE_PIPE_A
    clock = guest.gvt.clock
    frame = 16_666_667  # the default 60 Hz
    _unmask(guest, bank, regs.GEN8_PIPE_VBLANK | regs.GEN8_PIPE_PRIMARY_FLIP_DONE)
    guest.w(MASTER, ENABLE)
    clock.advance(3 * frame)  # no vblank timer before the guest writes PIPECONF
    assert guest.r(bank.iir) == 0
    guest.w(regs.PIPECONF_A, regs.PIPECONF_ENABLE)
    guest.w(regs.DSPSURF_A, guest.vgpu.resources.low_gm_base)
    assert guest.r(bank.iir) == 0  # a sync flip completes at the next vblank
    clock.advance(frame)
    assert guest.r(bank.iir) == regs.GEN8_PIPE_VBLANK | regs.GEN8_PIPE_PRIMARY_FLIP_DONE
    assert guest.r(regs.PIPE_FRMCOUNT_G4X_A) == 1
    assert guest.port.wait_msi(1.0) is not None
    guest.w(bank.iir, 0xFFFF_FFFF)
    clock.advance(frame)
    assert guest.r(bank.iir) == regs.GEN8_PIPE_VBLANK  # the flip was delivered once
    assert guest.r(regs.PIPE_FRMCOUNT_G4X_A) == 2


def test_dmlr_masks_everything_again(guest: Guest) -> None:
    _unmask(guest, IrqBank.GT0, 1)
    guest.w(MASTER, ENABLE)
    guest.gvt.reset_vgpu(guest.vgpu)
    guest.enable_decoding()
    assert guest.r(IrqBank.GT0.imr) == 0xFFFF_FFFF and guest.r(MASTER) == 0
    guest.vgpu.irq.raise_event(IrqEvent.RCS_MI_USER_INTERRUPT)
    assert _no_msi(guest)


# --- upstream's exact rules (facts 0.1 #7, interrupt.c) -------------------------------------


def test_a_guest_write_to_iir_never_injects(guest: Guest) -> None:
    _unmask(guest, IrqBank.GT0, 0xFFFF_FFFF)
    guest.w(MASTER, ENABLE)
    guest.vgpu.irq.raise_event(IrqEvent.RCS_MI_USER_INTERRUPT)
    guest.vgpu.irq.raise_event(IrqEvent.RCS_AS_CONTEXT_SWITCH)
    assert guest.port.wait_msi(1.0) is not None
    while guest.port.wait_msi(0) is not None:
        pass
    injected = guest.vgpu.irq.counters.injected
    guest.w(GT0 + regs.IRQ_IIR, 1 << 0)  # one of two: still pending, master enabled
    assert guest.r(MASTER) == ENABLE | regs.GEN8_GT_RCS_IRQ
    assert _no_msi(guest) and guest.vgpu.irq.counters.injected == injected
    guest.w(GT0 + regs.IRQ_IIR, 1 << 8)  # the last one: the summary bit clears
    assert guest.r(MASTER) == ENABLE


def test_summary_bits_wait_for_the_master_enable(guest: Guest) -> None:
    _unmask(guest, IrqBank.GT1, 1 << 8)
    guest.vgpu.irq.raise_event(IrqEvent.VCS_AS_CONTEXT_SWITCH)
    assert guest.r(IrqBank.GT1.iir) == 1 << 8
    assert guest.r(MASTER) == 0  # master enable clear: the pending check does nothing
    assert _no_msi(guest)
    guest.w(MASTER, ENABLE)
    assert guest.r(MASTER) == ENABLE | regs.GEN8_GT_VCS1_IRQ
    assert guest.port.wait_msi(1.0) == Msi(ADDR, DATA)


def test_an_ier_write_updates_its_summary_even_with_master_off(guest: Guest) -> None:
    guest.w(IrqBank.GT3.imr, 0)
    guest.vgpu.irq.raise_event(IrqEvent.VECS_MI_USER_INTERRUPT)
    assert guest.r(MASTER) == 0
    guest.w(IrqBank.GT3.ier, 1)
    assert guest.r(MASTER) == regs.GEN8_GT_VECS_IRQ
    assert _no_msi(guest)
    guest.w(IrqBank.GT3.ier, 0)
    assert guest.r(MASTER) == 0


@pytest.mark.parametrize("bank", [IrqBank.GT2, IrqBank.GT3])
def test_only_the_low_half_of_gt2_and_gt3_feeds_the_master(guest: Guest, bank: IrqBank) -> None:
    summary = bank.value[1]
    guest.w(MASTER, ENABLE)
    guest.vgpu.mmio.set32(bank.iir, 1 << 16)  # a high-half bit pending
    guest.w(bank.ier, 0xFFFF_FFFF)
    assert guest.r(MASTER) == ENABLE
    assert _no_msi(guest)
    guest.vgpu.mmio.set32(bank.iir, (1 << 16) | 1)
    guest.w(bank.ier, 0xFFFF_FFFF)
    assert guest.r(MASTER) == ENABLE | summary
    assert guest.port.wait_msi(1.0) == Msi(ADDR, DATA)
