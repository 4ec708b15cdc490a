"""The vGPU's virtual ACPI OpRegion (facts 9.6).

GVT builds the OpRegion itself instead of copying the host's: 8 KiB with the
"IntelGraphicsMem" header, only the VBT mailbox advertised, the lid reported
open, and a minimal VBT as upstream's ``virt_vbt_generation`` builds it: four
DisplayPort children on ports A-D (each an integrated DP encoder with its AUX
channel; the vGPU's monitor is on port B, whose child names AUX B), and a
driver-features block saying there is no LVDS panel.
It lives in two host pages registered in system memory, so a backend can map
them into the guest (``set_opregion``) or copy them (QEMU's IGD OpRegion
region under VFIO).

SWSCI (the guest's "software SCI" calls into the system BIOS) is answered
here as upstream's ``intel_vgpu_emulate_opregion_request`` does (facts 0.1
#9): a capability query (GBDA "supported calls" or "requested callbacks",
SBCB "supported callbacks"; ``GBDA`` = 4, ``SBCB`` = 6) gets SCIC = 0 and
PARM = 0; any other call gets its exit-status bits cleared ("failure,
generic, unsupported or unknown cause") with the indicator left set and PARM
as the guest wrote it.
"""

from __future__ import annotations

import struct
from typing import Any

import attrs

from gvt_core.errors import GuestMemoryError, InvalidGfnError
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SIZE, HostPagePool
from gvt_core.mpt.facade import Mpt

# struct layouts, little endian, packed (i915's intel_vbt_defs.h)
_VBT_HEADER = struct.Struct("<20sHHHBBI16s")  # signature, version, header/vbt size, csum, rsvd, bdb_offset, aim[4]
_BDB_HEADER = struct.Struct("<16sHHH")  # signature, version, header_size, bdb_size
_BLOCK_HEADER = struct.Struct("<BH")  # block id, block size (excluding this header)
_GENERAL_FEATURES_SIZE = 5
_GENERAL_DEFINITIONS = struct.Struct("<BB2sB")  # crt ddc pin, flags, boot_display[2], child_dev_size
# child device: the fields GVT fills, at their i915 offsets (33-byte layout of BDB 155..195)
_CHILD_HANDLE = 0
_CHILD_DEVICE_TYPE = 2
_CHILD_DVO_PORT = 16
_CHILD_AUX_CHANNEL = 25


def build_vbt() -> bytes:
    """The VBT GVT places at OpRegion offset 0x400."""
    children = bytearray()
    for i in range(regs.VBT_NUM_CHILDREN):
        child = bytearray(regs.VBT_CHILD_DEVICE_SIZE)
        struct.pack_into("<H", child, _CHILD_HANDLE, regs.DEVICE_HANDLE_EFP[i])
        struct.pack_into("<H", child, _CHILD_DEVICE_TYPE, regs.DEVICE_TYPE_DP)
        child[_CHILD_DVO_PORT] = regs.DVO_PORT_DP[i]
        child[_CHILD_AUX_CHANNEL] = regs.DP_AUX_CHANNEL[i]
        child[dr.VBT_CHILD_DP_COMPAT_BYTE] |= dr.VBT_CHILD_DP_COMPAT
        child[dr.VBT_CHILD_INTEGRATED_ENCODER_BYTE] |= dr.VBT_CHILD_INTEGRATED_ENCODER
        children += child
    features = _BLOCK_HEADER.pack(regs.BDB_GENERAL_FEATURES, _GENERAL_FEATURES_SIZE) + bytes(
        _GENERAL_FEATURES_SIZE
    )
    definitions_body = (
        _GENERAL_DEFINITIONS.pack(0, 0, b"\0\0", regs.VBT_CHILD_DEVICE_SIZE) + bytes(children)
    )
    definitions = _BLOCK_HEADER.pack(regs.BDB_GENERAL_DEFINITIONS, len(definitions_body)) + (
        definitions_body
    )
    # driver features: no LVDS (every field zero), as upstream's virt_vbt_generation
    driver = _BLOCK_HEADER.pack(dr.BDB_DRIVER_FEATURES, dr.BDB_DRIVER_FEATURES_SIZE) + bytes(
        dr.BDB_DRIVER_FEATURES_SIZE
    )
    bdb_size = _BDB_HEADER.size + len(features) + len(definitions) + len(driver)
    bdb = (
        _BDB_HEADER.pack(regs.BDB_SIGNATURE, regs.BDB_VERSION, _BDB_HEADER.size, bdb_size)
        + features
        + definitions
        + driver
    )
    vbt_size = _VBT_HEADER.size + len(bdb)
    header = _VBT_HEADER.pack(
        regs.VBT_SIGNATURE, regs.VBT_VERSION, _VBT_HEADER.size, vbt_size, 0, 0,
        _VBT_HEADER.size, bytes(16),
    )
    vbt = bytearray(header + bdb)
    # checksum byte (offset 26) makes all bytes sum to 0 mod 256
    vbt[26] = (-sum(vbt)) & 0xFF
    return bytes(vbt)


