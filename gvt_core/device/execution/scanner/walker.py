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
from gvt_core.device.execution.scanner.table import AUDITS as SCAN_AUDITS
from gvt_core.device.execution.scanner.table import Audit
from gvt_core.errors import GmaFault, GvtError
from gvt_core.hw import regs
from gvt_core.hw.engine import commands as T

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
        """Guest address of dword ``offset`` (wrapping at the ring's end)."""
        if self.size <= 0:
            return self.start + self.head + 4 * offset
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
        if min(self.max_commands, self.max_batches, self.max_shadow_bytes) < 0:
            raise ValueError("scan limits cannot be negative")


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


# What the walk does with a header, indexed by ``code >> BAD_SHIFT`` of its packed
# classification (= (entry + 1) << 1 | length-invalid), one table per privilege.
_K_PLAIN, _K_AUDIT, _K_START, _K_END, _K_UNKNOWN, _K_BAD_LENGTH, _K_PRIVILEGED = range(7)
_AUDIT_FN = [AUDITS.get(a) for a in SCAN_AUDITS]


def _kinds(privileged: bool) -> list[int]:
    kinds = [_K_UNKNOWN, _K_UNKNOWN]
    for i, c in enumerate(T.COMMANDS):
        if c.privilege is T.Privilege.PRIVILEGED and not privileged:
            kind = _K_PRIVILEGED
        elif SCAN_AUDITS[i] is Audit.BATCH_START:
            kind = _K_START
        elif SCAN_AUDITS[i] is Audit.BATCH_END:
            kind = _K_END
        elif _AUDIT_FN[i] is not None:
            kind = _K_AUDIT
        else:
            kind = _K_PLAIN
        kinds += [kind, _K_BAD_LENGTH]
    return kinds


_KINDS = {True: _kinds(True), False: _kinds(False)}


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
        """Decode and audit ``buf`` to its end; the number of dwords it holds.

        The hot loop: one iteration per command, plain commands (no audit, no
        flow change) cost a lookup, a budget check and an add.
        """
        words, codes = buf.words, buf.codes
        classify_one = self.decoder.classify_one
        kinds = _KINDS[buf.privileged]
        is_ring = buf.id == RING
        budget = self.limits.max_commands
        count = self.commands
        n = len(words)
        pos = 0
        try:
            while True:
                if pos >= n:
                    if is_ring:
                        return pos
                    self._fetch(buf, pos)
                    n = len(words)
                    continue
                code = codes[pos]
                if code < 0:
                    code = codes[pos] = classify_one(words[pos])
                length = code & LEN_FIELD
                kind = kinds[code >> BAD_SHIFT]
                if kind >= _K_UNKNOWN:
                    self.commands = count
                    raise self._refuse(buf, pos, kind, code)
                while pos + length > n:
                    self._fetch(buf, pos)
                    n = len(words)
                count += 1
                if count > budget:
                    raise self._reject(buf, pos, RejectReason.BUDGET_EXCEEDED,
                                       f"the workload has more than {budget} commands")
                if kind == _K_PLAIN:
                    pos += length
                    continue
                if kind == _K_AUDIT:
                    entry = (code >> ENTRY_SHIFT) - 1
                    findings = self.findings
                    findings.buffer = buf.id
                    findings.base = pos
                    fail = _AUDIT_FN[entry](words[pos:pos + length], T.COMMANDS[entry], self.ctx,
                                            buf.privileged, findings)
                    if fail is not None:
                        raise self._reject(buf, pos, fail[0], fail[1])
                    pos += length
                    continue
                if kind == _K_END:
                    if is_ring:
                        raise self._reject(buf, pos, RejectReason.BAD_BATCH_NESTING,
                                           "MI_BATCH_BUFFER_END in the ring")
                    return pos + 1
                # _K_START
                if self._batch_start(buf, pos, words[pos:pos + length]):
                    return pos + length
                pos += length
        finally:
            self.commands = count

    def _refuse(self, buf: _Buffer, pos: int, kind: int, code: int) -> _Rejected:
        """The rejection of a header the decoder refused outright."""
        if kind == _K_UNKNOWN:
            return self._reject(buf, pos, RejectReason.UNKNOWN_COMMAND,
                                f"header {buf.words[pos]:#010x} names no command of this engine")
        info = T.COMMANDS[(code >> ENTRY_SHIFT) - 1]
        if kind == _K_BAD_LENGTH:
            return self._reject(buf, pos, RejectReason.BAD_LENGTH,
                                f"{info.name} of {code & LEN_FIELD} dwords: allowed "
                                f"{info.min_length}..{info.max_length}")
        return self._reject(buf, pos, RejectReason.PRIVILEGED_COMMAND,
                            f"{info.name} is privileged-only")

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
            data = buf.chunks[0] if len(buf.chunks) == 1 else np.concatenate(buf.chunks)
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
