"""MSIs on the emulated ACRN reach the guest as ACRN's vLAPIC delivers them.

Each MSI goes through ``ACRN_IOCTL_INJECT_MSI`` (the packed bytes the real
HSM receives); the guest side takes interrupts through a vCPU's port. What
is checked is ACRN's behaviour: a pending vector is not accepted again
(identical MSIs coalesce), the highest vector is taken first, illegal vectors
and delivery modes the vLAPIC does not take are dropped, destinations select
vCPUs, and a VM's pending interrupts go with a reset or its destruction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gvt_acrngt.emulated import vlapic
from gvt_acrngt.emulated.vlapic import MsiStats, VLapic, deliver
from gvt_core.mpt.ops import Msi

LAPIC = 0xFEE0_0000
LOGICAL = vlapic.MSI_ADDR_DEST_LOGICAL


def _dest(apic: int) -> int:
    return LAPIC | (apic << vlapic.MSI_ADDR_DEST_SHIFT)


def _drain(port: Any) -> list[Msi]:
    got = []
    while (msi := port.wait_msi(0.02)) is not None:
        got.append(msi)
    return got


def test_a_pending_vector_is_not_accepted_again(raw_vm: Any) -> None:
    for _ in range(500):
        raw_vm.hsm.inject_msi(LAPIC, 0x41)
    port = raw_vm.port()
    assert port.wait_msi(1.0) == Msi(LAPIC, 0x41)
    assert port.wait_msi(0.02) is None
    stats = raw_vm.machine.user_vm(raw_vm.vmid).msi_stats
    assert (stats.accepted, stats.coalesced) == (1, 499)
    raw_vm.hsm.inject_msi(LAPIC, 0x41)  # taken: the next edge is a new interrupt
    assert port.wait_msi(1.0) == Msi(LAPIC, 0x41)


def test_the_same_vector_from_another_message_coalesces_too(raw_vm: Any) -> None:
    raw_vm.hsm.inject_msi(LAPIC, 0x41)
    raw_vm.hsm.inject_msi(LAPIC | vlapic.MSI_ADDR_RH, 0x41)  # another message, same vector
    assert _drain(raw_vm.port()) == [Msi(LAPIC, 0x41)]


def test_the_highest_vector_is_taken_first(raw_vm: Any) -> None:
    for vector in (0x30, 0xE0, 0x51, 0x52):
        raw_vm.hsm.inject_msi(LAPIC, vector)
    assert [m.data for m in _drain(raw_vm.port())] == [0xE0, 0x52, 0x51, 0x30]


def test_illegal_vectors_and_other_delivery_modes_are_dropped(raw_vm: Any) -> None:
    for data in (0x0F, 0x200 | 0x41, 0x400 | 0x41, 0x500 | 0x41, 0x600 | 0x41, 0x300 | 0x41,
                 0x700 | 0x41):  # vector 15, SMI, NMI, INIT, SIPI, reserved, ExtINT
        raw_vm.hsm.inject_msi(LAPIC, data)
    assert raw_vm.port().wait_msi(0.05) is None
    hv_vm = raw_vm.machine.user_vm(raw_vm.vmid)
    assert hv_vm.msi_stats.ignored == 7 and hv_vm.msi_stats.accepted == 0
    assert hv_vm.vcpus[0].vlapic.esr & vlapic.APIC_ESR_RECEIVE_ILLEGAL_VECTOR
    raw_vm.hsm.inject_msi(LAPIC, 0x100 | 0x42)  # lowest priority: taken
    assert raw_vm.port().wait_msi(1.0) == Msi(LAPIC, 0x142)


def test_physical_destinations_select_a_vcpu(make_vm: Callable[..., Any]) -> None:
    vm = make_vm(vcpus=2)
    vm.hsm.inject_msi(_dest(1), 0x61)
    vm.hsm.inject_msi(_dest(0), 0x60)
    vm.hsm.inject_msi(_dest(5), 0x65)  # no vCPU has APIC ID 5
    assert _drain(vm.port(0)) == [Msi(_dest(0), 0x60)]
    assert _drain(vm.port(1)) == [Msi(_dest(1), 0x61)]
    assert vm.machine.user_vm(vm.vmid).msi_stats.ignored == 1


def test_logical_destinations_in_the_flat_model(make_vm: Callable[..., Any]) -> None:
    vm = make_vm(vcpus=2)
    both = LAPIC | LOGICAL | (0b11 << vlapic.MSI_ADDR_DEST_SHIFT)
    vm.hsm.inject_msi(both, 0x70)  # fixed: every vCPU named
    vm.hsm.inject_msi(both, 0x100 | 0x71)  # lowest priority: one of them
    vm.hsm.inject_msi(both | vlapic.MSI_ADDR_RH, 0x72)  # redirection hint: one of them
    assert [m.data for m in _drain(vm.port(0))] == [0x72, 0x171, 0x70]
    assert [m.data for m in _drain(vm.port(1))] == [0x70]


def test_a_guest_waiting_for_an_interrupt_is_woken(raw_vm: Any) -> None:
    got: list[Msi | None] = []
    waiter = threading.Thread(target=lambda: got.append(raw_vm.port().wait_msi(5.0)))
    waiter.start()
    raw_vm.hsm.inject_msi(LAPIC, 0x99)
    waiter.join(5.0)
    assert got == [Msi(LAPIC, 0x99)]


def test_reset_and_destroy_drop_pending_interrupts(raw_vm: Any) -> None:
    m, port = raw_vm.machine, raw_vm.port()
    raw_vm.hsm.inject_msi(LAPIC, 0x41)
    raw_vm.hsm.pause_vm()
    with m.lock:
        assert m.hv.reset_vm(raw_vm.vmid) == 0
    assert port.wait_msi(0.02) is None
    raw_vm.hsm.inject_msi(LAPIC, 0x42)
    raw_vm.hsm.pause_vm()
    raw_vm.hsm.destroy_vm()
    assert port.wait_msi(0.02) is None


def test_destroying_the_vm_wakes_a_waiting_guest(raw_vm: Any) -> None:
    port = raw_vm.port()
    got: list[Msi | None] = []
    waiter = threading.Thread(target=lambda: got.append(port.wait_msi(30.0)))
    waiter.start()
    raw_vm.hsm.pause_vm()
    raw_vm.hsm.destroy_vm()
    waiter.join(5.0)
    assert not waiter.is_alive() and got == [None]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([LAPIC, LAPIC | 8, _dest(1), LAPIC | LOGICAL | 0x1000]),
                          st.integers(0, 0xFFFF)), max_size=600))
def test_pending_interrupts_are_bounded_by_the_irr(msis: list[tuple[int, int]]) -> None:
    """Whatever a device model sends, each vCPU holds at most one interrupt per legal
    vector, every one of them distinct, and takes them highest first."""
    lapics = [VLapic(0), VLapic(1)]
    stats = MsiStats()
    for address, data in msis:
        deliver(lapics, address, data, stats)
    for lapic in lapics:
        assert lapic.pending <= vlapic.VECTORS - vlapic.FIRST_LEGAL_VECTOR
        taken = []
        while (msi := lapic.take()) is not None:
            taken.append(msi.data & vlapic.MSI_DATA_VECTOR_MASK)
        assert taken == sorted(set(taken), reverse=True)
        assert all(v >= vlapic.FIRST_LEGAL_VECTOR for v in taken)
    assert stats.accepted + stats.coalesced + stats.ignored >= len(msis)


@pytest.mark.parametrize("vcpus", [1, 3])
def test_every_legal_vector_can_wait_at_once(make_vm: Callable[..., Any], vcpus: int) -> None:
    vm = make_vm(vcpus=vcpus)
    for vector in range(vlapic.VECTORS):
        vm.hsm.inject_msi(LAPIC, vector)
        vm.hsm.inject_msi(LAPIC, vector)
    got = _drain(vm.port(0))
    assert [m.data for m in got] == list(range(vlapic.VECTORS - 1, vlapic.FIRST_LEGAL_VECTOR - 1, -1))
