"""The audits of facts 8.4: what a decoded command may touch.

Each audit is a function of one command's dwords, its table entry, the
:class:`AuditContext` (the vGPU's graphics-memory partition, its register
whitelist, the display planes it owns) and whether the buffer holding it is
privileged. It returns ``None`` (accepted) or ``(reason, detail)``; side effects
the execution pipeline needs (dword patches in the shadow copy, pending
interrupt events, emulated flips, MOCS register values) go to a :class:`Findings`
collector and are applied only when the whole workload passed.

Rules, with where they depart from upstream (``cmd_parser.c``):

* GGTT addresses (a command's GGTT bit set) must lie inside the partition for
  the whole access; bits above 47 of an address (high dword bits 31:16) must be
  zero, so the engine and the audit cannot disagree on the address.
  PPGTT addresses are confined by the context's shadow PPGTT and not checked.
* A non-privileged (PPGTT) batch may not use privileged-only commands nor any
  GGTT form (i915's command parser rules); upstream does not scan such batches.
* Registers (LRI, LRR, LRM, SRM, PIPE_CONTROL's LRI post-sync and counter
  reads) must be inside MMIO and pass the whitelist (the register table's
  F_CMD_ACCESS flag); on BDW non-render engines LRI/LRM/LRR register dwords with
  bits 22:18 set are refused (BCS may write DERRMR).
* PIPE_CONTROL and MI_FLUSH_DW: every post-sync write (immediate, depth count,
  timestamp) is range-checked when GGTT, not only the immediate one as upstream;
  store-index offsets must stay in the status page and are rebased onto the
  vGPU's status page when :attr:`AuditContext.hws_pga` is known (upstream patch);
  a PIPE_CONTROL asking for an LRI post-sync and a memory post-sync at once is
  refused (upstream would audit only the register).
* MI_SEMAPHORE_WAIT, MI_CONDITIONAL_BATCH_BUFFER_END, MI_REPORT_PERF_COUNT,
  MI_CLFLUSH, MI_COPY_MEM_MEM, MI_ATOMIC: audited like the others where
  upstream rejects them outright; MI_STORE_DATA_INDEX is accepted in privileged
  buffers (its index cannot leave the status page).
* MI_DISPLAY_FLIP and MI_WAIT_FOR_EVENT must name planes / pipes the vGPU owns;
  a flip's surface must start inside the partition; the flip is then recorded and
  NOOP'd, and flip-pending waits NOOP'd (display is virtual), as upstream does.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from gvt_core.device.execution.scanner.rejection import RejectReason
from gvt_core.device.execution.scanner.table import Audit
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs
from gvt_core.hw.engine import commands as T

# --- register offsets and bit fields the audits name (BDW) --------------------------------------
#: register offset field of LRI / LRR / LRM / SRM / PIPE_CONTROL dwords (bits 22:2).
REG_OFFSET_MASK = 0x007F_FFFC
RCS_TIMESTAMP = regs.RENDER_RING_BASE + regs.RING_TIMESTAMP  # post-sync op 3 reads it
#: LRI targets upstream redirects into the PVINFO page (the write is discarded).
LRI_TO_PVINFO = frozenset({regs.DERRMR, regs.FORCEWAKE_MT})

MI_NOOP = 0
HWSP_SIZE = regs.GTT_PAGE_SIZE
#: BDW's largest OA report (256 bytes), what MI_REPORT_PERF_COUNT writes at most.
OA_REPORT_SIZE = 256
CACHELINE = 64
LRI_MAX_LENGTH = 127  # upstream's bound on MI_LOAD_REGISTER_IMM

# MI header bits
MI_GLOBAL_GTT = 1 << 22
SDI_STORE_QWORD = 1 << 21
SDI_CORE_MODE = 1 << 0  # dword 1
FLUSH_DW_STORE_INDEX = 1 << 21
FLUSH_DW_OP_SHIFT = 14
FLUSH_DW_NOTIFY = 1 << 8
FLUSH_DW_USE_GTT = 1 << 2  # dword 1
ATOMIC_INLINE_DATA = 1 << 18
ATOMIC_SIZE_SHIFT = 19
COPY_MEM_SRC_GGTT = 1 << 22
COPY_MEM_DST_GGTT = 1 << 21
REPORT_PERF_GGTT = 1 << 0  # dword 1
# PIPE_CONTROL dword 1
PC_GLOBAL_GTT = 1 << 24
PC_MMIO_WRITE = 1 << 23  # LRI post-sync operation
PC_STORE_DATA_INDEX = 1 << 21
PC_POST_SYNC_SHIFT = 14
PC_NOTIFY = 1 << 8
POST_SYNC_NONE, POST_SYNC_IMM, POST_SYNC_DEPTH, POST_SYNC_TIMESTAMP = range(4)


class DisplayPlane(enum.Enum):
    PRIMARY = "primary"
    SPRITE = "sprite"


PIPE_A, PIPE_B, PIPE_C = 0, 1, 2
#: MI_DISPLAY_FLIP's GEN8 plane code (dword 0 bits 21:19) -> (pipe, plane); the
#: layout of the command is in :mod:`gvt_core.hw.display_regs` (``MI_FLIP_*``).
FLIP_PLANE_CODES: tuple[tuple[int, DisplayPlane], ...] = tuple(
    (pipe, DisplayPlane.PRIMARY if primary else DisplayPlane.SPRITE)
    for pipe, primary in dr.MI_FLIP_PLANES
)
#: MI_WAIT_FOR_EVENT bits (Mesa gen8): bit -> (pipe, plane, is a flip-pending wait).
#: Pipe-level waits (vertical blank, scan line) ask for the pipe's primary plane.
WAIT_EVENT_BITS: dict[int, tuple[int, DisplayPlane, bool]] = {
    0: (PIPE_A, DisplayPlane.PRIMARY, False),  # scan line
    1: (PIPE_A, DisplayPlane.PRIMARY, True),  # plane A flip pending
    2: (PIPE_A, DisplayPlane.SPRITE, True),  # sprite A flip pending
    3: (PIPE_A, DisplayPlane.PRIMARY, False),  # vertical blank
    8: (PIPE_B, DisplayPlane.PRIMARY, False),
    9: (PIPE_B, DisplayPlane.PRIMARY, True),
    10: (PIPE_B, DisplayPlane.SPRITE, True),
    11: (PIPE_B, DisplayPlane.PRIMARY, False),
    14: (PIPE_C, DisplayPlane.PRIMARY, False),
    15: (PIPE_C, DisplayPlane.PRIMARY, True),
    20: (PIPE_C, DisplayPlane.SPRITE, True),
    21: (PIPE_C, DisplayPlane.PRIMARY, False),
}

_ENGINE_BASE: dict[int, int] = {regs.ENGINE_IDS[n]: base for n, base in regs.ENGINE_BASES.items()}


@attrs.frozen
class GmPartition:
    """The vGPU's graphics memory: half-open ``(start, end)`` GGTT ranges."""

    ranges: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, *base_size: tuple[int, int]) -> GmPartition:
        """From ``(base, size)`` pairs, e.g. the aperture and hidden ranges."""
        return cls(tuple(sorted((b, b + s) for b, s in base_size if s > 0)))

    def contains(self, gma: int, size: int) -> bool:
        """Whether ``[gma, gma + size)`` lies inside one range (``size`` >= 1)."""
        end = gma + max(size, 1)
        return any(start <= gma and end <= stop for start, stop in self.ranges)