def build_opregion() -> bytes:
    """The 8 KiB OpRegion contents GVT gives every vGPU."""
    buf = bytearray(regs.OPREGION_SIZE)
    buf[: len(regs.OPREGION_SIGNATURE)] = regs.OPREGION_SIGNATURE
    struct.pack_into("<I", buf, regs.OPREGION_HEADER_SIZE, regs.OPREGION_SIZE // regs.KiB)
    struct.pack_into("<I", buf, regs.OPREGION_HEADER_VERSION, regs.OPREGION_VERSION_2_0)
    struct.pack_into("<I", buf, regs.OPREGION_HEADER_MBOX, regs.OPREGION_MBOX_VBT)
    struct.pack_into("<I", buf, regs.OPREGION_CLID, regs.OPREGION_CLID_OPEN)
    vbt = build_vbt()
    if len(vbt) > regs.OPREGION_VBT_MAX:
        raise AssertionError("the generated VBT overflows its mailbox")
    buf[regs.OPREGION_VBT : regs.OPREGION_VBT + len(vbt)] = vbt
    return bytes(buf)


@attrs.frozen
class SwsciAnswer:
    """The mailbox after one SWSCI request."""

    scic: int
    #: the new PARM value; None leaves PARM as the guest wrote it.
    parm: int | None
    #: True for a capability query (answered SCIC = 0, PARM = 0).
    supported: bool
    function: int
    subfunction: int


def answer_swsci(scic: int) -> SwsciAnswer:
    """What the (virtual) system BIOS answers to the request in ``scic``.

    A capability query is answered with SCIC = 0 and PARM = 0 (nothing
    supported); any other call keeps SCIC but for its exit-status bits, which
    become 0 ("failure, generic, unsupported or unknown cause"), and PARM.
    """
    func = (scic & regs.SWSCI_SCIC_MAIN_FUNCTION_MASK) >> regs.SWSCI_SCIC_MAIN_FUNCTION_SHIFT
    sub = (scic & regs.SWSCI_SCIC_SUB_FUNCTION_MASK) >> regs.SWSCI_SCIC_SUB_FUNCTION_SHIFT
    query = (func == regs.SWSCI_GBDA and sub in (
        regs.SWSCI_SUB_SUPPORTED_CALLS, regs.SWSCI_SUB_REQUESTED_CALLBACKS
    )) or (func == regs.SWSCI_SBCB and sub == regs.SWSCI_SUB_SUPPORTED_CALLS)
    if query:
        return SwsciAnswer(scic=0, parm=0, supported=True, function=func, subfunction=sub)
    out = scic & ~regs.SWSCI_SCIC_EXIT_STATUS_MASK & 0xFFFF_FFFF
    return SwsciAnswer(scic=out, parm=None, supported=False, function=func, subfunction=sub)


@attrs.define(eq=False)
class OpRegion:
    """One vGPU's OpRegion: two host pages in system memory."""

    pool: HostPagePool
    owner: str
    pages: list[tuple[int, memoryview]] = attrs.field(factory=list)
    #: guest-physical address where the backend placed it (``set_opregion``), if it did.
    placed_gpa: int | None = None
    #: the last SWSCI answer (for tests and debugging).
    last_swsci: SwsciAnswer | None = None

    @classmethod
    def create(cls, pool: HostPagePool, owner: str) -> OpRegion:
        region = cls(pool, owner)
        try:
            for _ in range(regs.OPREGION_PAGES):
                region.pages.append(pool.alloc(owner=owner))
        except BaseException:
            region.free()
            raise
        region.write(0, build_opregion())
        return region

    @property
    def frames(self) -> tuple[int, ...]:
        return tuple(frame for frame, _ in self.pages)

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of the host copy (offset within the 8 KiB)."""
        if offset < 0 or offset + length > regs.OPREGION_SIZE:
            raise ValueError(f"OpRegion read [{offset:#x}, +{length}) out of range")
        out = bytearray()
        while length > 0:
            page, off = divmod(offset, PAGE_SIZE)
            n = min(length, PAGE_SIZE - off)
            out += self.pages[page][1][off : off + n]
            offset += n
            length -= n
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > regs.OPREGION_SIZE:
            raise ValueError(f"OpRegion write [{offset:#x}, +{len(data)}) out of range")
        pos = 0
        while pos < len(data):
            page, off = divmod(offset + pos, PAGE_SIZE)
            n = min(len(data) - pos, PAGE_SIZE - off)
            self.pages[page][1][off : off + n] = data[pos : pos + n]
            pos += n

    def free(self) -> None:
        """Give the pages back (vGPU destroy); the GPU can no longer reach them."""
        while self.pages:
            frame, page = self.pages.pop()
            self.pool.free(frame, page)

    def emulate_swsci(self, mpt: Mpt, handle: Any, asls: int) -> SwsciAnswer | None:
        """Serve one SWSCI request the guest triggered through config space.

        The mailbox is read where the guest sees the OpRegion: in the host
        pages when the backend placed them at ASLS, else in guest RAM at ASLS
        (a copy the guest's firmware or QEMU made). With ASLS unset, or
        pointing outside guest RAM, there is no mailbox and None is returned.
        """
        if self.placed_gpa is not None and asls == self.placed_gpa:
            scic = int.from_bytes(self.read(regs.OPREGION_SCIC, 4), "little")
            answer = answer_swsci(scic)
            self.write(regs.OPREGION_SCIC, answer.scic.to_bytes(4, "little"))
            if answer.parm is not None:
                self.write(regs.OPREGION_PARM, answer.parm.to_bytes(4, "little"))
        elif asls:
            try:
                scic = int.from_bytes(mpt.read_gpa(handle, asls + regs.OPREGION_SCIC, 4), "little")
                answer = answer_swsci(scic)
                mpt.write_gpa(handle, asls + regs.OPREGION_SCIC, answer.scic.to_bytes(4, "little"))
                if answer.parm is not None:
                    mpt.write_gpa(
                        handle, asls + regs.OPREGION_PARM, answer.parm.to_bytes(4, "little")
                    )
            except (GuestMemoryError, InvalidGfnError):
                return None
        else:
            return None
        self.last_swsci = answer
        return answer
