"""The GEN8 (Broadwell) command table: every command an engine decodes, as data.

This is the one source of truth for opcodes and length rules: the software
engines (:mod:`gvt_core.hw.engine.engine`) decode with it, and so does the
command scanner (:mod:`gvt_core.device.execution.scanner`), which adds only
its own audit flags (``scanner.table``). An engine and the scanner therefore
cannot disagree on what a header is or how long its command is.

One :class:`CommandSpec` per command an engine accepts. A header dword names
a command by its type (bits 31:29) and an opcode whose width depends on the
type (facts 8.1): MI commands by bits 28:23, 2D (blitter) commands by bits
28:22, 3D / media / MFX / VEBOX commands by sub-type 28:27, opcode 26:24 and
sub-opcode 23:16. Which types an engine decodes follows upstream's
``ring_decode_info``: RCS = MI + 3D/media, BCS = MI + 2D, VCS/VCS2 = MI + MFX,
VECS = MI + VEBOX. A header that names no entry for the engine is *unknown*:
the scanner rejects it and an engine faults on it; nothing is ever skipped.

Length: a fixed-length command is ``fixed_length`` dwords; any other is
``(header & ((1 << length_bits) - 1)) + 2`` dwords (the DWord Length field with
its bias of 2), :meth:`CommandSpec.length_of`. ``valid_lengths`` narrows a
variable command to the exact sizes GEN8 defines where the layout matters
(upstream's ``F_LEN_VAR_FIXED`` and its per-handler checks); ``min_length`` and
``max_length`` bound every command (the address fields it carries set the
floor). Both the scanner and the engines refuse a command outside them.

Per entry besides: the engines that accept it, the dwords holding graphics
addresses and their width, the bit that selects the GGTT for them, which
batches may use it (:class:`Privilege`), and what the software engine does
with it (:class:`Execution`).

Sources:

* the entries, engines, length rules and address dwords of upstream's
  ``cmd_info`` table (Linux ``drivers/gpu/drm/i915/gvt/cmd_parser.c``, versions
  00a33be4 and 5b45fe6b), BDW entries only (``D_SKL_PLUS`` left out);
* privilege (which commands a non-privileged, i.e. PPGTT, batch may not use) from
  the i915 command parser's GEN7/GEN9 tables (``i915_cmd_parser.c``: ``R`` =
  rejected, ``B`` with ``MI_GLOBAL_GTT`` = allowed only without the GGTT bit),
  since upstream GVT has no privilege notion of its own;
* hardware names, opcodes, length fields and address positions cross-checked
  against Mesa's genxml for GEN8 (``src/intel/genxml/gen8.xml``, mesa commit
  1ab21592, the file last changed in 3b423eeb; the tables Mesa's batch decoder
  uses), matching entries by opcode, not by name.

Cross-check against Mesa gen8.xml (``tests/scanner/mesa_gen8.py`` holds Mesa's
values and ``tests/scanner/test_table.py`` re-derives these counts). The table
has 224 entries (MI 42, 2D 24, 3D/GPGPU/media on RCS 115, MFX 40, VEBOX 3).
Mesa's gen8.xml defines 136 of them, matched by opcode: 134 of upstream's
entries plus the two added from facts 8.2 (MI_LOAD_SCAN_LINES_EXCL,
MI_SET_CONTEXT). It has no 2D, MFX or VEBOX commands, nor MI_FLUSH,
MI_SET_APPID, MI_SEMAPHORE_MBOX, MI_UPDATE_GTT, MI_FLUSH_DW or MI_DISPLAY_FLIP
for GEN8; its other two GEN8 commands (SWTESS_BASE_ADDRESS, MEDIA_OBJECT_GRPID)
have no upstream entry and stay unknown. All 136 were checked for opcode fields,
length rule and exact length; the opcodes agree for all 136. Upstream's length
handling disagreed with Mesa's for 4 (two length-field rules, two exact
lengths):

* MI_MATH: upstream decodes an 8-bit length field, Mesa a 6-bit one. Taken:
  Mesa. With 8 bits a guest could set bits 7:6 and have the scanner skip, as
  operands, commands the hardware executes.
* MI_LOAD_SCAN_LINES_INCL: upstream fixes it at 2 dwords, Mesa decodes a 6-bit
  length field (2 dwords expected). Taken: Mesa's field with exactly 2 valid.
* MI_CONDITIONAL_BATCH_BUFFER_END: upstream requires 4 dwords, Mesa's
  ``length`` says 3 while its own Compare Address field reaches dword 3.
  Taken: upstream's 4 (the only one test_table.py lets disagree).
* MI_ATOMIC (upstream ``MI_OP_2F``): upstream expects the 11-dword form when
  the data size is a qword; Mesa defines it by the Inline Data bit (18).
  Taken: Mesa.

Address dwords (the first dword of each address field) disagreed for 11 of the
134 upstream entries, all upstream bitmaps left from the 32-bit GEN7 layouts or
missing (STATE_BASE_ADDRESS, 3DSTATE_SO_BUFFER, MI_COPY_MEM_MEM,
MI_RS_STORE_DATA_IMM, MEDIA_VFE_STATE, MEDIA_OBJECT, 3DSTATE_VS/GS/HS/DS/PS).
Taken: Mesa, including its three single-dword addresses (STATE_PREFETCH,
MEDIA_OBJECT, MI_SET_CONTEXT), so a command of Mesa's size always passes the
length floor the addresses set. Names: the table uses the hardware (Mesa)
names; six differ from upstream's and keep upstream's in ``upstream_name``.

Decisions beyond the cross-check, each noted on its entry: upstream's
``3DSTATE_VF_STATISTICS`` at (3,0,0x0B), an IVB-era entry GEN8 does not define,
is left out (unknown); MFX_WAIT is one fixed dword as in i915's parser
(upstream gives it a 6-bit length field, which swallows the next dword);
MI_LOAD_SCAN_LINES_EXCL and MI_SET_CONTEXT (facts 8.2) are added; MI_FLUSH_DW
is not an RCS command (upstream lists it on every engine); XY_SRC_COPY_BLT and
XY_SETUP_BLT carry their second address at dword 8, the GEN8 64-bit layout
(upstream: 7); PIPE_CONTROL must be the 6 dwords of GEN8 (upstream reads dwords
2-3 whatever the length).

Address-space rule: an address is in the GGTT only where the command has a GGTT
bit (:attr:`CommandSpec.ggtt_bit`) and it is set (and the batch is privileged);
every other address field (all 2D, 3D, media, MFX and VEBOX addresses) goes
through the context's PPGTT.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from gvt_core.hw import regs

# --- header fields (facts 8.1) -------------------------------------------------------------
CMD_TYPE_SHIFT = 29
MI_OPCODE_SHIFT = 23
MI_OPCODE_MASK = 0x3F
BLT_OPCODE_SHIFT = 22
BLT_OPCODE_MASK = 0x7F
GFX_OPCODE_SHIFT = 16
#: sub-type (2 bits) << 11 | opcode (3 bits) << 8 | sub-opcode (8 bits)
GFX_OPCODE_MASK = 0x1FFF
#: the DWord Length field counts dwords beyond the first two.
LENGTH_BIAS = 2
#: graphics addresses in GEN8 commands are 64-bit (two dwords): low bits, then bits 47:32.
GMADR_DWORDS = 2
GMADR_HIGH_MASK = 0xFFFF


class CommandType(enum.IntEnum):
    """Bits 31:29 of a header dword."""

    MI = 0
    BLT = 2  # 2D, the blitter (BCS)
    GFX = 3  # 3D / GPGPU / media on RCS, MFX on VCS, VEBOX on VECS


class Ring(enum.IntFlag):
    """Engines as a mask, bit ``1 << id`` with the ids of :mod:`gvt_core.hw.regs`."""

    RCS = 1 << regs.ENGINE_RCS
    BCS = 1 << regs.ENGINE_BCS
    VCS = 1 << regs.ENGINE_VCS
    VCS2 = 1 << regs.ENGINE_VCS2
    VECS = 1 << regs.ENGINE_VECS


R_RCS = Ring.RCS
R_BCS = Ring.BCS
R_VCS = Ring.VCS | Ring.VCS2
R_VECS = Ring.VECS
R_ALL = R_RCS | R_BCS | R_VCS | R_VECS

#: which command types each engine decodes (upstream ``ring_decode_info``).
ENGINE_TYPES: dict[int, frozenset[CommandType]] = {
    regs.ENGINE_RCS: frozenset({CommandType.MI, CommandType.GFX}),
    regs.ENGINE_BCS: frozenset({CommandType.MI, CommandType.BLT}),
    regs.ENGINE_VCS: frozenset({CommandType.MI, CommandType.GFX}),
    regs.ENGINE_VCS2: frozenset({CommandType.MI, CommandType.GFX}),
    regs.ENGINE_VECS: frozenset({CommandType.MI, CommandType.GFX}),
}
ENGINES: tuple[int, ...] = tuple(sorted(ENGINE_TYPES))


class Privilege(enum.Enum):
    """What a non-privileged (PPGTT) batch may do with the command."""

    #: allowed anywhere.
    ANY = "any"
    #: privileged-only: refused in a non-privileged batch.
    PRIVILEGED = "privileged"
    #: allowed in a non-privileged batch only without its GGTT bit (and, for
    #: PIPE_CONTROL / MI_FLUSH_DW, without notify, store-index and LRI post-sync).
    GGTT_PRIVILEGED = "ggtt-privileged"


class Execution(enum.Enum):
    """What the software engine does with a command it decoded."""

    #: executed: its effect on memory, registers, control flow or interrupts is modelled.
    EXECUTED = "executed"
    #: pipeline state or a hint with no effect the model can observe; skipped by length.
    NO_EFFECT = "no-effect"
    #: decoded but not modelled (its effect would be wrong if skipped): an engine fault.
    NOT_MODELLED = "not-modelled"


@attrs.frozen
class GgttBit:
    """Where a command says "this address is in the GGTT" (``Use Global GTT``)."""

    dword: int
    bit: int
    #: False when a *set* bit means PPGTT (MI_BATCH_BUFFER_START's address space indicator).
    set_means_ggtt: bool = True

    def is_ggtt(self, dwords: list[int]) -> bool:
        return bool((dwords[self.dword] >> self.bit) & 1) == self.set_means_ggtt


@attrs.frozen
class CommandSpec:
    """One command of the table."""

    #: hardware name (BSpec / Mesa genxml).
    name: str
    type: CommandType
    #: MI: bits 28:23; BLT: bits 28:22; GFX: sub-type << 11 | opcode << 8 | sub-opcode.
    opcode: int
    engines: Ring
    #: dwords, for a fixed-length command; None when the header's length field counts.
    fixed_length: int | None = None
    #: width of the DWord Length field (bits N-1:0) of a variable-length command.
    length_bits: int = 8
    #: the exact lengths GEN8 defines, where the layout matters; () = any.
    valid_lengths: tuple[int, ...] = ()
    #: first dword of each graphics address the command carries.
    addr_dwords: tuple[int, ...] = ()
    #: width of those addresses: 64 (two dwords, the GEN8 norm) or 32 (one dword).
    addr_bits: int = 64
    #: the bit that puts an address in the GGTT instead of the context's PPGTT.
    ggtt_bit: GgttBit | None = None
    privilege: Privilege = Privilege.ANY
    #: what the software engine does with it.
    execution: Execution = Execution.NOT_MODELLED
    #: upstream's name where it differs (``MI_OP_2F`` for MI_ATOMIC ...), or None.
    upstream_name: str | None = None
    #: why this entry departs from upstream, if it does.
    note: str = ""

    @property
    def header(self) -> int:
        """The header dword with every other field zero (length field 0)."""
        if self.type is CommandType.MI:
            return (self.type << CMD_TYPE_SHIFT) | (self.opcode << MI_OPCODE_SHIFT)
        if self.type is CommandType.BLT:
            return (self.type << CMD_TYPE_SHIFT) | (self.opcode << BLT_OPCODE_SHIFT)
        return (self.type << CMD_TYPE_SHIFT) | (self.opcode << GFX_OPCODE_SHIFT)

    @property
    def key(self) -> int:
        """What :func:`key_of` gives for this command's headers."""
        return key_of(self.header)

    @property
    def length_mask(self) -> int:
        return 0 if self.fixed_length is not None else (1 << self.length_bits) - 1

    @property
    def min_length(self) -> int:
        if self.fixed_length is not None:
            return self.fixed_length
        width = GMADR_DWORDS if self.addr_bits == 64 else 1
        floor = max((d + width for d in self.addr_dwords), default=LENGTH_BIAS)
        if self.valid_lengths:
            floor = max(floor, min(self.valid_lengths))
        return max(floor, LENGTH_BIAS)

    @property
    def max_length(self) -> int:
        if self.fixed_length is not None:
            return self.fixed_length
        if self.valid_lengths:
            return max(self.valid_lengths)
        return self.length_mask + LENGTH_BIAS

    def length_of(self, header: int) -> int:
        """Length in dwords the header gives (before validity checks)."""
        if self.fixed_length is not None:
            return self.fixed_length
        return (header & self.length_mask) + LENGTH_BIAS

    def accepts(self, engine: int) -> bool:
        return bool(self.engines & (1 << engine)) and self.type in ENGINE_TYPES[engine]


