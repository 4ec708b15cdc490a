"""Why the scanner refuses a workload, and where.

A rejection is a value, not an exception: the scanner returns it, the workload
fails for its own vGPU only (facts 7.5: the vGPU's queue is cleaned, no
completion is signalled, the guest detects a hang; -EBADRQC / -EFAULT put the
vGPU in failsafe). :attr:`RejectReason.errno` gives the upstream error each
reason corresponds to, so the execution pipeline can apply that policy.
"""

from __future__ import annotations

import enum
import errno

import attrs


class RejectReason(enum.Enum):
    """One reason code per audit failure, counted per vGPU."""

    #: no table entry for the header on this engine.
    UNKNOWN_COMMAND = "unknown-command"
    #: the header's length is not one the command allows.
    BAD_LENGTH = "bad-length"
    #: the last command of the ring section runs past its tail.
    TRUNCATED_COMMAND = "truncated-command"
    #: a reserved or undefined field value (plane code, data size, BB_START offset mode).
    MALFORMED_COMMAND = "malformed-command"
    #: a command a guest may never send (MI_UPDATE_GTT, MI_SET_CONTEXT).
    FORBIDDEN_COMMAND = "forbidden-command"
    #: a privileged-only command, or a GGTT / notify / register-writing form, in a
    #: non-privileged (PPGTT) batch.
    PRIVILEGED_COMMAND = "privileged-command"
    #: a GGTT access (or a status-page index) outside the vGPU's graphics memory.
    GGTT_OUT_OF_PARTITION = "ggtt-out-of-partition"
    #: a register outside MMIO, without the command-access flag, or with BDW's
    #: inhibit bits on a non-render engine.
    REGISTER_NOT_ALLOWED = "register-not-allowed"
    #: MI_DISPLAY_FLIP / MI_WAIT_FOR_EVENT on a pipe or plane the vGPU does not own.
    DISPLAY_NOT_OWNED = "display-not-owned"
    #: MI_BATCH_BUFFER_START / END where the nesting rules forbid it.
    BAD_BATCH_NESTING = "bad-batch-nesting"
    #: a batch buffer in graphics memory nobody mapped.
    BATCH_FETCH_FAULT = "batch-fetch-fault"
    #: the ring buffer is not inside the vGPU's graphics memory.
    RING_OUT_OF_PARTITION = "ring-out-of-partition"
    #: more commands than the per-workload budget.
    BUDGET_EXCEEDED = "budget-exceeded"
    #: more batch buffers or shadow bytes than a workload may have.
    SHADOW_LIMIT = "shadow-limit"
    #: the host could not allocate shadow memory (counted against the vGPU, not its fault).
    SHADOW_ALLOC_FAILED = "shadow-alloc-failed"

    @property
    def errno(self) -> int:
        """The error upstream's scanner returns for the same failure."""
        return _ERRNO[self]


_ERRNO: dict[RejectReason, int] = {
    RejectReason.UNKNOWN_COMMAND: errno.EBADRQC,
    RejectReason.BAD_LENGTH: errno.EFAULT,
    RejectReason.TRUNCATED_COMMAND: errno.EFAULT,
    RejectReason.MALFORMED_COMMAND: errno.EBADRQC,
    RejectReason.FORBIDDEN_COMMAND: errno.EBADRQC,
    RejectReason.PRIVILEGED_COMMAND: errno.EPERM,
    RejectReason.GGTT_OUT_OF_PARTITION: errno.EFAULT,
    RejectReason.REGISTER_NOT_ALLOWED: errno.EBADRQC,
    RejectReason.DISPLAY_NOT_OWNED: errno.EBADRQC,
    RejectReason.BAD_BATCH_NESTING: errno.EFAULT,
    RejectReason.BATCH_FETCH_FAULT: errno.EFAULT,
    RejectReason.RING_OUT_OF_PARTITION: errno.EINVAL,
    RejectReason.BUDGET_EXCEEDED: errno.EFAULT,
    RejectReason.SHADOW_LIMIT: errno.ENOMEM,
    RejectReason.SHADOW_ALLOC_FAILED: errno.ENOMEM,
}


class BufferKind(enum.Enum):
    RING = "ring"
    BATCH = "batch"


@attrs.frozen
class ScanRejection:
    """The first command (in walk order) that failed, and why."""

    reason: RejectReason
    engine: int
    detail: str
    #: the buffer holding the command: the ring section, or a batch buffer.
    buffer: BufferKind = BufferKind.RING
    #: for a batch: "ggtt" or "ppgtt", its start address and nesting level (1 or 2).
    space: str = "ggtt"
    buffer_gma: int = 0
    level: int = 0
    #: dword index of the command in its buffer, and its guest graphics address.
    offset: int = 0
    gma: int = 0
    #: the command's table name and header dword, when a command was decoded.
    command: str | None = None
    header: int = 0
    #: commands decoded before the scan stopped (the offending one included if it decoded).
    commands: int = 0

    def __str__(self) -> str:
        where = (
            "ring" if self.buffer is BufferKind.RING
            else f"level-{self.level} {self.space.upper()} batch at {self.buffer_gma:#x}"
        )
        what = self.command or f"header {self.header:#010x}"
        return (
            f"command rejected ({self.reason.value}) on engine {self.engine}: {what} at "
            f"{where} + dword {self.offset} (gma {self.gma:#x}): {self.detail}"
        )
