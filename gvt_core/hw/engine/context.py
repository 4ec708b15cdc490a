"""The logical ring context (LRC) and the context descriptor, as the hardware defines them.

An LRC is a multi-page object in graphics memory: page 0 is the per-process
hardware status page (PPHWSP), page 1 holds the ring-context register state
(facts 7.4). The register state is a list of MI_LOAD_REGISTER_IMM (offset,
value) pairs at fixed dword indexes; the hardware loads it when it switches
the context in and writes the values back when it switches it out. The
execution layer reads guest images with these indexes; the engines load and
save host (shadow) images with them.

The descriptor (facts 7.1) is the 64-bit value a driver writes through ELSP.
"""

from __future__ import annotations

import attrs

from gvt_core.hw import regs

# --- the register-state page (dword index of the register offset; its value follows) ------
CTX_LRI_HEADER_0 = 0x01
CTX_CONTEXT_CONTROL = 0x02
CTX_RING_HEAD = 0x04
CTX_RING_TAIL = 0x06
CTX_RING_BUFFER_START = 0x08
CTX_RING_BUFFER_CONTROL = 0x0A
CTX_BB_HEAD_U = 0x0C
CTX_BB_HEAD_L = 0x0E
CTX_BB_STATE = 0x10
CTX_SECOND_BB_HEAD_U = 0x12
CTX_SECOND_BB_HEAD_L = 0x14
CTX_SECOND_BB_STATE = 0x16
CTX_BB_PER_CTX_PTR = 0x18
CTX_RCS_INDIRECT_CTX = 0x1A
CTX_RCS_INDIRECT_CTX_OFFSET = 0x1C
CTX_LRI_HEADER_1 = 0x21
CTX_CTX_TIMESTAMP = 0x22
CTX_PDP3_UDW = 0x24
CTX_PDP3_LDW = 0x26
CTX_PDP2_UDW = 0x28
CTX_PDP2_LDW = 0x2A
CTX_PDP1_UDW = 0x2C
CTX_PDP1_LDW = 0x2E
CTX_PDP0_UDW = 0x30
CTX_PDP0_LDW = 0x32
#: dwords of the register state GVT treats as the ring context (``RING_CTX_SIZE`` 320 bytes).
RING_CTX_DWORDS = 80
RING_CTX_SIZE = RING_CTX_DWORDS * 4
#: LRC page holding the register state; page 0 is the per-process HWSP.
LRC_PPHWSP_PN = 0
LRC_STATE_PN = 1
#: (lower, upper) register-offset indexes of PDP n; the value is at index + 1.
CTX_PDP = (
    (CTX_PDP0_LDW, CTX_PDP0_UDW),
    (CTX_PDP1_LDW, CTX_PDP1_UDW),
    (CTX_PDP2_LDW, CTX_PDP2_UDW),
    (CTX_PDP3_LDW, CTX_PDP3_UDW),
)

# --- ring registers (facts 7.5; i915 RB_*) ----------------------------------------------------
RING_VALID = 1 << 0
RB_TAIL_SIZE_MASK = 0x1F_F000  # RING_CTL bits 20:12: ring size in pages, minus one
RB_HEAD_OFF_MASK = 0x1F_FFFC  # RING_HEAD bits 20:2
RB_TAIL_OFF_MASK = 0x1F_FFF8  # RING_TAIL bits 20:3
RB_HEAD_WRAP_MASK = 0xFFE0_0000  # RING_HEAD bits 31:21: wrap count
#: CONTEXT_CONTROL bit 0: do not restore the engine state from the image.
CTX_CTRL_ENGINE_CTX_RESTORE_INHIBIT = 1 << 0


def ring_size(ctl: int) -> int:
    """Ring buffer size in bytes from RING_CTL (``_RING_CTL_BUF_SIZE``)."""
    return (ctl & RB_TAIL_SIZE_MASK) + regs.GTT_PAGE_SIZE


def ring_ctl(size: int) -> int:
    """RING_CTL value for a valid ring of ``size`` bytes (a whole number of pages)."""
    return ((size - regs.GTT_PAGE_SIZE) & RB_TAIL_SIZE_MASK) | RING_VALID


# --- the context descriptor (facts 7.1) ---------------------------------------------------------
GEN8_CTX_VALID = 1 << 0
GEN8_CTX_FORCE_PD_RESTORE = 1 << 1
GEN8_CTX_FORCE_RESTORE = 1 << 2
GEN8_CTX_ADDRESSING_MODE_SHIFT = 3
GEN8_CTX_ADDRESSING_MODE_MASK = 0x3
GEN8_CTX_L3LLC_COHERENT = 1 << 5
GEN8_CTX_PRIVILEGE = 1 << 8
GEN8_CTX_LRCA_MASK = 0xFFFF_F000
#: addressing modes
LEGACY_32B_CONTEXT = 1  # 3-level PPGTT, four PDPs
ADVANCED_CONTEXT = 2
LEGACY_64B_CONTEXT = 3  # 4-level PPGTT, PML4 in PDP0
#: addressing mode -> PPGTT levels; the others are rejected (facts 0.1 item 4).
LEVELS_BY_ADDRESSING_MODE = {LEGACY_32B_CONTEXT: 3, LEGACY_64B_CONTEXT: 4}


@attrs.frozen
class ContextDescriptor:
    """One 64-bit element of an ELSP submission, decoded."""

    raw: int

    @property
    def valid(self) -> bool:
        return bool(self.raw & GEN8_CTX_VALID)

    @property
    def privileged(self) -> bool:
        return bool(self.raw & GEN8_CTX_PRIVILEGE)

    @property
    def addressing_mode(self) -> int:
        return (self.raw >> GEN8_CTX_ADDRESSING_MODE_SHIFT) & GEN8_CTX_ADDRESSING_MODE_MASK

    @property
    def levels(self) -> int | None:
        """PPGTT levels of the addressing mode, None for modes GVT rejects."""
        return LEVELS_BY_ADDRESSING_MODE.get(self.addressing_mode)

    @property
    def lrca(self) -> int:
        """Graphics address of the LRC (page 0, the PPHWSP)."""
        return self.raw & GEN8_CTX_LRCA_MASK

    @property
    def context_id(self) -> int:
        return (self.raw >> 32) & 0xFFFF_FFFF

    def same_context(self, other: ContextDescriptor) -> bool:
        """Upstream's ``same_context``: the same context id at the same LRCA."""
        return self.context_id == other.context_id and self.lrca == other.lrca


def descriptor(lrca: int, context_id: int, levels: int = 4, *, privileged: bool = True) -> int:
    """A descriptor as a driver builds it (valid, legacy 32/64-bit addressing, LLC coherent)."""
    mode = LEGACY_64B_CONTEXT if levels == 4 else LEGACY_32B_CONTEXT
    value = (GEN8_CTX_VALID | GEN8_CTX_L3LLC_COHERENT
             | (mode << GEN8_CTX_ADDRESSING_MODE_SHIFT)
             | (lrca & GEN8_CTX_LRCA_MASK) | ((context_id & 0xFFFF_FFFF) << 32))
    return value | (GEN8_CTX_PRIVILEGE if privileged else 0)


# --- the hardware status page (facts 7.2; i915 I915_HWS_*) ----------------------------------------
#: HWSP dword where MI_REPORT_HEAD stores the ring head.
HWS_RING_HEAD_INDEX = 0x04
#: CSB mirror: entry n at dword 0x10 + 2n, the write pointer at dword 0x1F.
HWS_CSB_BUF0_INDEX = 0x10
HWS_CSB_WRITE_INDEX = 0x1F