def key_of(header: int) -> int:
    """A per-engine lookup key of a header: MI ``header >> 23`` (0..63), 2D
    ``header >> 22`` (0x100..0x17F), type 3 ``header >> 16`` (0x6000..0x7FFF);
    -1 for the types no engine decodes (1, 4..7)."""
    t = header >> CMD_TYPE_SHIFT
    if t == CommandType.MI:
        return header >> MI_OPCODE_SHIFT
    if t == CommandType.BLT:
        return header >> BLT_OPCODE_SHIFT
    if t == CommandType.GFX:
        return header >> GFX_OPCODE_SHIFT
    return -1


# --- entry builders ----------------------------------------------------------------------------
_P = Privilege
_X = Execution.EXECUTED
_NE = Execution.NO_EFFECT
_NM = Execution.NOT_MODELLED


def _mi(name: str, opcode: int, engines: Ring = R_ALL, *, fixed: int | None = None,
        bits: int = 8, ex: Execution = _NM, **kw: object) -> CommandSpec:
    return CommandSpec(name, CommandType.MI, opcode, engines, fixed_length=fixed,
                       length_bits=0 if fixed is not None else bits, execution=ex,
                       **kw)  # type: ignore[arg-type]


def _blt(name: str, opcode: int, addr: tuple[int, ...] = (), *, ex: Execution = _NM,
         **kw: object) -> CommandSpec:
    return CommandSpec(name, CommandType.BLT, opcode, R_BCS, addr_dwords=addr, execution=ex,
                       **kw)  # type: ignore[arg-type]