def _nothing(_value: int) -> bool:
    return False


@attrs.frozen
class AuditContext:
    """What the audits of one workload check against."""

    engine: int
    partition: GmPartition
    #: register offset -> may commands access it (the table's F_CMD_ACCESS flag).
    register_allowed: Callable[[int], bool]
    #: (pipe, plane) -> does the vGPU own it.
    owns_plane: Callable[[int, DisplayPlane], bool]
    #: the whitelist for non-privileged batches; None = the same as ``register_allowed``.
    nonpriv_register_allowed: Callable[[int], bool] | None = None
    #: register offsets an LRI may program into FORCE_NONPRIV (others become RING_NOPID).
    force_nonpriv_allowed: Callable[[int], bool] = _nothing
    #: the vGPU's status page (GGTT) for this engine; store-index writes are rebased on it.
    hws_pga: int | None = None
    mmio_size: int = regs.MMIO_SIZE
    max_surface_size: int = regs.MAX_SURFACE_SIZE

    @property
    def nopid(self) -> int:
        return _ENGINE_BASE[self.engine] + regs.RING_NOPID


# --- what a successful audit leaves for the execution pipeline -----------------------------------
class EventKind(enum.Enum):
    USER_INTERRUPT = "user-interrupt"
    PIPE_CONTROL_NOTIFY = "pipe-control-notify"
    FLUSH_DW_NOTIFY = "flush-dw-notify"


