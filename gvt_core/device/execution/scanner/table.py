"""The scanner's own flags per command: which audit checks it, and upstream's ``cmd_info`` flags.

The hardware facts of a command (opcode, engines, length rule, address
dwords, GGTT bit, privilege, what the software engine does with it) live in
one table, :mod:`gvt_core.hw.engine.commands`, that the engines decode with
too; this module only adds what GVT-g decides about them. Every entry of the
hardware table has an audit here (:data:`AUDITS`, ``NONE`` for most); a
command with no entry there is unknown, and an unknown command is rejected.

Where the audit departs from upstream's treatment (facts 8.2, 8.4) the reason
is in :data:`NOTES`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from gvt_core.hw.engine import commands as C


class Audit(enum.Enum):
    """Which audit of :mod:`.audit` checks the command beyond its length."""

    NONE = "none"
    FORBIDDEN = "forbidden"  # never allowed from a guest (MI_UPDATE_GTT, MI_SET_CONTEXT)
    BATCH_START = "batch-start"  # walker: nesting, address space, relocation
    BATCH_END = "batch-end"  # walker: end of the current batch
    USER_INTERRUPT = "user-interrupt"
    WAIT_FOR_EVENT = "wait-for-event"
    DISPLAY_FLIP = "display-flip"
    LOAD_REGISTER_IMM = "lri"
    LOAD_REGISTER_REG = "lrr"
    LOAD_REGISTER_MEM = "lrm"
    STORE_REGISTER_MEM = "srm"
    STORE_DATA_IMM = "sdi"
    STORE_DATA_INDEX = "sdi-index"
    FLUSH_DW = "flush-dw"
    PIPE_CONTROL = "pipe-control"
    SEMAPHORE_WAIT = "semaphore-wait"
    CONDITIONAL_BATCH_END = "cond-bb-end"
    REPORT_PERF_COUNT = "report-perf-count"
    CLFLUSH = "clflush"
    ATOMIC = "atomic"
    COPY_MEM_MEM = "copy-mem-mem"


class UpstreamFlag(enum.IntFlag):
    """The flags of upstream's ``cmd_info`` entry, kept for reference."""

    NONE = 0
    LEN_CONST = 1  # F_LEN_CONST
    LEN_VAR_FIXED = 2  # F_LEN_VAR_FIXED: variable field, one valid value
    IP_ADVANCE_CUSTOM = 4  # F_IP_ADVANCE_CUSTOM: the handler moves the IP
    POST_HANDLE = 8  # F_POST_HANDLE (older kernels): handled after the scan


_A = Audit
#: the audit of each command that has one (by hardware name); every other command: NONE.
_AUDIT_BY_NAME: dict[str, Audit] = {
    "MI_USER_INTERRUPT": _A.USER_INTERRUPT,
    "MI_WAIT_FOR_EVENT": _A.WAIT_FOR_EVENT,
    "MI_BATCH_BUFFER_END": _A.BATCH_END,
    "MI_DISPLAY_FLIP": _A.DISPLAY_FLIP,
    "MI_SET_CONTEXT": _A.FORBIDDEN,
    "MI_SEMAPHORE_WAIT": _A.SEMAPHORE_WAIT,
    "MI_STORE_DATA_IMM": _A.STORE_DATA_IMM,
    "MI_STORE_DATA_INDEX": _A.STORE_DATA_INDEX,
    "MI_LOAD_REGISTER_IMM": _A.LOAD_REGISTER_IMM,
    "MI_UPDATE_GTT": _A.FORBIDDEN,
    "MI_STORE_REGISTER_MEM": _A.STORE_REGISTER_MEM,
    "MI_FLUSH_DW": _A.FLUSH_DW,
    "MI_CLFLUSH": _A.CLFLUSH,
    "MI_REPORT_PERF_COUNT": _A.REPORT_PERF_COUNT,
    "MI_LOAD_REGISTER_MEM": _A.LOAD_REGISTER_MEM,
    "MI_LOAD_REGISTER_REG": _A.LOAD_REGISTER_REG,
    "MI_COPY_MEM_MEM": _A.COPY_MEM_MEM,
    "MI_ATOMIC": _A.ATOMIC,
    "MI_BATCH_BUFFER_START": _A.BATCH_START,
    "MI_CONDITIONAL_BATCH_BUFFER_END": _A.CONDITIONAL_BATCH_END,
    "PIPE_CONTROL": _A.PIPE_CONTROL,
}