def _gfx(name: str, sub_type: int, opcode: int, sub_opcode: int, engines: Ring = R_RCS, *,
         fixed: int | None = None, bits: int = 8, ex: Execution = _NE,
         **kw: object) -> CommandSpec:
    op = (sub_type << 11) | (opcode << 8) | sub_opcode
    return CommandSpec(name, CommandType.GFX, op, engines, fixed_length=fixed,
                       length_bits=0 if fixed is not None else bits, execution=ex,
                       **kw)  # type: ignore[arg-type]


def _mfx(name: str, pipeline: int, op: int, sub_a: int, sub_b: int, engines: Ring = R_VCS,
         **kw: object) -> CommandSpec:
    """An MFX (VCS) or VEBOX (VECS) command: sub-opcode = sub-opcode A << 5 | sub-opcode B."""
    bits = kw.pop("bits", 12)
    return _gfx(name, pipeline, op, (sub_a << 5) | sub_b, engines, bits=bits,
                **kw)  # type: ignore[arg-type]


_GGTT22 = GgttBit(0, 22)

#: MI commands (facts 8.2), by opcode.
MI_COMMANDS: tuple[CommandSpec, ...] = (
    _mi("MI_NOOP", 0x00, fixed=1, ex=_X),
    _mi("MI_SET_PREDICATE", 0x01, fixed=1),
    _mi("MI_USER_INTERRUPT", 0x02, fixed=1, privilege=_P.PRIVILEGED, ex=_X),
    _mi("MI_WAIT_FOR_EVENT", 0x03, R_RCS | R_BCS, fixed=1, privilege=_P.PRIVILEGED),
    _mi("MI_FLUSH", 0x04, fixed=1, ex=_NE),
    _mi("MI_ARB_CHECK", 0x05, fixed=1, ex=_X),
    _mi("MI_RS_CONTROL", 0x06, R_RCS, fixed=1, ex=_NE),
    _mi("MI_REPORT_HEAD", 0x07, fixed=1, ex=_X),
    _mi("MI_ARB_ON_OFF", 0x08, fixed=1, privilege=_P.PRIVILEGED, ex=_X),
    _mi("MI_URB_ATOMIC_ALLOC", 0x09, R_RCS, fixed=1, ex=_NE),
    _mi("MI_BATCH_BUFFER_END", 0x0A, fixed=1, ex=_X),
    _mi("MI_SUSPEND_FLUSH", 0x0B, fixed=1, ex=_NE),
    _mi("MI_PREDICATE", 0x0C, R_RCS, fixed=1),
    _mi("MI_TOPOLOGY_FILTER", 0x0D, fixed=1, ex=_NE),
    _mi("MI_SET_APPID", 0x0E, fixed=1, ex=_NE),
    _mi("MI_RS_CONTEXT", 0x0F, R_RCS, fixed=1, ex=_NE),
    _mi("MI_LOAD_SCAN_LINES_INCL", 0x12, R_RCS | R_BCS, bits=6, valid_lengths=(2,),
        privilege=_P.PRIVILEGED, note="Mesa's 6-bit length field; upstream: fixed 2 dwords"),
    _mi("MI_LOAD_SCAN_LINES_EXCL", 0x13, R_RCS | R_BCS, bits=6, valid_lengths=(2,),
        privilege=_P.PRIVILEGED, note="not in upstream's table; facts 8.2, Mesa gen8"),
    _mi("MI_DISPLAY_FLIP", 0x14, R_RCS | R_BCS, valid_lengths=(3, 4), privilege=_P.PRIVILEGED),
    _mi("MI_SEMAPHORE_MBOX", 0x16, valid_lengths=(3,), privilege=_P.PRIVILEGED),
    _mi("MI_SET_CONTEXT", 0x18, R_RCS, valid_lengths=(2,), addr_dwords=(1,), addr_bits=32,
        note="legacy ring-buffer mode only; upstream has no entry (unknown)"),
    _mi("MI_URB_CLEAR", 0x19, R_RCS, valid_lengths=(2,), ex=_NE),
    _mi("MI_MATH", 0x1A, bits=6, note="Mesa's 6-bit length field; upstream: 8 bits"),
    _mi("MI_SEMAPHORE_SIGNAL", 0x1B, valid_lengths=(2,), privilege=_P.PRIVILEGED),
    _mi("MI_SEMAPHORE_WAIT", 0x1C, valid_lengths=(4,), addr_dwords=(2,), ggtt_bit=_GGTT22,
        privilege=_P.GGTT_PRIVILEGED, ex=_X),
    _mi("MI_STORE_DATA_IMM", 0x20, bits=10, valid_lengths=(4, 5), addr_dwords=(1,),
        ggtt_bit=_GGTT22, privilege=_P.GGTT_PRIVILEGED, ex=_X),
    _mi("MI_STORE_DATA_INDEX", 0x21, valid_lengths=(3, 4), privilege=_P.PRIVILEGED, ex=_X),
    _mi("MI_LOAD_REGISTER_IMM", 0x22, ex=_X),
    _mi("MI_UPDATE_GTT", 0x23, bits=10),
    _mi("MI_STORE_REGISTER_MEM", 0x24, valid_lengths=(4,), addr_dwords=(2,), ggtt_bit=_GGTT22,
        privilege=_P.GGTT_PRIVILEGED, ex=_X),
    _mi("MI_FLUSH_DW", 0x26, R_ALL & ~R_RCS, bits=6, valid_lengths=(4, 5), addr_dwords=(1,),
        ggtt_bit=GgttBit(1, 2), privilege=_P.GGTT_PRIVILEGED, ex=_X,
        note="not on RCS (BSpec, i915's parser tables); upstream: R_ALL"),
    _mi("MI_CLFLUSH", 0x27, bits=10, addr_dwords=(1,), ggtt_bit=_GGTT22,
        privilege=_P.GGTT_PRIVILEGED, ex=_NE),
    _mi("MI_REPORT_PERF_COUNT", 0x28, bits=6, valid_lengths=(4,), addr_dwords=(1,),
        ggtt_bit=GgttBit(1, 0), privilege=_P.GGTT_PRIVILEGED),
    _mi("MI_LOAD_REGISTER_MEM", 0x29, valid_lengths=(4,), addr_dwords=(2,), ggtt_bit=_GGTT22,
        privilege=_P.GGTT_PRIVILEGED, ex=_X),
    _mi("MI_LOAD_REGISTER_REG", 0x2A, valid_lengths=(3,), ex=_X),
    _mi("MI_RS_STORE_DATA_IMM", 0x2B, R_RCS, valid_lengths=(4,), addr_dwords=(1,)),
    _mi("MI_LOAD_URB_MEM", 0x2C, R_RCS, valid_lengths=(4,), addr_dwords=(2,)),
    _mi("MI_STORE_URB_MEM", 0x2D, R_RCS, addr_dwords=(2,), upstream_name="MI_STORE_URM_MEM"),
    _mi("MI_COPY_MEM_MEM", 0x2E, valid_lengths=(5,), addr_dwords=(1, 3),
        ggtt_bit=GgttBit(0, 21), privilege=_P.GGTT_PRIVILEGED, upstream_name="MI_OP_2E"),
    _mi("MI_ATOMIC", 0x2F, valid_lengths=(3, 11), addr_dwords=(1,), ggtt_bit=_GGTT22,
        privilege=_P.GGTT_PRIVILEGED, upstream_name="MI_OP_2F"),
    _mi("MI_BATCH_BUFFER_START", 0x31, valid_lengths=(3,), addr_dwords=(1,),
        ggtt_bit=GgttBit(0, 8, set_means_ggtt=False), privilege=_P.GGTT_PRIVILEGED, ex=_X),
    _mi("MI_CONDITIONAL_BATCH_BUFFER_END", 0x36, valid_lengths=(4,), addr_dwords=(2,),
        ggtt_bit=_GGTT22, privilege=_P.GGTT_PRIVILEGED, ex=_X),
)