@attrs.frozen(slots=True)
class DwordPatch:
    """Replace dword ``offset`` of a buffer (-1 = the ring section, else a shadow index)."""

    buffer: int
    offset: int
    value: int


@attrs.frozen(slots=True)
class ScanEvent:
    kind: EventKind
    buffer: int
    offset: int


@attrs.frozen(slots=True)
class DisplayFlip:
    """An MI_DISPLAY_FLIP the audit took out of a workload (NOOP'd in the shadow), for
    the vGPU's display once the workload completes; ``stride`` in 64-byte units."""

    pipe: int
    plane: DisplayPlane
    surface: int
    stride: int
    tiled: int
    async_flip: bool


@attrs.frozen(slots=True)
class RegisterWrite:
    """An LRI value upstream mirrors into the vGPU's vregs (MOCS)."""

    offset: int
    value: int


@attrs.define(slots=True)
class Findings:
    """Collects audit side effects; :attr:`buffer` / :attr:`base` locate the command."""

    buffer: int = -1
    base: int = 0
    patches: list[DwordPatch] = attrs.Factory(list)
    events: list[ScanEvent] = attrs.Factory(list)
    flips: list[DisplayFlip] = attrs.Factory(list)
    register_writes: list[RegisterWrite] = attrs.Factory(list)

    def patch(self, index: int, value: int) -> None:
        self.patches.append(DwordPatch(self.buffer, self.base + index, value & 0xFFFF_FFFF))

    def event(self, kind: EventKind) -> None:
        self.events.append(ScanEvent(kind, self.buffer, self.base))


Failure = tuple[RejectReason, str]
AuditFn = Callable[[list[int], T.CommandSpec, AuditContext, bool, Findings], Failure | None]


# --- helpers ------------------------------------------------------------------------------------
def address(cmd: list[int], dword: int, low_mask: int) -> tuple[int, bool]:
    """The 64-bit address at ``dword`` (low bits masked) and whether bits 63:48 are clear."""
    hi = cmd[dword + 1]
    return (cmd[dword] & low_mask) | ((hi & T.GMADR_HIGH_MASK) << 32), hi >> 16 == 0


def ggtt_access(ctx: AuditContext, cmd: list[int], dword: int, low_mask: int, size: int,
                what: str) -> Failure | None:
    gma, clean = address(cmd, dword, low_mask)
    if not clean:
        return (RejectReason.GGTT_OUT_OF_PARTITION,
                f"{what}: GGTT address high dword {cmd[dword + 1]:#x} sets bits above 47")
    return ggtt_range(ctx, gma, size, what)


