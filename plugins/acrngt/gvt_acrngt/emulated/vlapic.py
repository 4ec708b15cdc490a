"""The virtual LAPIC of an emulated ACRN vCPU, as far as MSIs reach it.

What ``hcall_inject_msi`` does with a message, after ACRN's ``vlapic.c``
(``inject_msi_for_non_lapic_pt`` -> ``vlapic_receive_intr`` ->
``vlapic_set_intr`` -> ``apicv_basic_accept_intr``):

* the address must name the LAPIC window (bits 31:20 0xFEE), else the
  hypercall fails (-1; checked by the hypervisor before it gets here);
* the destination (address bits 19:12) is an APIC ID in physical mode
  (address bit 2 clear), else a logical destination matched against each
  vCPU's LDR in the flat model; lowest-priority delivery (or the redirection
  hint) picks the first matching vCPU, as all of them have the same priority;
* only fixed, lowest-priority and ExtINT delivery are taken; SMI, NMI, INIT,
  SIPI and the reserved mode are dropped (``vlapic intr invalid delmode``);
  ExtINT asks the vPIC for its vector, which no device here raises;
* a vector below 16 is illegal: dropped, the receive-illegal-vector bit set
  in the ESR;
* an accepted vector sets its bit in the IRR; **a vector whose bit is already
  set is not accepted again** ("If the interrupt is set, don't try to do it
  again"): an MSI is an edge on a pending condition, so the same interrupt
  sent any number of times before the guest takes it arrives once, and at
  most 240 (vectors 16..255) wait per vCPU.

The guest side: a vCPU takes its highest pending vector first, as the LAPIC
delivers by priority. Every modelled guest keeps its LAPIC enabled in xAPIC
mode, with APIC ID = vCPU index and the flat logical ID ``1 << index`` that
Linux programs into the LDR for up to eight CPUs. Real ACRN gives a User
VM's vCPU the LAPIC ID of the pCPU it runs on (since v2.0; before, its vCPU
index, as here); the guest model programs its MSIs for APIC 0, as a guest OS
does for the ID its firmware tables give its boot CPU. Since a guest model
has no interrupt vector table, taking a vector hands it the message that
raised it (the first one, for a coalesced vector).
"""

from __future__ import annotations

import attrs

from gvt_core.mpt.ops import Msi

# --- the x86 MSI format (Intel SDM vol. 3, 11.11) --------------------------------------------------
#: address bits 19:12: the destination ID.
MSI_ADDR_DEST_SHIFT = 12
MSI_ADDR_DEST_MASK = 0xFF
#: address bit 3: redirection hint (lowest priority among the destinations).
MSI_ADDR_RH = 1 << 3
#: address bit 2: destination mode, 1 = logical.
MSI_ADDR_DEST_LOGICAL = 1 << 2
#: data bits 7:0: the vector; bits 10:8: the delivery mode.
MSI_DATA_VECTOR_MASK = 0xFF
MSI_DATA_DELMODE_SHIFT = 8
MSI_DATA_DELMODE_MASK = 0x7

#: delivery modes (``IOAPIC_RTE_DELMODE_*``) the vLAPIC takes from an MSI.
DELMODE_FIXED = 0
DELMODE_LOWPRI = 1
DELMODE_EXTINT = 7
#: vectors 0..15 are reserved for exceptions; a LAPIC refuses to receive them.
FIRST_LEGAL_VECTOR = 16
VECTORS = 256
#: ESR bit 6, Received Illegal Vector.
APIC_ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6
#: flat-model logical IDs reach eight CPUs (one bit each).
FLAT_LOGICAL_CPUS = 8


@attrs.define(eq=False)
class MsiStats:
    """What became of the MSIs a VM was sent (per VM, for tests and ``gvt serve``)."""

    #: accepted into an IRR bit that was clear.
    accepted: int = 0
    #: merged into an IRR bit already set (the guest will see the vector once).
    coalesced: int = 0
    #: dropped: a delivery mode the vLAPIC does not take, no vCPU at the
    #: destination, an illegal vector, or ExtINT with nothing in the vPIC.
    ignored: int = 0
    #: refused by the hypercall: the address is outside the LAPIC window.
    refused: int = 0


class VLapic:
    """The interrupt-request state of one vCPU's vLAPIC."""

    def __init__(self, index: int) -> None:
        self.apic_id = index
        #: LDR bits 31:24 in the flat model: one bit per CPU (none beyond eight).
        self.logical_id = 1 << index if index < FLAT_LOGICAL_CPUS else 0
        #: pending vectors, one bit each (the 256-bit IRR).
        self.irr = 0
        self.esr = 0
        #: the message that set each pending vector, for the guest model.
        self._raised: dict[int, Msi] = {}

    @property
    def pending(self) -> int:
        return len(self._raised)

    def set_intr(self, vector: int, msi: Msi) -> bool | None:
        """``vlapic_set_intr``: True when the vector became pending, False when it
        was pending already (coalesced), None when the vLAPIC refused it."""
        if vector < FIRST_LEGAL_VECTOR:
            self.esr |= APIC_ESR_RECEIVE_ILLEGAL_VECTOR
            return None
        bit = 1 << vector
        if self.irr & bit:
            return False
        self.irr |= bit
        self._raised[vector] = msi
        return True

    def take(self) -> Msi | None:
        """The guest takes its highest pending vector (acknowledge and EOI at once:
        the model has no in-service state), or None when nothing is pending."""
        if not self.irr:
            return None
        vector = self.irr.bit_length() - 1
        self.irr &= ~(1 << vector)
        return self._raised.pop(vector)

    def reset(self) -> None:
        self.irr = 0
        self.esr = 0
        self._raised.clear()


def destinations(lapics: list[VLapic], address: int, data: int) -> list[VLapic]:
    """``vlapic_receive_intr`` / ``vlapic_calc_dest_noshort``: the vLAPICs an MSI
    with a valid address goes to (none for a delivery mode they do not take)."""
    delmode = (data >> MSI_DATA_DELMODE_SHIFT) & MSI_DATA_DELMODE_MASK
    if delmode not in (DELMODE_FIXED, DELMODE_LOWPRI, DELMODE_EXTINT):
        return []
    dest = (address >> MSI_ADDR_DEST_SHIFT) & MSI_ADDR_DEST_MASK
    if not address & MSI_ADDR_DEST_LOGICAL:
        return [lapic for lapic in lapics if lapic.apic_id == dest][:1]
    matched = [lapic for lapic in lapics if lapic.logical_id & dest]
    if delmode == DELMODE_LOWPRI or address & MSI_ADDR_RH:
        return matched[:1]  # equal priorities: the first match keeps it
    return matched


def deliver(lapics: list[VLapic], address: int, data: int, stats: MsiStats) -> list[VLapic]:
    """Deliver one MSI whose address passed the hypercall's check; the vLAPICs
    whose IRR gained a vector (their vCPUs are to be woken)."""
    targets = destinations(lapics, address, data)
    delmode = (data >> MSI_DATA_DELMODE_SHIFT) & MSI_DATA_DELMODE_MASK
    if not targets or delmode == DELMODE_EXTINT:
        stats.ignored += 1
        return []
    msi = Msi(address, data)
    vector = data & MSI_DATA_VECTOR_MASK
    woken = []
    for lapic in targets:
        got = lapic.set_intr(vector, msi)
        if got is None:
            stats.ignored += 1
        elif got:
            stats.accepted += 1
            woken.append(lapic)
        else:
            stats.coalesced += 1
    return woken