#: 2D (blitter) commands, BCS only.
BLT_COMMANDS: tuple[CommandSpec, ...] = (
    _blt("XY_SETUP_BLT", 0x01, (4, 8), ex=_X,
         note="pattern address at dword 8 on GEN8 (upstream: 7)"),
    _blt("XY_SETUP_CLIP_BLT", 0x03, ex=_X),
    _blt("XY_SETUP_MONO_PATTERN_SL_BLT", 0x11, (4,)),
    _blt("XY_PIXEL_BLT", 0x24),
    _blt("XY_SCANLINES_BLT", 0x25),
    _blt("XY_TEXT_BLT", 0x26, (3,)),
    _blt("XY_TEXT_IMMEDIATE_BLT", 0x31),
    _blt("XY_COLOR_BLT", 0x50, (4,), ex=_X),
    _blt("XY_PAT_BLT", 0x51, (4, 5)),
    _blt("XY_MONO_PAT_BLT", 0x52, (4,)),
    _blt("XY_SRC_COPY_BLT", 0x53, (4, 8), ex=_X,
         note="source address at dword 8 on GEN8 (upstream: 7)"),
    _blt("XY_MONO_SRC_COPY_BLT", 0x54, (4, 5)),
    _blt("XY_FULL_BLT", 0x55),
    _blt("XY_FULL_MONO_SRC_BLT", 0x56, (4, 5, 8)),
    _blt("XY_FULL_MONO_PATTERN_BLT", 0x57, (4, 7)),
    _blt("XY_FULL_MONO_PATTERN_MONO_SRC_BLT", 0x58, (4, 5)),
    _blt("XY_MONO_PAT_FIXED_BLT", 0x59, (4,)),
    _blt("XY_MONO_SRC_COPY_IMMEDIATE_BLT", 0x71, (4,)),
    _blt("XY_PAT_BLT_IMMEDIATE", 0x72, (4,)),
    _blt("XY_SRC_COPY_CHROMA_BLT", 0x73, (4, 7)),
    _blt("XY_FULL_IMMEDIATE_PATTERN_BLT", 0x74, (4, 7)),
    _blt("XY_FULL_MONO_SRC_IMMEDIATE_PATTERN_BLT", 0x75, (4, 5)),
    _blt("XY_PAT_CHROMA_BLT", 0x76, (4, 5)),
    _blt("XY_PAT_CHROMA_BLT_IMMEDIATE", 0x77, (4,)),
)