def ggtt_range(ctx: AuditContext, gma: int, size: int, what: str) -> Failure | None:
    if size > ctx.max_surface_size:
        return (RejectReason.GGTT_OUT_OF_PARTITION,
                f"{what}: {size} bytes exceed the {ctx.max_surface_size}-byte surface limit")
    if not ctx.partition.contains(gma, size):
        return (RejectReason.GGTT_OUT_OF_PARTITION,
                f"{what}: GGTT [{gma:#x}, {gma + size:#x}) is outside the vGPU's graphics memory")
    return None


def _privileged(what: str) -> Failure:
    return RejectReason.PRIVILEGED_COMMAND, f"{what} is not allowed in a non-privileged batch"


def _status_page(ctx: AuditContext, cmd: list[int], dword: int, offset: int, size: int,
                 out: Findings, what: str, low_bits: int = 0) -> Failure | None:
    """A store-index write: ``offset`` into the status page; when the page is known it
    is rebased onto it (the caller turns the command into a plain GGTT write: the
    address dword gets ``low_bits``, the command's GGTT bit where it sits there)."""
    if offset + size > HWSP_SIZE:
        return (RejectReason.GGTT_OUT_OF_PARTITION,
                f"{what}: status-page index {offset:#x} + {size} leaves the page")
    if ctx.hws_pga is None:
        return None
    gma = ctx.hws_pga + offset
    fail = ggtt_range(ctx, gma, size, f"{what} (status page)")
    if fail:
        return fail
    out.patch(dword, (gma & 0xFFFF_FFF8) | (cmd[dword] & 0x7) | low_bits)
    out.patch(dword + 1, (cmd[dword + 1] & ~T.GMADR_HIGH_MASK) | (gma >> 32))
    return None


def register(ctx: AuditContext, reg: int, privileged: bool, what: str) -> Failure | None:
    if reg + 4 > ctx.mmio_size:
        return RejectReason.REGISTER_NOT_ALLOWED, f"{what}: register {reg:#x} is outside MMIO"
    allowed = ctx.register_allowed
    if not privileged and ctx.nonpriv_register_allowed is not None:
        allowed = ctx.nonpriv_register_allowed
    if not allowed(reg):
        return (RejectReason.REGISTER_NOT_ALLOWED,
                f"{what}: register {reg:#x} is not accessible to commands")
    return None


def _inhibit(ctx: AuditContext, raw: int, what: str, *, all_engines: bool) -> Failure | None:
    """BDW: register dwords with bits 22:18 set are refused on non-render engines."""
    if not raw & regs.BDW_REG_INHIBIT_MASK:
        return None
    if not all_engines and ctx.engine == regs.ENGINE_RCS:
        return None
    if ctx.engine == regs.ENGINE_BCS and raw & REG_OFFSET_MASK == regs.DERRMR:
        return None
    return (RejectReason.REGISTER_NOT_ALLOWED,
            f"{what}: register dword {raw:#x} sets the BDW inhibit bits 22:18")


# --- the audits ---------------------------------------------------------------------------------
def audit_forbidden(cmd: list[int], info: T.CommandSpec, ctx: AuditContext, privileged: bool,
                    out: Findings) -> Failure | None:
    return RejectReason.FORBIDDEN_COMMAND, f"{info.name} is never allowed from a guest"


def audit_user_interrupt(cmd: list[int], info: T.CommandSpec, ctx: AuditContext,
                         privileged: bool, out: Findings) -> Failure | None:
    out.event(EventKind.USER_INTERRUPT)
    return None


def audit_wait_for_event(cmd: list[int], info: T.CommandSpec, ctx: AuditContext,
                         privileged: bool, out: Findings) -> Failure | None:
    header = cmd[0]
    flip_wait = False
    for bit, (pipe, plane, is_flip) in WAIT_EVENT_BITS.items():
        if header >> bit & 1:
            if not ctx.owns_plane(pipe, plane):
                return (RejectReason.DISPLAY_NOT_OWNED,
                        f"waits on pipe {pipe} {plane.value} (bit {bit}), not the vGPU's")
            flip_wait |= is_flip
    if flip_wait:
        out.patch(0, MI_NOOP)  # flips apply when the workload completes: none is pending
    return None


