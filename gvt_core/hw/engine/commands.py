"""GEN8 command definitions: one data table, named as the hardware documentation names them.

A command is identified by the top bits of its header dword (facts 8.1):
the command type in bits 31:29, then a type-specific opcode. :func:`key_of`
folds that into one integer, the same for every engine:

* MI (type 0): ``header >> 23`` (type + 6-bit opcode, 0..63);
* 2D (type 2): ``header >> 22`` (type + 7-bit opcode, 0x200..0x27F);
* 3D / media (type 3): ``header >> 16`` (type, sub-type, opcode, sub-opcode,
  0x6000..0x7FFF).

Each :class:`CommandSpec` carries what both the software engines and the
command scanner (issue 11) need: the engines that accept it, its length rule
(fixed, or the header's low ``len_bits`` plus a bias of 2), the (dword,
bit) that selects the global GTT for its memory operand, the dwords that hold
graphics addresses, whether it is privileged (refused in non-privileged
batches by the scanner), and how the software engine treats it
(:class:`Execution`). Opcodes and lengths come from the GVT-g table
(facts 8.2, 8.3) and Mesa's GEN8 genxml; the scanner grows this table into
its full decode table.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType

import attrs

from gvt_core.hw import regs

# --- command types (bits 31:29) ------------------------------------------------------
CMD_TYPE_SHIFT = 29
CMD_TYPE_MI = 0
CMD_TYPE_2D = 2
CMD_TYPE_3D = 3
MI_OPCODE_SHIFT = 23
TWO_D_OPCODE_SHIFT = 22
THREE_D_KEY_SHIFT = 16
#: variable-length commands: length in dwords = (header & mask) + this bias.
LENGTH_BIAS = 2

# --- engines (bit per engine id) ---------------------------------------------------------
R_RCS = 1 << regs.ENGINE_RCS
R_BCS = 1 << regs.ENGINE_BCS
R_VCS = 1 << regs.ENGINE_VCS
R_VCS2 = 1 << regs.ENGINE_VCS2
R_VECS = 1 << regs.ENGINE_VECS
R_ALL = R_RCS | R_BCS | R_VCS | R_VCS2 | R_VECS

# --- flags --------------------------------------------------------------------------------
#: privileged: only allowed in the ring and privileged (GGTT) batch buffers.
F_PRIVILEGED = 1 << 0
#: ends the current batch buffer (or the workload in the ring).
F_BATCH_END = 1 << 1
#: starts a batch buffer.
F_BATCH_START = 1 << 2
#: writes guest memory.
F_MEM_WRITE = 1 << 3
#: reads guest memory.
F_MEM_READ = 1 << 4
#: accesses registers (LRI/LRM/LRR/SRM).
F_REG_ACCESS = 1 << 5


class Execution(enum.Enum):
    """What the software engine does with a command it decoded."""

    #: executed: its effect on memory, registers, control flow or interrupts is modelled.
    EXECUTED = "executed"
    #: pipeline state or a hint with no effect the model can observe; skipped by length.
    NO_EFFECT = "no-effect"
    #: decoded but not modelled (its effect would be wrong if skipped): an engine fault.
    NOT_MODELLED = "not-modelled"


@attrs.frozen
class CommandSpec:
    """One GEN8 command as the decoder sees it."""

    name: str
    cmd_type: int
    #: MI / 2D opcode, or for 3D the (sub-type, opcode, sub-opcode) packed as the key's low bits.
    opcode: int
    #: engines that accept it (``R_*`` bits).
    engines: int
    #: fixed length in dwords, or 0 for a variable length.
    fixed_length: int = 0
    #: width of the header's dword-length field, for variable lengths.
    len_bits: int = 8
    flags: int = 0
    #: (dword, bit) that selects the global GTT for the memory operand (None: no such bit).
    ggtt_bit: tuple[int, int] | None = None
    #: dword indexes holding the (low dword of a 64-bit) graphics address.
    addr_dwords: tuple[int, ...] = ()
    execution: Execution = Execution.EXECUTED

    @property
    def key(self) -> int:
        if self.cmd_type == CMD_TYPE_MI:
            return self.opcode
        if self.cmd_type == CMD_TYPE_2D:
            return (CMD_TYPE_2D << 7) | self.opcode
        return (CMD_TYPE_3D << 13) | self.opcode

    def length(self, header: int) -> int:
        """Length in dwords of the command whose first dword is ``header``."""
        if self.fixed_length:
            return self.fixed_length
        return (header & ((1 << self.len_bits) - 1)) + LENGTH_BIAS


def key_of(header: int) -> int:
    """The table key of a command header (see the module docstring); -1 for type 1."""
    t = header >> CMD_TYPE_SHIFT
    if t == CMD_TYPE_MI:
        return header >> MI_OPCODE_SHIFT
    if t == CMD_TYPE_2D:
        return header >> TWO_D_OPCODE_SHIFT
    if t == CMD_TYPE_3D:
        return header >> THREE_D_KEY_SHIFT
    return -1


def op_3d(sub_type: int, opcode: int, sub_opcode: int) -> int:
    """The 3D/media opcode field: sub-type 28:27, opcode 26:24, sub-opcode 23:16."""
    return (sub_type << 11) | (opcode << 8) | sub_opcode


def _mi(name: str, opcode: int, engines: int = R_ALL, *, fixed: int = 0, len_bits: int = 8,
        flags: int = 0, ggtt_bit: tuple[int, int] | None = None, addr: tuple[int, ...] = (),
        execution: Execution = Execution.EXECUTED) -> CommandSpec:
    return CommandSpec(name, CMD_TYPE_MI, opcode, engines, fixed, len_bits, flags, ggtt_bit,
                       addr, execution)


def _2d(name: str, opcode: int, *, flags: int = 0, addr: tuple[int, ...] = (),
        execution: Execution = Execution.EXECUTED) -> CommandSpec:
    return CommandSpec(name, CMD_TYPE_2D, opcode, R_BCS, 0, 8, flags, None, addr, execution)


def _3d(name: str, sub_type: int, opcode: int, sub_opcode: int, engines: int = R_RCS, *,
        fixed: int = 0, flags: int = 0, ggtt_bit: tuple[int, int] | None = None,
        addr: tuple[int, ...] = (), execution: Execution = Execution.EXECUTED) -> CommandSpec:
    return CommandSpec(name, CMD_TYPE_3D, op_3d(sub_type, opcode, sub_opcode), engines, fixed,
                       8, flags, ggtt_bit, addr, execution)


_NE = Execution.NO_EFFECT
_NM = Execution.NOT_MODELLED
_W, _R, _P = F_MEM_WRITE, F_MEM_READ, F_PRIVILEGED
_RCS_BCS = R_RCS | R_BCS
#: header bit 22: "Use Global GTT" / "Memory Type" of the MI memory commands.
MI_USE_GGTT = 1 << 22
_HDR_GGTT = (0, 22)

#: The table. MI opcodes as facts 8.2 lists them; lengths from GEN8 genxml.
COMMANDS: tuple[CommandSpec, ...] = (
    _mi("MI_NOOP", 0x00, fixed=1),
    _mi("MI_SET_PREDICATE", 0x01, fixed=1, execution=_NM),
    _mi("MI_USER_INTERRUPT", 0x02, fixed=1),
    _mi("MI_WAIT_FOR_EVENT", 0x03, _RCS_BCS, fixed=1, execution=_NM),
    _mi("MI_FLUSH", 0x04, fixed=1, execution=_NE),
    _mi("MI_ARB_CHECK", 0x05, fixed=1),
    _mi("MI_RS_CONTROL", 0x06, R_RCS, fixed=1, execution=_NE),
    _mi("MI_REPORT_HEAD", 0x07, fixed=1, flags=_W),
    _mi("MI_ARB_ON_OFF", 0x08, fixed=1),
    _mi("MI_URB_ATOMIC_ALLOC", 0x09, R_RCS, fixed=1, execution=_NE),
    _mi("MI_BATCH_BUFFER_END", 0x0A, fixed=1, flags=F_BATCH_END),
    _mi("MI_SUSPEND_FLUSH", 0x0B, fixed=1, execution=_NE),
    _mi("MI_PREDICATE", 0x0C, R_RCS, fixed=1, execution=_NM),
    _mi("MI_TOPOLOGY_FILTER", 0x0D, fixed=1, execution=_NE),
    _mi("MI_SET_APPID", 0x0E, fixed=1, execution=_NE),
    _mi("MI_RS_CONTEXT", 0x0F, R_RCS, fixed=1, execution=_NE),
    _mi("MI_LOAD_SCAN_LINES_INCL", 0x12, _RCS_BCS, len_bits=6, execution=_NM),
    _mi("MI_LOAD_SCAN_LINES_EXCL", 0x13, _RCS_BCS, len_bits=6, execution=_NM),
    _mi("MI_DISPLAY_FLIP", 0x14, _RCS_BCS, len_bits=6, flags=_P),
    _mi("MI_SEMAPHORE_MBOX", 0x16, len_bits=6, execution=_NM),
    _mi("MI_SET_CONTEXT", 0x18, len_bits=6, flags=_P, execution=_NM),
    _mi("MI_URB_CLEAR", 0x19, R_RCS, execution=_NE),
    _mi("MI_MATH", 0x1A, execution=_NM),
    _mi("MI_SEMAPHORE_SIGNAL", 0x1B, execution=_NM),
    _mi("MI_SEMAPHORE_WAIT", 0x1C, flags=_R, ggtt_bit=_HDR_GGTT, addr=(2,)),
    _mi("MI_STORE_DATA_IMM", 0x20, len_bits=10, flags=_W, ggtt_bit=_HDR_GGTT, addr=(1,)),
    _mi("MI_STORE_DATA_INDEX", 0x21, flags=_W),
    _mi("MI_LOAD_REGISTER_IMM", 0x22, flags=F_REG_ACCESS | _P),
    _mi("MI_UPDATE_GTT", 0x23, len_bits=10, flags=_P, execution=_NM),
    _mi("MI_STORE_REGISTER_MEM", 0x24, flags=F_REG_ACCESS | _W, ggtt_bit=_HDR_GGTT, addr=(2,)),
    _mi("MI_FLUSH_DW", 0x26, R_ALL & ~R_RCS, len_bits=6, flags=_W, ggtt_bit=(1, 2), addr=(1,)),
    _mi("MI_CLFLUSH", 0x27, len_bits=10, flags=_P, execution=_NM),
    _mi("MI_REPORT_PERF_COUNT", 0x28, len_bits=6, flags=_W, ggtt_bit=(1, 0), addr=(1,),
        execution=_NM),
    _mi("MI_LOAD_REGISTER_MEM", 0x29, flags=F_REG_ACCESS | _R | _P, ggtt_bit=_HDR_GGTT, addr=(2,)),
    _mi("MI_LOAD_REGISTER_REG", 0x2A, flags=F_REG_ACCESS | _P),
    _mi("MI_RS_STORE_DATA_IMM", 0x2B, R_RCS, flags=_W, addr=(1,), execution=_NM),
    _mi("MI_LOAD_URB_MEM", 0x2C, R_RCS, flags=_R, addr=(2,), execution=_NM),
    _mi("MI_STORE_URB_MEM", 0x2D, R_RCS, flags=_W, addr=(2,), execution=_NM),
    _mi("MI_BATCH_BUFFER_START", 0x31, flags=F_BATCH_START, addr=(1,)),
    _mi("MI_CONDITIONAL_BATCH_BUFFER_END", 0x36, flags=_R | F_BATCH_END, ggtt_bit=_HDR_GGTT,
        addr=(2,)),
    # 2D (BCS); facts 8.3
    _2d("XY_SETUP_BLT", 0x01, addr=(4, 8)),
    _2d("XY_SETUP_CLIP_BLT", 0x03),
    _2d("XY_COLOR_BLT", 0x50, flags=_W, addr=(4,)),
    _2d("XY_PAT_BLT", 0x51, flags=_W | _R, addr=(4, 6), execution=_NM),
    _2d("XY_MONO_PAT_BLT", 0x52, flags=_W, addr=(4,), execution=_NM),
    _2d("XY_SRC_COPY_BLT", 0x53, flags=_W | _R, addr=(4, 8)),
    _2d("XY_MONO_SRC_COPY_BLT", 0x54, flags=_W | _R, addr=(4, 6), execution=_NM),
    # 3D / GPGPU on RCS: PIPE_CONTROL executes, pipeline state has no effect we model
    _3d("PIPE_CONTROL", 3, 2, 0, flags=_W, ggtt_bit=(1, 24), addr=(2,)),
    _3d("PIPELINE_SELECT", 1, 1, 4, fixed=1, execution=_NE),
    _3d("STATE_BASE_ADDRESS", 0, 1, 1, execution=_NE),
    _3d("STATE_SIP", 0, 1, 2, execution=_NE),
    _3d("3DPRIMITIVE", 3, 3, 0, execution=_NM),
)


def _index(table: Iterable[CommandSpec]) -> Mapping[int, CommandSpec]:
    out: dict[int, CommandSpec] = {}
    for spec in table:
        if spec.key in out:
            raise ValueError(f"command table: {spec.name} and {out[spec.key].name} share a key")
        out[spec.key] = spec
    return MappingProxyType(out)


#: key -> command, every engine.
BY_KEY: Mapping[int, CommandSpec] = _index(COMMANDS)
#: name -> command.
BY_NAME: Mapping[str, CommandSpec] = MappingProxyType({c.name: c for c in COMMANDS})


def for_engine(engine: int) -> Mapping[int, CommandSpec]:
    """The decode table of one engine (commands it accepts), key -> spec."""
    bit = 1 << engine
    return MappingProxyType({k: c for k, c in BY_KEY.items() if c.engines & bit})


def header(name: str, length: int | None = None, flags: int = 0) -> int:
    """The header dword of command ``name`` with ``flags`` OR-ed in; a variable
    command needs its total ``length`` in dwords (the length field is set)."""
    spec = BY_NAME[name]
    if spec.cmd_type == CMD_TYPE_MI:
        h = spec.opcode << MI_OPCODE_SHIFT
    elif spec.cmd_type == CMD_TYPE_2D:
        h = (CMD_TYPE_2D << CMD_TYPE_SHIFT) | (spec.opcode << TWO_D_OPCODE_SHIFT)
    else:
        h = (CMD_TYPE_3D << CMD_TYPE_SHIFT) | (spec.opcode << THREE_D_KEY_SHIFT)
    if not spec.fixed_length and flags & ((1 << spec.len_bits) - 1):
        raise ValueError(f"flags {flags:#x} overlap {name}'s dword-length field")
    if spec.fixed_length:
        if length not in (None, spec.fixed_length):
            raise ValueError(f"{name} is always {spec.fixed_length} dword(s), not {length}")
        return h | flags
    if length is None or not LENGTH_BIAS <= length < (1 << spec.len_bits) + LENGTH_BIAS:
        raise ValueError(f"{name} needs a length of {LENGTH_BIAS}.."
                         f"{(1 << spec.len_bits) + 1} dwords, got {length}")
    return h | flags | (length - LENGTH_BIAS)


# --- field encodings of the executed commands (i915 intel_gpu_commands.h, genxml) -------------
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