_RCS_VCS_VECS = R_RCS | R_VCS | R_VECS

#: 3D and GPGPU state / primitive commands and the render engine's media commands (RCS).
GFX_COMMANDS: tuple[CommandSpec, ...] = (
    # pipeline-independent state (sub-type 0)
    _gfx("STATE_PREFETCH", 0, 0, 0x03, addr_dwords=(1,), addr_bits=32),
    _gfx("STATE_BASE_ADDRESS", 0, 1, 0x01, addr_dwords=(1, 4, 6, 8, 10),
         note="GEN8 64-bit address positions (Mesa); upstream lists the GEN7 ones"),
    _gfx("STATE_SIP", 0, 1, 0x02),
    _gfx("GPGPU_CSR_BASE_ADDRESS", 0, 1, 0x04, addr_dwords=(1,),
         upstream_name="OP_3D_MEDIA_0_1_4"),
    # sub-type 1: non-pipelined
    _gfx("3DSTATE_VF_STATISTICS", 1, 0, 0x0B, _RCS_VCS_VECS, fixed=1,
         upstream_name="3DSTATE_VF_STATISTICS_GM45",
         note="upstream: R_ALL, but BCS does not decode type 3"),
    _gfx("PIPELINE_SELECT", 1, 1, 0x04, fixed=1),
    # media and GPGPU (sub-type 2) on RCS
    _gfx("MEDIA_VFE_STATE", 2, 0, 0x00, bits=16, addr_dwords=(1,)),
    _gfx("MEDIA_CURBE_LOAD", 2, 0, 0x01, bits=16),
    _gfx("MEDIA_INTERFACE_DESCRIPTOR_LOAD", 2, 0, 0x02, bits=16),
    _gfx("MEDIA_GATEWAY_STATE", 2, 0, 0x03, bits=16),
    _gfx("MEDIA_STATE_FLUSH", 2, 0, 0x04, bits=16),
    _gfx("MEDIA_POOL_STATE", 2, 0, 0x05, bits=16),
    _gfx("MEDIA_OBJECT", 2, 1, 0x00, bits=16, addr_dwords=(3,), addr_bits=32, ex=_NM),
    _gfx("MEDIA_OBJECT_PRT", 2, 1, 0x02, bits=16, ex=_NM),
    _gfx("MEDIA_OBJECT_WALKER", 2, 1, 0x03, bits=16, ex=_NM),
    _gfx("GPGPU_WALKER", 2, 1, 0x05, ex=_NM),
    # 3D state (sub-type 3, opcode 0)
    _gfx("3DSTATE_CLEAR_PARAMS", 3, 0, 0x04),
    _gfx("3DSTATE_DEPTH_BUFFER", 3, 0, 0x05, addr_dwords=(2,)),
    _gfx("3DSTATE_STENCIL_BUFFER", 3, 0, 0x06, addr_dwords=(2,)),
    _gfx("3DSTATE_HIER_DEPTH_BUFFER", 3, 0, 0x07, addr_dwords=(2,)),
    _gfx("3DSTATE_VERTEX_BUFFERS", 3, 0, 0x08),
    _gfx("3DSTATE_VERTEX_ELEMENTS", 3, 0, 0x09),
    _gfx("3DSTATE_INDEX_BUFFER", 3, 0, 0x0A, addr_dwords=(2,)),
    _gfx("3DSTATE_VF", 3, 0, 0x0C),
    _gfx("3DSTATE_MULTISAMPLE", 3, 0, 0x0D),
    _gfx("3DSTATE_CC_STATE_POINTERS", 3, 0, 0x0E),
    _gfx("3DSTATE_SCISSOR_STATE_POINTERS", 3, 0, 0x0F),
    _gfx("3DSTATE_VS", 3, 0, 0x10, addr_dwords=(4,)),
    _gfx("3DSTATE_GS", 3, 0, 0x11, addr_dwords=(4,)),
    _gfx("3DSTATE_CLIP", 3, 0, 0x12),
    _gfx("3DSTATE_SF", 3, 0, 0x13),
    _gfx("3DSTATE_WM", 3, 0, 0x14),
    _gfx("3DSTATE_CONSTANT_VS", 3, 0, 0x15),
    _gfx("3DSTATE_CONSTANT_GS", 3, 0, 0x16),
    _gfx("3DSTATE_CONSTANT_PS", 3, 0, 0x17),
    _gfx("3DSTATE_SAMPLE_MASK", 3, 0, 0x18),
    _gfx("3DSTATE_CONSTANT_HS", 3, 0, 0x19),
    _gfx("3DSTATE_CONSTANT_DS", 3, 0, 0x1A),
    _gfx("3DSTATE_HS", 3, 0, 0x1B, addr_dwords=(5,)),
    _gfx("3DSTATE_TE", 3, 0, 0x1C),
    _gfx("3DSTATE_DS", 3, 0, 0x1D, addr_dwords=(4,)),
    _gfx("3DSTATE_STREAMOUT", 3, 0, 0x1E),
    _gfx("3DSTATE_SBE", 3, 0, 0x1F),
    _gfx("3DSTATE_PS", 3, 0, 0x20, addr_dwords=(4,)),
    _gfx("3DSTATE_VIEWPORT_STATE_POINTERS_SF_CLIP", 3, 0, 0x21),
    _gfx("3DSTATE_VIEWPORT_STATE_POINTERS_CC", 3, 0, 0x23),
    _gfx("3DSTATE_BLEND_STATE_POINTERS", 3, 0, 0x24),
    _gfx("3DSTATE_DEPTH_STENCIL_STATE_POINTERS", 3, 0, 0x25),
    _gfx("3DSTATE_BINDING_TABLE_POINTERS_VS", 3, 0, 0x26),
    _gfx("3DSTATE_BINDING_TABLE_POINTERS_HS", 3, 0, 0x27),
    _gfx("3DSTATE_BINDING_TABLE_POINTERS_DS", 3, 0, 0x28),
    _gfx("3DSTATE_BINDING_TABLE_POINTERS_GS", 3, 0, 0x29),
    _gfx("3DSTATE_BINDING_TABLE_POINTERS_PS", 3, 0, 0x2A),
    _gfx("3DSTATE_SAMPLER_STATE_POINTERS_VS", 3, 0, 0x2B),
    _gfx("3DSTATE_SAMPLER_STATE_POINTERS_HS", 3, 0, 0x2C),
    _gfx("3DSTATE_SAMPLER_STATE_POINTERS_DS", 3, 0, 0x2D),
    _gfx("3DSTATE_SAMPLER_STATE_POINTERS_GS", 3, 0, 0x2E),
    _gfx("3DSTATE_SAMPLER_STATE_POINTERS_PS", 3, 0, 0x2F),
    _gfx("3DSTATE_URB_VS", 3, 0, 0x30),
    _gfx("3DSTATE_URB_HS", 3, 0, 0x31),
    _gfx("3DSTATE_URB_DS", 3, 0, 0x32),
    _gfx("3DSTATE_URB_GS", 3, 0, 0x33),
    _gfx("3DSTATE_GATHER_CONSTANT_VS", 3, 0, 0x34),
    _gfx("3DSTATE_GATHER_CONSTANT_GS", 3, 0, 0x35),
    _gfx("3DSTATE_GATHER_CONSTANT_HS", 3, 0, 0x36),
    _gfx("3DSTATE_GATHER_CONSTANT_DS", 3, 0, 0x37),
    _gfx("3DSTATE_GATHER_CONSTANT_PS", 3, 0, 0x38),
    _gfx("3DSTATE_DX9_CONSTANTF_VS", 3, 0, 0x39, bits=11),
    _gfx("3DSTATE_DX9_CONSTANTF_PS", 3, 0, 0x3A, bits=11),
    _gfx("3DSTATE_DX9_CONSTANTI_VS", 3, 0, 0x3B),
    _gfx("3DSTATE_DX9_CONSTANTI_PS", 3, 0, 0x3C),
    _gfx("3DSTATE_DX9_CONSTANTB_VS", 3, 0, 0x3D),
    _gfx("3DSTATE_DX9_CONSTANTB_PS", 3, 0, 0x3E),
    _gfx("3DSTATE_DX9_LOCAL_VALID_VS", 3, 0, 0x3F),
    _gfx("3DSTATE_DX9_LOCAL_VALID_PS", 3, 0, 0x40),
    _gfx("3DSTATE_DX9_GENERATE_ACTIVE_VS", 3, 0, 0x41),
    _gfx("3DSTATE_DX9_GENERATE_ACTIVE_PS", 3, 0, 0x42),
    _gfx("3DSTATE_BINDING_TABLE_EDIT_VS", 3, 0, 0x43, bits=9),
    _gfx("3DSTATE_BINDING_TABLE_EDIT_GS", 3, 0, 0x44, bits=9),
    _gfx("3DSTATE_BINDING_TABLE_EDIT_HS", 3, 0, 0x45, bits=9),
    _gfx("3DSTATE_BINDING_TABLE_EDIT_DS", 3, 0, 0x46, bits=9),
    _gfx("3DSTATE_BINDING_TABLE_EDIT_PS", 3, 0, 0x47, bits=9),
    _gfx("3DSTATE_VF_INSTANCING", 3, 0, 0x49),
    _gfx("3DSTATE_VF_SGVS", 3, 0, 0x4A),
    _gfx("3DSTATE_VF_TOPOLOGY", 3, 0, 0x4B),
    _gfx("3DSTATE_WM_CHROMAKEY", 3, 0, 0x4C),
    _gfx("3DSTATE_PS_BLEND", 3, 0, 0x4D),
    _gfx("3DSTATE_WM_DEPTH_STENCIL", 3, 0, 0x4E),
    _gfx("3DSTATE_PS_EXTRA", 3, 0, 0x4F),
    _gfx("3DSTATE_RASTER", 3, 0, 0x50),
    _gfx("3DSTATE_SBE_SWIZ", 3, 0, 0x51),
    _gfx("3DSTATE_WM_HZ_OP", 3, 0, 0x52),
    # 3D state (sub-type 3, opcode 1)
    _gfx("3DSTATE_DRAWING_RECTANGLE", 3, 1, 0x00),
    _gfx("3DSTATE_SAMPLER_PALETTE_LOAD0", 3, 1, 0x02),
    _gfx("3DSTATE_CHROMA_KEY", 3, 1, 0x04),
    _gfx("3DSTATE_POLY_STIPPLE_OFFSET", 3, 1, 0x06),
    _gfx("3DSTATE_POLY_STIPPLE_PATTERN", 3, 1, 0x07),
    _gfx("3DSTATE_LINE_STIPPLE", 3, 1, 0x08),
    _gfx("3DSTATE_AA_LINE_PARAMETERS", 3, 1, 0x0A, upstream_name="3DSTATE_AA_LINE_PARAMS"),
    _gfx("3DSTATE_GS_SVB_INDEX", 3, 1, 0x0B),
    _gfx("3DSTATE_SAMPLER_PALETTE_LOAD1", 3, 1, 0x0C),
    _gfx("3DSTATE_MONOFILTER_SIZE", 3, 1, 0x11),
    _gfx("3DSTATE_PUSH_CONSTANT_ALLOC_VS", 3, 1, 0x12),
    _gfx("3DSTATE_PUSH_CONSTANT_ALLOC_HS", 3, 1, 0x13),
    _gfx("3DSTATE_PUSH_CONSTANT_ALLOC_DS", 3, 1, 0x14),
    _gfx("3DSTATE_PUSH_CONSTANT_ALLOC_GS", 3, 1, 0x15),
    _gfx("3DSTATE_PUSH_CONSTANT_ALLOC_PS", 3, 1, 0x16),
    _gfx("3DSTATE_SO_DECL_LIST", 3, 1, 0x17, bits=9),
    _gfx("3DSTATE_SO_BUFFER", 3, 1, 0x18, addr_dwords=(2, 5),
         note="GEN8 64-bit address positions (Mesa); upstream lists 2 and 4"),
    _gfx("3DSTATE_BINDING_TABLE_POOL_ALLOC", 3, 1, 0x19, addr_dwords=(1,)),
    _gfx("3DSTATE_GATHER_POOL_ALLOC", 3, 1, 0x1A, addr_dwords=(1,)),
    _gfx("3DSTATE_DX9_CONSTANT_BUFFER_POOL_ALLOC", 3, 1, 0x1B, addr_dwords=(1,)),
    _gfx("3DSTATE_SAMPLE_PATTERN", 3, 1, 0x1C),
    # pipelined commands
    _gfx("PIPE_CONTROL", 3, 2, 0x00, valid_lengths=(6,), addr_dwords=(2,),
         ggtt_bit=GgttBit(1, 24), privilege=_P.GGTT_PRIVILEGED,
         note="exactly 6 dwords, the GEN8 layout; upstream reads dwords 2-3 at any length", ex=_X),
    _gfx("3DPRIMITIVE", 3, 3, 0x00, ex=_NM),
)