def audit_display_flip(cmd: list[int], info: T.CommandSpec, ctx: AuditContext,
                       privileged: bool, out: Findings) -> Failure | None:
    flip_type = cmd[2] & dr.MI_FLIP_TYPE_MASK
    want = 4 if flip_type == dr.MI_FLIP_STEREO else 3
    if len(cmd) != want:
        return (RejectReason.BAD_LENGTH,
                f"MI_DISPLAY_FLIP of type {flip_type} must be {want} dwords, not {len(cmd)}")
    code = (cmd[0] >> dr.MI_FLIP_PLANE_SHIFT) & dr.MI_FLIP_PLANE_MASK
    if code >= len(FLIP_PLANE_CODES):
        return RejectReason.MALFORMED_COMMAND, f"MI_DISPLAY_FLIP plane code {code} is reserved"
    pipe, plane = FLIP_PLANE_CODES[code]
    if not ctx.owns_plane(pipe, plane):
        return (RejectReason.DISPLAY_NOT_OWNED,
                f"MI_DISPLAY_FLIP on pipe {pipe} {plane.value}, not the vGPU's")
    surface = cmd[2] & dr.MI_FLIP_BASE_MASK
    fail = ggtt_range(ctx, surface, regs.GTT_PAGE_SIZE, "MI_DISPLAY_FLIP surface")
    if fail:
        return fail
    out.flips.append(DisplayFlip(pipe, plane, surface,
                                 (cmd[1] & dr.MI_FLIP_PITCH_MASK) >> dr.MI_FLIP_PITCH_SHIFT,
                                 cmd[1] & dr.MI_FLIP_TILED, flip_type == dr.MI_FLIP_ASYNC))
    for i in range(len(cmd)):
        out.patch(i, MI_NOOP)
    return None


def _lri_target(ctx: AuditContext, cmd: list[int], i: int, out: Findings) -> None:
    """Upstream's per-register treatment of an accepted LRI pair at dwords i, i+1."""
    reg = cmd[i] & REG_OFFSET_MASK
    value = cmd[i + 1]
    if (regs.GEN9_GFX_MOCS_BASE <= reg <= regs.GEN9_GFX_MOCS_LAST
            or regs.GEN9_LNCFCMOCS_BASE <= reg <= regs.GEN9_LNCFCMOCS_LAST):
        out.register_writes.append(RegisterWrite(reg, value))
    if regs.RING_FORCE_TO_NONPRIV <= reg < regs.RING_FORCE_TO_NONPRIV_END and value != ctx.nopid \
            and not ctx.force_nonpriv_allowed(value):
        out.patch(i + 1, ctx.nopid)
    if reg in LRI_TO_PVINFO:
        out.patch(i, (cmd[i] & ~REG_OFFSET_MASK) | regs.VGT_PVINFO_PAGE)


def audit_lri(cmd: list[int], info: T.CommandSpec, ctx: AuditContext, privileged: bool,
              out: Findings) -> Failure | None:
    n = len(cmd)
    if n % 2 == 0 or n > LRI_MAX_LENGTH:
        return (RejectReason.BAD_LENGTH,
                f"MI_LOAD_REGISTER_IMM of {n} dwords: must be odd and at most {LRI_MAX_LENGTH}")
    for i in range(1, n, 2):
        fail = _inhibit(ctx, cmd[i], "MI_LOAD_REGISTER_IMM", all_engines=False) or register(
            ctx, cmd[i] & REG_OFFSET_MASK, privileged, "MI_LOAD_REGISTER_IMM")
        if fail:
            return fail
        _lri_target(ctx, cmd, i, out)
    return None


