"""Walking a workload: its ring section and every batch buffer reachable from it.

The walk is a worklist, not a recursion: the ring section is decoded, every
MI_BATCH_BUFFER_START it holds queues its target batch, each queued batch is
fetched (copied) and decoded until its end, queuing the batches it starts, and
so on. A batch ends at its MI_BATCH_BUFFER_END or at an unconditional chaining
MI_BATCH_BUFFER_START, found by walking: the walker fetches the batch in growing
chunks that never cross a 4 KiB page (a batch ending before an unmapped page
never faults), and never trusts a size the guest gives. A batch reached again
(same address space, address and level) is not copied twice: its relocation
points at the same shadow.

Nesting follows the GEN8 hardware (facts 8.5): the ring may start first-level
batches only; a first-level batch may chain to another first-level batch or
call a second-level one (bit 22); a second-level batch may only chain to
second-level batches; MI_BATCH_BUFFER_END ends a batch and may not appear in
the ring. A *predicated* chain (bit 15) may fall through, so the walk continues
after it. A start with Add Offset Enable (bit 16) adds a register value the
scanner cannot know and is refused.

Privilege: the ring and GGTT batches are privileged, PPGTT batches are not; a
non-privileged batch may not start a GGTT batch.

Limits (:class:`ScanLimits`): the command budget, the number of batches and the
bytes copied per workload, and the nesting depth (at most the hardware's 2).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import attrs
import numpy as np

from gvt_core.device.execution.scanner import table as T
from gvt_core.device.execution.scanner.audit import AUDITS, AuditContext, Findings
from gvt_core.device.execution.scanner.decoder import (
    BAD_SHIFT,
    ENTRY_SHIFT,
    LEN_FIELD,
    VECTOR_MIN_DWORDS,
    decoder_for,
)
from gvt_core.device.execution.scanner.rejection import BufferKind, RejectReason, ScanRejection
from gvt_core.device.execution.scanner.shadow import AddressSpace, Relocation, ShadowBatch
from gvt_core.errors import GmaFault, GvtError
from gvt_core.hw import regs

PAGE = regs.GTT_PAGE_SIZE
#: first fetch of a batch, in bytes; each further fetch doubles, up to a page.
FIRST_FETCH = 256
MAX_BB_LEVEL = 2  # ring -> first level -> second level

# MI_BATCH_BUFFER_START dword 0
BB_SECOND_LEVEL = 1 << 22
BB_ADD_OFFSET = 1 << 16
BB_PREDICATED = 1 << 15
BB_PPGTT = 1 << 8
BB_ADDR_MASK = 0xFFFF_FFFC

RING = -1  # buffer id of the ring section


class CommandReader(Protocol):
    """Reads guest graphics memory for the walker.

    ``read`` returns ``nbytes`` (a multiple of 4, never crossing a 4 KiB page,
    ``gma`` 4-byte aligned) as little-endian uint32 dwords, or raises
    :class:`gvt_core.errors.GmaFault` where nothing is mapped. GGTT reads are
    only asked for inside the vGPU's partition; PPGTT reads go through the
    workload context's PPGTT.
    """

    def read(self, space: AddressSpace, gma: int, nbytes: int) -> np.ndarray: ...


@attrs.frozen
class RingSection:
    """The ring dwords of one workload, ``[head, tail)``, already copied by the workload."""

    dwords: np.ndarray
    #: RING_START (GGTT) and the ring's size in bytes (from RING_CTL).
    start: int
    size: int
    #: byte offset in the ring of ``dwords[0]``.
    head: int

    def gma(self, offset: int) -> int:
        return self.start + (self.head + 4 * offset) % self.size


@attrs.frozen
class ScanLimits:
    """Per-workload bounds; every one ends the scan with a rejection, never a host error."""

    #: commands decoded in the ring and all batches (upstream: 0x7fffffff, i.e. none).
    max_commands: int = 1 << 17
    #: distinct batch buffers.
    max_batches: int = 512
    #: bytes copied out of guest batch buffers.
    max_shadow_bytes: int = 32 << 20
    #: batch nesting depth (the hardware allows 2).
    max_level: int = MAX_BB_LEVEL

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.max_level <= MAX_BB_LEVEL:
            raise ValueError(f"max_level must be 0..{MAX_BB_LEVEL}, the hardware's nesting")


@attrs.define(eq=False)
class Walk:
    """Everything a successful walk found, before shadows get host memory."""

    ring: np.ndarray
    shadows: list[ShadowBatch]
    relocations: list[Relocation]
    findings: Findings
    commands: int
    fetched_bytes: int


class _Rejected(GvtError):
    """Unwinds the walk to :func:`walk`; never leaves this module."""

    def __init__(self, rejection: ScanRejection) -> None:
        super().__init__(str(rejection))
        self.rejection = rejection


_FLOW_NONE, _FLOW_START, _FLOW_END = 0, 1, 2
_FLOW = [
    _FLOW_START if c.audit is T.Audit.BATCH_START
    else _FLOW_END if c.audit is T.Audit.BATCH_END else _FLOW_NONE
    for c in T.COMMANDS
]
_PRIV_ONLY = [c.privilege is T.Privilege.PRIVILEGED for c in T.COMMANDS]
_AUDIT_FN = [AUDITS.get(c.audit) for c in T.COMMANDS]


@attrs.define(eq=False, slots=True)
class _Buffer:
    """A buffer being decoded: its dwords so far and their header classifications."""

    id: int
    level: int
    privileged: bool
    space: AddressSpace
    gma: int
    words: list[int] = attrs.Factory(list)
    #: packed classification per dword, -1 where not classified yet.
    codes: list[int] = attrs.Factory(list)
    chunks: list[np.ndarray] = attrs.Factory(list)
    next_fetch: int = FIRST_FETCH


class Walker:
    """One walk; use :func:`walk`."""

    def __init__(self, ring: RingSection, ctx: AuditContext, reader: CommandReader,
                 limits: ScanLimits) -> None:
        self.ring = ring
        self.ctx = ctx
        self.reader = reader
        self.limits = limits
        self.decoder = decoder_for(ctx.engine)
        self.findings = Findings()
        self.shadows: list[ShadowBatch] = []
        self.relocations: list[Relocation] = []
        self.by_key: dict[tuple[AddressSpace, int, int], int] = {}
        self.pending: deque[_Buffer] = deque()
        self.commands = 0
        self.fetched = 0

    # --- rejections ---------------------------------------------------------------------------
    def _reject(self, buf: _Buffer, offset: int, reason: RejectReason, detail: str) -> _Rejected:
        header = buf.words[offset] if offset < len(buf.words) else 0
        name = None
        if offset < len(buf.words):
            info = T.lookup(self.ctx.engine, header)
            name = info.name if info else None
        if buf.id == RING:
            return _Rejected(ScanRejection(reason, self.ctx.engine, detail, BufferKind.RING,
                                           "ggtt", self.ring.start + self.ring.head, 0, offset,
                                           self.ring.gma(offset), name, header))
        return _Rejected(ScanRejection(reason, self.ctx.engine, detail, BufferKind.BATCH,
                                       buf.space.value, buf.gma, buf.level, offset,
                                       buf.gma + 4 * offset, name, header))

    # --- fetching batches ---------------------------------------------------------------------
    def _append(self, buf: _Buffer, chunk: np.ndarray) -> None:
        buf.chunks.append(chunk)
        buf.words.extend(chunk.tolist())
        if chunk.size >= VECTOR_MIN_DWORDS:
            buf.codes.extend(self.decoder.classify(chunk).tolist())
        else:
            buf.codes.extend([-1] * chunk.size)

    def _fetch(self, buf: _Buffer, at: int) -> None:
        """Copy the next piece of batch ``buf`` out of guest memory."""
        if buf.id == RING:
            raise self._reject(buf, at, RejectReason.TRUNCATED_COMMAND,
                               "the command runs past the end of the ring section")
        gma = buf.gma + 4 * len(buf.words)
        nbytes = min(buf.next_fetch, PAGE - gma % PAGE)
        buf.next_fetch = min(buf.next_fetch * 2, PAGE)
        if self.fetched + nbytes > self.limits.max_shadow_bytes:
            raise self._reject(buf, at, RejectReason.SHADOW_LIMIT,
                               f"batch buffers exceed {self.limits.max_shadow_bytes} bytes")
        if buf.space is AddressSpace.GGTT and not self.ctx.partition.contains(gma, nbytes):
            raise self._reject(buf, at, RejectReason.GGTT_OUT_OF_PARTITION,
                               f"the batch reaches GGTT {gma:#x}, outside the vGPU's memory")
        try:
            data = self.reader.read(buf.space, gma, nbytes)
        except GmaFault as e:
            raise self._reject(buf, at, RejectReason.BATCH_FETCH_FAULT, str(e)) from None
        chunk = np.array(data, dtype=np.uint32, copy=True).reshape(-1)
        if chunk.size * 4 != nbytes:
            raise ValueError(
                f"command reader returned {chunk.size * 4} bytes for a {nbytes}-byte read at "
                f"{buf.space.value} {gma:#x}; a reader must return exactly what was asked"
            )
        self.fetched += nbytes
        self._append(buf, chunk)

    # --- decoding one buffer ------------------------------------------------------------------
    def _scan(self, buf: _Buffer) -> int:
        """Decode and audit ``buf`` to its end; the number of dwords it holds."""
        words, codes = buf.words, buf.codes
        classify_one = self.decoder.classify_one
        infos = T.COMMANDS
        ctx, findings = self.ctx, self.findings
        privileged, is_ring = buf.privileged, buf.id == RING
        budget = self.limits.max_commands
        pos = 0
        while True:
            if pos >= len(words):
                if is_ring:
                    return pos
                self._fetch(buf, pos)
                continue
            code = codes[pos]
            if code < 0:
                code = codes[pos] = classify_one(words[pos])
            entry = (code >> ENTRY_SHIFT) - 1
            if entry < 0:
                raise self._reject(buf, pos, RejectReason.UNKNOWN_COMMAND,
                                   f"header {words[pos]:#010x} names no command of this engine")
            length = code & LEN_FIELD
            info = infos[entry]
            if (code >> BAD_SHIFT) & 1:
                raise self._reject(buf, pos, RejectReason.BAD_LENGTH,
                                   f"{info.name} of {length} dwords: allowed "
                                   f"{info.min_length}..{info.max_length}")
            while pos + length > len(words):
                self._fetch(buf, pos)
            self.commands += 1
            if self.commands > budget:
                raise self._reject(buf, pos, RejectReason.BUDGET_EXCEEDED,
                                   f"the workload has more than {budget} commands")
            if _PRIV_ONLY[entry] and not privileged:
                raise self._reject(buf, pos, RejectReason.PRIVILEGED_COMMAND,
                                   f"{info.name} is privileged-only")
            flow = _FLOW[entry]
            if flow == _FLOW_END:
                if is_ring:
                    raise self._reject(buf, pos, RejectReason.BAD_BATCH_NESTING,
                                       "MI_BATCH_BUFFER_END in the ring")
                return pos + 1
            if flow == _FLOW_START:
                if self._batch_start(buf, pos, words[pos:pos + length]):
                    return pos + length
                pos += length
                continue
            fn = _AUDIT_FN[entry]
            if fn is not None:
                findings.buffer = buf.id
                findings.base = pos
                fail = fn(words[pos:pos + length], info, ctx, privileged, findings)
                if fail is not None:
                    raise self._reject(buf, pos, fail[0], fail[1])
            pos += length

    def _batch_start(self, buf: _Buffer, pos: int, cmd: list[int]) -> bool:
        """Queue (or reuse) the batch an MI_BATCH_BUFFER_START names; True if ``buf`` ends."""
        header = cmd[0]
        if header & BB_ADD_OFFSET:
            raise self._reject(buf, pos, RejectReason.MALFORMED_COMMAND,
                               "MI_BATCH_BUFFER_START with Add Offset Enable")
        if cmd[2] >> 16:
            raise self._reject(buf, pos, RejectReason.MALFORMED_COMMAND,
                               f"batch address high dword {cmd[2]:#x} sets bits above 47")
        second = bool(header & BB_SECOND_LEVEL)
        if buf.level == 0:
            if second:
                raise self._reject(buf, pos, RejectReason.BAD_BATCH_NESTING,
                                   "a second-level batch started from the ring")
            level, chain = 1, False
        elif buf.level == 1:
            level, chain = (2, False) if second else (1, True)
        else:
            if not second:
                raise self._reject(buf, pos, RejectReason.BAD_BATCH_NESTING,
                                   "a second-level batch chains to a first-level one")
            level, chain = 2, True
        if level > self.limits.max_level:
            raise self._reject(buf, pos, RejectReason.BAD_BATCH_NESTING,
                               f"batch nesting deeper than {self.limits.max_level}")
        space = AddressSpace.PPGTT if header & BB_PPGTT else AddressSpace.GGTT
        if space is AddressSpace.GGTT and not buf.privileged:
            raise self._reject(buf, pos, RejectReason.PRIVILEGED_COMMAND,
                               "a non-privileged batch starts a GGTT batch")
        gma = (cmd[1] & BB_ADDR_MASK) | ((cmd[2] & T.GMADR_HIGH_MASK) << 32)
        key = (space, gma, level)
        index = self.by_key.get(key)
        if index is None:
            if len(self.shadows) >= self.limits.max_batches:
                raise self._reject(buf, pos, RejectReason.SHADOW_LIMIT,
                                   f"more than {self.limits.max_batches} batch buffers")
            index = len(self.shadows)
            self.by_key[key] = index
            self.shadows.append(ShadowBatch(index, space, gma, level,
                                            space is AddressSpace.GGTT))
            self.pending.append(_Buffer(index, level, space is AddressSpace.GGTT, space, gma))
        self.relocations.append(Relocation(buf.id, pos, index, gma, space))
        return chain and not header & BB_PREDICATED

    # --- the whole workload -------------------------------------------------------------------
    def run(self) -> Walk:
        ring = self.ring
        words = np.array(ring.dwords, dtype=np.uint32, copy=True).reshape(-1)
        rbuf = _Buffer(RING, 0, True, AddressSpace.GGTT, ring.start + ring.head)
        if (ring.size <= 0 or ring.size % PAGE or ring.start % PAGE or ring.head % 4
                or not 0 <= ring.head < ring.size or words.size * 4 > ring.size):
            raise self._reject(rbuf, 0, RejectReason.RING_OUT_OF_PARTITION,
                               f"malformed ring: start {ring.start:#x} size {ring.size:#x} "
                               f"head {ring.head:#x}, {words.size} dwords")
        if not self.ctx.partition.contains(ring.start, ring.size):
            raise self._reject(rbuf, 0, RejectReason.RING_OUT_OF_PARTITION,
                               f"ring [{ring.start:#x}, {ring.start + ring.size:#x}) is outside "
                               "the vGPU's graphics memory")
        self._append(rbuf, words)
        self._scan(rbuf)
        while self.pending:
            buf = self.pending.popleft()
            end = self._scan(buf)
            data = np.concatenate(buf.chunks) if buf.chunks else np.zeros(0, dtype=np.uint32)
            self.shadows[buf.id].dwords = data[:end].copy()
        return Walk(words, self.shadows, self.relocations, self.findings, self.commands,
                    self.fetched)


def walk(ring: RingSection, ctx: AuditContext, reader: CommandReader,
         limits: ScanLimits) -> Walk | ScanRejection:
    """Walk and audit a workload: the :class:`Walk` or the first rejection."""
    walker = Walker(ring, ctx, reader, limits)
    try:
        return walker.run()
    except _Rejected as r:
        return attrs.evolve(r.rejection, commands=walker.commands)