#: video codec (MFX) commands, VCS and VCS2.
MFX_COMMANDS: tuple[CommandSpec, ...] = (
    _mfx("MFX_PIPE_MODE_SELECT", 2, 0, 0, 0),
    _mfx("MFX_SURFACE_STATE", 2, 0, 0, 1),
    _mfx("MFX_PIPE_BUF_ADDR_STATE", 2, 0, 0, 2),
    _mfx("MFX_IND_OBJ_BASE_ADDR_STATE", 2, 0, 0, 3),
    _mfx("MFX_BSP_BUF_BASE_ADDR_STATE", 2, 0, 0, 4, addr_dwords=(1, 3, 5)),
    _mfx("MFX_2_0_0_5", 2, 0, 0, 5, upstream_name="OP_2_0_0_5"),
    _mfx("MFX_STATE_POINTER", 2, 0, 0, 6),
    _mfx("MFX_QM_STATE", 2, 0, 0, 7),
    _mfx("MFX_FQM_STATE", 2, 0, 0, 8),
    _mfx("MFX_PAK_INSERT_OBJECT", 2, 0, 2, 8, ex=_NM),
    _mfx("MFX_STITCH_OBJECT", 2, 0, 2, 0xA, ex=_NM),
    _mfx("MFD_IT_OBJECT", 2, 0, 1, 9, ex=_NM),
    _mfx("MFX_WAIT", 1, 0, 0, 0, fixed=1,
         note="one dword as in i915's parser; upstream: 6-bit length field"),
    _mfx("MFX_AVC_IMG_STATE", 2, 1, 0, 0),
    _mfx("MFX_AVC_QM_STATE", 2, 1, 0, 1),
    _mfx("MFX_AVC_DIRECTMODE_STATE", 2, 1, 0, 2),
    _mfx("MFX_AVC_SLICE_STATE", 2, 1, 0, 3),
    _mfx("MFX_AVC_REF_IDX_STATE", 2, 1, 0, 4),
    _mfx("MFX_AVC_WEIGHTOFFSET_STATE", 2, 1, 0, 5),
    _mfx("MFD_AVC_PICID_STATE", 2, 1, 1, 5),
    _mfx("MFD_AVC_DPB_STATE", 2, 1, 1, 6),
    _mfx("MFD_AVC_SLICEADDR", 2, 1, 1, 7, addr_dwords=(2,), ex=_NM),
    _mfx("MFD_AVC_BSD_OBJECT", 2, 1, 1, 8, ex=_NM),
    _mfx("MFC_AVC_PAK_OBJECT", 2, 1, 2, 9, ex=_NM),
    _mfx("MFX_VC1_PRED_PIPE_STATE", 2, 2, 0, 1),
    _mfx("MFX_VC1_DIRECTMODE_STATE", 2, 2, 0, 2),
    _mfx("MFD_VC1_SHORT_PIC_STATE", 2, 2, 1, 0),
    _mfx("MFD_VC1_LONG_PIC_STATE", 2, 2, 1, 1),
    _mfx("MFD_VC1_BSD_OBJECT", 2, 2, 1, 8, ex=_NM),
    _mfx("MFX_MPEG2_PIC_STATE", 2, 3, 0, 0),
    _mfx("MFX_MPEG2_QM_STATE", 2, 3, 0, 1),
    _mfx("MFD_MPEG2_BSD_OBJECT", 2, 3, 1, 8, ex=_NM),
    _mfx("MFC_MPEG2_SLICEGROUP_STATE", 2, 3, 2, 3),
    _mfx("MFC_MPEG2_PAK_OBJECT", 2, 3, 2, 9, ex=_NM),
    _mfx("MFX_2_6_0_0", 2, 6, 0, 0, bits=16),
    _mfx("MFX_2_6_0_8", 2, 6, 0, 8, bits=16, ex=_NM),
    _mfx("MFX_2_6_0_9", 2, 6, 0, 9, bits=16, ex=_NM),
    _mfx("MFX_JPEG_PIC_STATE", 2, 7, 0, 0),
    _mfx("MFX_JPEG_HUFF_TABLE_STATE", 2, 7, 0, 2),
    _mfx("MFD_JPEG_BSD_OBJECT", 2, 7, 1, 8, ex=_NM),
)