def audit_lrr(cmd: list[int], info: T.CommandSpec, ctx: AuditContext, privileged: bool,
              out: Findings) -> Failure | None:
    for i, what in ((1, "MI_LOAD_REGISTER_REG source"), (2, "MI_LOAD_REGISTER_REG destination")):
        fail = _inhibit(ctx, cmd[i], what, all_engines=True) or register(
            ctx, cmd[i] & REG_OFFSET_MASK, privileged, what)
        if fail:
            return fail
    return None


def _register_mem(cmd: list[int], info: T.CommandSpec, ctx: AuditContext, privileged: bool,
                  *, load: bool) -> Failure | None:
    what = info.name
    if load:
        fail = _inhibit(ctx, cmd[1], what, all_engines=True)
        if fail:
            return fail
    fail = register(ctx, cmd[1] & REG_OFFSET_MASK, privileged, what)
    if fail:
        return fail
    if cmd[0] & MI_GLOBAL_GTT:
        if not privileged:
            return _privileged(f"{what} with a GGTT address")
        return ggtt_access(ctx, cmd, 2, 0xFFFF_FFFC, 4, what)
    return None


def audit_lrm(cmd: list[int], info: T.CommandSpec, ctx: AuditContext, privileged: bool,
              out: Findings) -> Failure | None:
    return _register_mem(cmd, info, ctx, privileged, load=True)


def audit_srm(cmd: list[int], info: T.CommandSpec, ctx: AuditContext, privileged: bool,
              out: Findings) -> Failure | None:
    return _register_mem(cmd, info, ctx, privileged, load=False)


def audit_store_data_imm(cmd: list[int], info: T.CommandSpec, ctx: AuditContext,
                         privileged: bool, out: Findings) -> Failure | None:
    want = 5 if cmd[0] & SDI_STORE_QWORD else 4
    if len(cmd) != want:
        return (RejectReason.BAD_LENGTH,
                f"MI_STORE_DATA_IMM with store-qword={bool(cmd[0] & SDI_STORE_QWORD)} must be "
                f"{want} dwords, not {len(cmd)}")
    if not cmd[0] & MI_GLOBAL_GTT:
        return None
    if not privileged:
        return _privileged("MI_STORE_DATA_IMM with a GGTT address")
    size = (len(cmd) - 3) * 4
    gma, clean = address(cmd, 1, 0xFFFF_FFFC)
    if not clean:
        return (RejectReason.GGTT_OUT_OF_PARTITION,
                f"MI_STORE_DATA_IMM: GGTT address high dword {cmd[2]:#x} sets bits above 47")
    if cmd[1] & SDI_CORE_MODE:
        gma += size  # upstream: the second core's slot follows the first
    return ggtt_range(ctx, gma, size, "MI_STORE_DATA_IMM")


def audit_store_data_index(cmd: list[int], info: T.CommandSpec, ctx: AuditContext,
                           privileged: bool, out: Findings) -> Failure | None:
    offset = cmd[1] & 0xFFC
    size = (len(cmd) - 2) * 4
    if offset + size > HWSP_SIZE:
        return (RejectReason.GGTT_OUT_OF_PARTITION,
                f"MI_STORE_DATA_INDEX: index {offset:#x} + {size} leaves the status page")
    return None


def audit_flush_dw(cmd: list[int], info: T.CommandSpec, ctx: AuditContext, privileged: bool,
                   out: Findings) -> Failure | None:
    header = cmd[0]
    if header & FLUSH_DW_NOTIFY:
        if not privileged:
            return _privileged("MI_FLUSH_DW with notify")
        out.event(EventKind.FLUSH_DW_NOTIFY)
    if not (header >> FLUSH_DW_OP_SHIFT) & 3:
        return None
    index = bool(header & FLUSH_DW_STORE_INDEX)
    ggtt = bool(cmd[1] & FLUSH_DW_USE_GTT)
    if not (index or ggtt):
        return None
    if not privileged:
        return _privileged("MI_FLUSH_DW post-sync write to the GGTT or status page")
    if index:
        gma, clean = address(cmd, 1, 0xFFFF_FFF8)
        if not clean or gma >> 32:
            return (RejectReason.GGTT_OUT_OF_PARTITION,
                    "MI_FLUSH_DW: status-page index with high address bits")
        fail = _status_page(ctx, cmd, 1, gma, 8, out, "MI_FLUSH_DW", FLUSH_DW_USE_GTT)
        if fail is None and ctx.hws_pga is not None:
            out.patch(0, header & ~FLUSH_DW_STORE_INDEX)
        return fail
    return ggtt_access(ctx, cmd, 1, 0xFFFF_FFF8, 8, "MI_FLUSH_DW post-sync")