_U = UpstreamFlag
#: upstream's flags where they are not simply F_LEN_CONST for a fixed-length command.
_UPSTREAM_BY_NAME: dict[str, UpstreamFlag] = {
    "MI_BATCH_BUFFER_END": _U.LEN_CONST | _U.IP_ADVANCE_CUSTOM,
    "MI_DISPLAY_FLIP": _U.POST_HANDLE,
    "MI_SEMAPHORE_MBOX": _U.LEN_VAR_FIXED,
    "MI_URB_CLEAR": _U.LEN_VAR_FIXED,
    "MI_SEMAPHORE_SIGNAL": _U.LEN_VAR_FIXED,
    "MI_SEMAPHORE_WAIT": _U.LEN_VAR_FIXED,
    "MI_STORE_REGISTER_MEM": _U.LEN_VAR_FIXED,
    "MI_REPORT_PERF_COUNT": _U.LEN_VAR_FIXED,
    "MI_LOAD_REGISTER_MEM": _U.LEN_VAR_FIXED,
    "MI_LOAD_REGISTER_REG": _U.LEN_VAR_FIXED,
    "MI_RS_STORE_DATA_IMM": _U.LEN_VAR_FIXED,
    "MI_LOAD_URB_MEM": _U.LEN_VAR_FIXED,
    "MI_COPY_MEM_MEM": _U.LEN_VAR_FIXED,
    "MI_BATCH_BUFFER_START": _U.IP_ADVANCE_CUSTOM,
    "MI_CONDITIONAL_BATCH_BUFFER_END": _U.LEN_VAR_FIXED,
    "MFX_WAIT": _U.NONE,
}

#: where the scanner's treatment departs from upstream's (facts 8.2, 8.4), and why.
NOTES: Mapping[str, str] = MappingProxyType({
    "MI_SEMAPHORE_WAIT": "audited (GGTT address in the partition); upstream rejects it",
    "MI_STORE_DATA_INDEX": "accepted in privileged buffers (the index cannot leave the "
                           "status page); upstream rejects it",
    "MI_CLFLUSH": "audited (flushed range in the partition); upstream rejects it",
    "MI_REPORT_PERF_COUNT": "audited (the report in the partition); upstream rejects it",
    "MI_COPY_MEM_MEM": "audited (both GGTT addresses in the partition); upstream rejects it",
    "MI_CONDITIONAL_BATCH_BUFFER_END": "audited (GGTT compare address in the partition); "
                                       "upstream rejects it",
    "MI_SET_CONTEXT": "rejected: legacy ring-buffer mode only; upstream has no entry (unknown)",
})

for _name in (*_AUDIT_BY_NAME, *_UPSTREAM_BY_NAME, *NOTES):
    if _name not in C.BY_NAME:
        raise AssertionError(f"scanner flags name {_name}, which the command table lacks")

#: per entry of :data:`gvt_core.hw.engine.commands.COMMANDS`, in its order.
AUDITS: tuple[Audit, ...] = tuple(_AUDIT_BY_NAME.get(c.name, Audit.NONE) for c in C.COMMANDS)


def audit_of(spec: C.CommandSpec) -> Audit:
    return _AUDIT_BY_NAME.get(spec.name, Audit.NONE)


def upstream_flags(spec: C.CommandSpec) -> UpstreamFlag:
    """Upstream's ``cmd_info`` flags of ``spec``."""
    default = _U.LEN_CONST if spec.fixed_length is not None else _U.NONE
    return _UPSTREAM_BY_NAME.get(spec.name, default)