#: video enhancement (VEBOX) commands, VECS.
VEBOX_COMMANDS: tuple[CommandSpec, ...] = (
    _mfx("VEBOX_SURFACE_STATE", 2, 4, 0, 0, R_VECS),
    _mfx("VEBOX_STATE", 2, 4, 0, 2, R_VECS),
    _mfx("VEB_DI_IECP", 2, 4, 0, 3, R_VECS, ex=_NM),
)


#: the whole table.
COMMANDS: tuple[CommandSpec, ...] = (
    MI_COMMANDS + BLT_COMMANDS + GFX_COMMANDS + MFX_COMMANDS + VEBOX_COMMANDS
)

#: name -> command.
BY_NAME: Mapping[str, CommandSpec] = MappingProxyType({c.name: c for c in COMMANDS})


def _index(engine: int) -> Mapping[int, CommandSpec]:
    """The decode table of ``engine``: key -> command; refuses an ambiguous table."""
    out: dict[int, CommandSpec] = {}
    for c in COMMANDS:
        if not c.accepts(engine):
            continue
        if c.key in out:
            raise AssertionError(f"{c.name} and {out[c.key].name} share an opcode on "
                                 f"engine {engine}")
        if c.min_length > c.max_length:
            raise AssertionError(f"{c.name}: minimum length {c.min_length} > {c.max_length}")
        out[c.key] = c
    return MappingProxyType(out)