def audit_pipe_control(cmd: list[int], info: T.CommandSpec, ctx: AuditContext,
                       privileged: bool, out: Findings) -> Failure | None:
    flags = cmd[1]
    if not privileged and flags & (PC_MMIO_WRITE | PC_NOTIFY):
        return _privileged("PIPE_CONTROL with notify or LRI post-sync")
    post_sync = (flags >> PC_POST_SYNC_SHIFT) & 3
    if flags & PC_MMIO_WRITE and post_sync != POST_SYNC_NONE:
        return (RejectReason.MALFORMED_COMMAND,
                "PIPE_CONTROL asks for an LRI post-sync and a memory post-sync at once")
    if flags & PC_MMIO_WRITE:
        fail = register(ctx, cmd[2] & REG_OFFSET_MASK, privileged, "PIPE_CONTROL LRI post-sync")
        if fail:
            return fail
    elif post_sync != POST_SYNC_NONE:
        counter = {POST_SYNC_DEPTH: regs.PS_DEPTH_COUNT, POST_SYNC_TIMESTAMP: RCS_TIMESTAMP}
        if post_sync in counter:
            fail = register(ctx, counter[post_sync], privileged, "PIPE_CONTROL post-sync read")
            if fail:
                return fail
        index = bool(flags & PC_STORE_DATA_INDEX)
        if index or flags & PC_GLOBAL_GTT:
            if not privileged:
                return _privileged("PIPE_CONTROL post-sync write to the GGTT or status page")
            if index:
                gma, clean = address(cmd, 2, 0xFFFF_FFF8)
                if not clean or gma >> 32:
                    return (RejectReason.GGTT_OUT_OF_PARTITION,
                            "PIPE_CONTROL: status-page index with high address bits")
                fail = _status_page(ctx, cmd, 2, gma, 8, out, "PIPE_CONTROL")
                if fail is None and ctx.hws_pga is not None:
                    out.patch(1, (flags & ~PC_STORE_DATA_INDEX) | PC_GLOBAL_GTT)
            else:
                fail = ggtt_access(ctx, cmd, 2, 0xFFFF_FFF8, 8, "PIPE_CONTROL post-sync")
            if fail:
                return fail
    if flags & PC_NOTIFY:
        out.event(EventKind.PIPE_CONTROL_NOTIFY)
    return None


def _ggtt_if_set(cmd: list[int], info: T.CommandSpec, ctx: AuditContext, privileged: bool,
                 dword: int, low_mask: int, size: int) -> Failure | None:
    assert info.ggtt_bit is not None
    if not info.ggtt_bit.is_ggtt(cmd):
        return None
    if not privileged:
        return _privileged(f"{info.name} with a GGTT address")
    return ggtt_access(ctx, cmd, dword, low_mask, size, info.name)


def audit_semaphore_wait(cmd: list[int], info: T.CommandSpec, ctx: AuditContext,
                         privileged: bool, out: Findings) -> Failure | None:
    return _ggtt_if_set(cmd, info, ctx, privileged, 2, 0xFFFF_FFFC, 4)


def audit_cond_bb_end(cmd: list[int], info: T.CommandSpec, ctx: AuditContext, privileged: bool,
                      out: Findings) -> Failure | None:
    return _ggtt_if_set(cmd, info, ctx, privileged, 2, 0xFFFF_FFF8, 8)