if len(BY_NAME) != len(COMMANDS):
    raise AssertionError("duplicate command names in the command table")
_BY_ENGINE: dict[int, Mapping[int, CommandSpec]] = {e: _index(e) for e in ENGINES}


def for_engine(engine: int) -> Mapping[int, CommandSpec]:
    """The decode table of one engine (the commands it accepts), key -> command."""
    return _BY_ENGINE[engine]


def lookup(engine: int, header: int) -> CommandSpec | None:
    """The command ``header`` names on ``engine``, or None (an unknown command)."""
    return _BY_ENGINE[engine].get(key_of(header))


def header(name: str, length: int | None = None, flags: int = 0) -> int:
    """The header dword of command ``name`` with ``flags`` OR-ed in; a variable
    command needs its total ``length`` in dwords (the length field is set)."""
    spec = BY_NAME[name]
    h = spec.header
    if spec.fixed_length is not None:
        if length not in (None, spec.fixed_length):
            raise ValueError(f"{name} is always {spec.fixed_length} dword(s), not {length}")
        return h | flags
    if flags & spec.length_mask:
        raise ValueError(f"flags {flags:#x} overlap {name}'s dword-length field")
    if length is None or not LENGTH_BIAS <= length <= spec.length_mask + LENGTH_BIAS:
        raise ValueError(f"{name} needs a length of {LENGTH_BIAS}.."
                         f"{spec.length_mask + LENGTH_BIAS} dwords, got {length}")
    return h | flags | (length - LENGTH_BIAS)


# --- field encodings of the executed commands (i915 intel_gpu_commands.h, genxml) -------------
#: header bit 22: "Use Global GTT" / "Memory Type" of the MI memory commands.
MI_USE_GGTT = 1 << 22
#: MI_NOOP: write bits 21:0 to RING_NOPID.
MI_NOOP_WRITE_ID = 1 << 22
MI_NOOP_ID_MASK = (1 << 22) - 1
#: MI_ARB_ON_OFF bit 0: arbitration enable.
MI_ARB_ENABLE = 1 << 0
#: MI_BATCH_BUFFER_START
MI_BB_SECOND_LEVEL = 1 << 22
MI_BB_PPGTT = 1 << 8  # address space indicator: 1 = PPGTT, 0 = GGTT (privileged)
#: MI_STORE_DATA_IMM bit 21: store a qword.
MI_SDI_STORE_QWORD = 1 << 21
#: MI_STORE_DATA_INDEX bit 21: index into the per-process HWSP instead of the engine's.
MI_SDX_USE_PPHWSP = 1 << 21
MI_SDX_OFFSET_MASK = 0xFFC
#: MI_LOAD_REGISTER_IMM bits 11:8: byte write disables.
MI_LRI_BYTE_DISABLE_SHIFT = 8
MI_LRI_BYTE_DISABLE_MASK = 0xF
#: register offsets in LRI/LRM/LRR/SRM (bits 22:2).
MI_REG_OFFSET_MASK = 0x7F_FFFC
#: MI_FLUSH_DW
MI_FLUSH_DW_STORE_INDEX = 1 << 21
MI_FLUSH_DW_OP_SHIFT = 14
MI_FLUSH_DW_NOTIFY = 1 << 8
MI_FLUSH_DW_INVALIDATE_TLB = 1 << 18
#: in dword 1 (the address): the destination is a GGTT address.
MI_FLUSH_DW_USE_GTT = 1 << 2
MI_FLUSH_DW_ADDR_MASK = 0xFFFF_FFF8
#: post-sync operations (MI_FLUSH_DW and PIPE_CONTROL)
POST_SYNC_NONE = 0
POST_SYNC_IMMEDIATE = 1
POST_SYNC_DEPTH_COUNT = 2
POST_SYNC_TIMESTAMP = 3
#: PIPE_CONTROL, dword 1
PIPE_CONTROL_GLOBAL_GTT = 1 << 24
PIPE_CONTROL_LRI_POST_SYNC = 1 << 23
PIPE_CONTROL_STORE_DATA_INDEX = 1 << 21
PIPE_CONTROL_POST_SYNC_SHIFT = 14
PIPE_CONTROL_NOTIFY = 1 << 8
PIPE_CONTROL_TLB_INVALIDATE = 1 << 18
#: MI_SEMAPHORE_WAIT
MI_SEMAPHORE_POLL = 1 << 15
MI_SEMAPHORE_COMPARE_SHIFT = 12
SAD_GREATER_THAN_SDD = 0
SAD_GREATER_THAN_OR_EQUAL_SDD = 1
SAD_LESS_THAN_SDD = 2
SAD_LESS_THAN_OR_EQUAL_SDD = 3
SAD_EQUAL_SDD = 4
SAD_NOT_EQUAL_SDD = 5
#: MI_CONDITIONAL_BATCH_BUFFER_END bit 21: compare semaphore (data at the address vs inline).
MI_CBBE_COMPARE_SEMAPHORE = 1 << 21
#: graphics addresses in commands: dword aligned, up to 48 bits.
GM_ADDR_MASK = (1 << 48) - 4

# 2D (BR00 .. BR13, facts 8.3; Mesa intel_blit.c)
XY_BLT_WRITE_ALPHA = 1 << 21
XY_BLT_WRITE_RGB = 1 << 20
XY_SRC_TILED = 1 << 15
XY_DST_TILED = 1 << 11
BR13_PITCH_MASK = 0xFFFF
BR13_ROP_SHIFT = 16
BR13_DEPTH_SHIFT = 24
BR13_DEPTH_MASK = 0x3
BR13_CLIP_ENABLE = 1 << 30
#: color depth code -> bytes per pixel (8 bit, 565, 1555, 32 bit)
BR13_DEPTH_CPP = (1, 2, 2, 4)
ROP_BLACKNESS = 0x00
ROP_SRCCOPY = 0xCC
ROP_PATCOPY = 0xF0
ROP_WHITENESS = 0xFF