def audit_report_perf_count(cmd: list[int], info: T.CommandSpec, ctx: AuditContext,
                            privileged: bool, out: Findings) -> Failure | None:
    return _ggtt_if_set(cmd, info, ctx, privileged, 1, 0xFFFF_FFC0, OA_REPORT_SIZE)


def audit_clflush(cmd: list[int], info: T.CommandSpec, ctx: AuditContext, privileged: bool,
                  out: Findings) -> Failure | None:
    if not cmd[0] & MI_GLOBAL_GTT:
        return None
    if not privileged:
        return _privileged("MI_CLFLUSH with a GGTT address")
    base, clean = address(cmd, 1, 0xFFFF_F000)
    if not clean:
        return RejectReason.GGTT_OUT_OF_PARTITION, "MI_CLFLUSH: high address bits set"
    start = base + ((cmd[1] >> 6) & 0x3F) * CACHELINE
    size = max(len(cmd) - 3, 1) * (CACHELINE // 2)  # each data dword names half a line
    return ggtt_range(ctx, start, size, "MI_CLFLUSH")


def audit_atomic(cmd: list[int], info: T.CommandSpec, ctx: AuditContext, privileged: bool,
                 out: Findings) -> Failure | None:
    want = 11 if cmd[0] & ATOMIC_INLINE_DATA else 3
    if len(cmd) != want:
        return (RejectReason.BAD_LENGTH,
                f"MI_ATOMIC with inline data={bool(cmd[0] & ATOMIC_INLINE_DATA)} must be {want} "
                f"dwords, not {len(cmd)}")
    size_code = (cmd[0] >> ATOMIC_SIZE_SHIFT) & 3
    if size_code == 3:
        return RejectReason.MALFORMED_COMMAND, "MI_ATOMIC data size 3 is reserved"
    return _ggtt_if_set(cmd, info, ctx, privileged, 1, 0xFFFF_FFFC, 4 << size_code)


def audit_copy_mem_mem(cmd: list[int], info: T.CommandSpec, ctx: AuditContext,
                       privileged: bool, out: Findings) -> Failure | None:
    for bit, dword, what in ((COPY_MEM_DST_GGTT, 1, "destination"),
                             (COPY_MEM_SRC_GGTT, 3, "source")):
        if cmd[0] & bit:
            if not privileged:
                return _privileged(f"MI_COPY_MEM_MEM with a GGTT {what}")
            fail = ggtt_access(ctx, cmd, dword, 0xFFFF_FFFC, 4, f"MI_COPY_MEM_MEM {what}")
            if fail:
                return fail
    return None


#: the audit of each kind; BATCH_START / BATCH_END / NONE are the walker's business.
AUDITS: dict[Audit, AuditFn] = {
    Audit.FORBIDDEN: audit_forbidden,
    Audit.USER_INTERRUPT: audit_user_interrupt,
    Audit.WAIT_FOR_EVENT: audit_wait_for_event,
    Audit.DISPLAY_FLIP: audit_display_flip,
    Audit.LOAD_REGISTER_IMM: audit_lri,
    Audit.LOAD_REGISTER_REG: audit_lrr,
    Audit.LOAD_REGISTER_MEM: audit_lrm,
    Audit.STORE_REGISTER_MEM: audit_srm,
    Audit.STORE_DATA_IMM: audit_store_data_imm,
    Audit.STORE_DATA_INDEX: audit_store_data_index,
    Audit.FLUSH_DW: audit_flush_dw,
    Audit.PIPE_CONTROL: audit_pipe_control,
    Audit.SEMAPHORE_WAIT: audit_semaphore_wait,
    Audit.CONDITIONAL_BATCH_END: audit_cond_bb_end,
    Audit.REPORT_PERF_COUNT: audit_report_perf_count,
    Audit.CLFLUSH: audit_clflush,
    Audit.ATOMIC: audit_atomic,
    Audit.COPY_MEM_MEM: audit_copy_mem_mem,
}
