"""How an engine reaches memory: graphics address -> bus frame -> host page.

An engine sees two graphics address spaces (facts 4): the global GTT, whose
entries live in the host GGTT, and the PPGTT of the running context, whose
root pointers the context image carries (for a vGPU, the roots of its shadow
tables). Both end in the host's system-memory registry.

Nothing here reads zeros for an address nobody mapped: a non-present entry,
an entry on a scratch page, a frame nobody registered, or a GGTT address
outside the windows a context may use raises :class:`Fault`, which the
command streamer turns into an engine fault of the running context. The
windows are how a vGPU's context is confined to its own partition of the
GGTT (plus, for command fetch only, the host pages holding its shadow ring
and, with the scanner, its shadow batch buffers).

Translations are cached per space (a TLB) for the life of the context, as
on the hardware: a command that invalidates TLBs (MI_FLUSH_DW or
PIPE_CONTROL with the TLB-invalidate bit) flushes them, and a cached
translation only ever names a page of the context's own memory. Page-table
pages read during a walk are cached only while the context runs without
interruption (:meth:`AddressSpace.forget_tables` at every time slice): they
are host pages the shadow code may free and reuse in between.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from typing import Protocol

import attrs
import numpy as np

from gvt_core.errors import DmaFault
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, SystemMemory

_PRESENT = regs.GEN8_PAGE_PRESENT
_PS = regs.PPGTT_PS
_ADDR = regs.GTT_ADDR_MASK
_ADDR_U = np.uint64(regs.GTT_ADDR_MASK)
_SHIFT_U = np.uint64(PAGE_SHIFT)
_ONE_U = np.uint64(1)
_ENTRIES = regs.PPGTT_ENTRIES_PER_PAGE
_FRAMES_2M = regs.PAGE_SIZE_2M >> PAGE_SHIFT
_FRAMES_1G = regs.PAGE_SIZE_1G >> PAGE_SHIFT


class Access(enum.IntEnum):
    """Why an engine touches memory: the GGTT windows differ for command fetch."""

    FETCH = 0
    READ = 1
    WRITE = 2


class FaultKind(enum.Enum):
    """Why an engine stopped a context (each a fault of that context, never of the host)."""

    UNMAPPED = "address not mapped"
    OUTSIDE_PARTITION = "GGTT address outside the context's partition"
    NO_PPGTT = "PPGTT address in a context without a PPGTT"
    UNKNOWN_COMMAND = "unknown command"
    WRONG_ENGINE = "command not accepted by this engine"
    NOT_MODELLED = "command not modelled by the software engine"
    BAD_COMMAND = "malformed command"
    BAD_RING = "bad ring"
    BATCH_NESTING = "batch buffer nesting too deep"
    WATCHDOG = "watchdog: workload ran past its time budget"


class Fault(Exception):
    """Raised inside an engine; the command streamer reports it as an :class:`EngineFault`."""

    def __init__(self, kind: FaultKind, address: int = 0, detail: str = "") -> None:
        super().__init__(f"{kind.value} at {address:#x}{': ' + detail if detail else ''}")
        self.kind = kind
        self.address = address
        self.detail = detail


@attrs.frozen
class EngineFault:
    """What the engine reports when it stops a context."""

    kind: FaultKind
    address: int
    detail: str
    #: the command being executed, when there was one.
    command: str = ""

    def __str__(self) -> str:
        where = f" in {self.command}" if self.command else ""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.kind.value} at {self.address:#x}{where}{extra}"


class AddressSpace(Protocol):
    """A graphics address space as an engine uses it."""

    #: "ggtt" or "ppgtt" (for fault messages and traces).
    name: str

    def page(self, vpn: int, access: Access) -> memoryview:
        """The 4 KiB host page behind graphics page ``vpn``; raises :class:`Fault`."""
        ...

    def pages(self, gma: int, length: int, access: Access) -> list[memoryview]:
        """The host pages behind ``[gma, gma + length)`` in order (vectorised
        translation); raises :class:`Fault` if any of them is unreachable."""
        ...

    def flush(self) -> None:
        """Forget cached translations (a TLB invalidation)."""
        ...

    def forget_tables(self) -> None:
        """Forget cached page-table pages (not the translations): the tables'
        host pages may be freed and reused whenever the context's vGPU is not
        running, so walks must read them afresh; a translation already made
        names a page of the vGPU's own memory and stays valid until a TLB
        invalidation, as on the hardware."""
        ...


def _pages_of(sysmem: SystemMemory, frames: Sequence[int], first_gma: int) -> list[memoryview]:
    try:
        return sysmem.pages_of(frames)
    except DmaFault as exc:
        raise Fault(FaultKind.UNMAPPED, first_gma, f"no system memory at {exc}") from None


@attrs.define(eq=False)
class GgttSpace:
    """The global GTT as one context may use it.

    ``windows`` are the graphics-address ranges the context may read and
    write (a vGPU's two GM ranges; everything for a host context);
    ``fetch_windows`` may only be fetched from (the host pages of a vGPU's
    shadow ring). Host entries on a frame of ``fault_frames`` (the scratch
    pages unmapped entries point at) count as unmapped.
    """

    ggtt: np.ndarray
    sysmem: SystemMemory
    fault_frames: frozenset[int]
    windows: tuple[tuple[int, int], ...] = ((0, regs.GM_TOTAL),)
    fetch_windows: tuple[tuple[int, int], ...] = ()
    name: str = "ggtt"
    _tlb: dict[int, memoryview] = attrs.field(factory=dict, init=False)
    _fetch_tlb: dict[int, memoryview] = attrs.field(factory=dict, init=False)

    def flush(self) -> None:
        self._tlb.clear()
        self._fetch_tlb.clear()

    def forget_tables(self) -> None:
        """The GGTT's entries are read at each miss: nothing is cached but translations."""

    def add_fetch_window(self, start: int, end: int) -> None:
        self.fetch_windows = (*self.fetch_windows, (start, end))
        self._fetch_tlb.clear()

    @staticmethod
    def _inside(windows: tuple[tuple[int, int], ...], start: int, end: int) -> bool:
        return any(lo <= start and end <= hi for lo, hi in windows)

    def page(self, vpn: int, access: Access) -> memoryview:
        view = self._tlb.get(vpn)
        if view is not None:
            return view
        if access is Access.FETCH:
            view = self._fetch_tlb.get(vpn)
            if view is not None:
                return view
        return self._miss(vpn, access)

    def _miss(self, vpn: int, access: Access) -> memoryview:
        gma = vpn << PAGE_SHIFT
        if self._inside(self.windows, gma, gma + PAGE_SIZE):
            tlb = self._tlb
        elif access is Access.FETCH and self._inside(self.fetch_windows, gma, gma + PAGE_SIZE):
            tlb = self._fetch_tlb
        else:
            raise Fault(FaultKind.OUTSIDE_PARTITION, gma)
        pte = int(self.ggtt[vpn])
        frame = (pte & _ADDR) >> PAGE_SHIFT
        if not pte & _PRESENT or frame in self.fault_frames:
            raise Fault(FaultKind.UNMAPPED, gma, "GGTT entry not mapped")
        view = _pages_of(self.sysmem, (frame,), gma)[0]
        tlb[vpn] = view
        return view

    def pages(self, gma: int, length: int, access: Access) -> list[memoryview]:
        if length <= 0:
            return []
        end = gma + length
        first, last = gma >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        vpns = range(first, last + 1)
        hits = list(map(self._tlb.get, vpns))
        if None not in hits:
            return hits  # type: ignore[return-value]
        views = self._translate(gma, end, first, last, access)
        if len(views) == len(vpns) and self._inside(self.windows, first << PAGE_SHIFT,
                                                    (last + 1) << PAGE_SHIFT):
            self._tlb.update(zip(vpns, views, strict=True))
        return views

    def _translate(self, gma: int, end: int, first: int, last: int,
                   access: Access) -> list[memoryview]:
        span_lo, span_hi = first << PAGE_SHIFT, (last + 1) << PAGE_SHIFT
        if not (gma >= 0 and end <= regs.GM_TOTAL and self._inside(self.windows, span_lo, span_hi)):
            return [self.page(v, access) for v in range(first, last + 1)]
        ptes = self.ggtt[first : last + 1]
        frames = (ptes & _ADDR_U) >> _SHIFT_U
        bad = (ptes & _ONE_U) == 0
        if self.fault_frames:
            bad |= np.isin(frames, np.fromiter(self.fault_frames, np.uint64))
        if bad.any():
            at = int(np.flatnonzero(bad)[0])
            raise Fault(FaultKind.UNMAPPED, (first + at) << PAGE_SHIFT, "GGTT entry not mapped")
        return _pages_of(self.sysmem, frames.tolist(), gma)


@attrs.define(eq=False)
class PpgttSpace:
    """A context's PPGTT, walked through its (shadow) tables in system memory.

    ``roots`` are bus addresses: four PD pointers for 3 levels, the PML4 in
    ``roots[0]`` for 4 levels. Leaves on a frame of ``fault_frames`` (the
    vGPU's scratch page) count as unmapped.
    """

    sysmem: SystemMemory
    levels: int
    roots: tuple[int, ...]
    fault_frames: frozenset[int] = frozenset()
    name: str = "ppgtt"
    _tlb: dict[int, memoryview] = attrs.field(factory=dict, init=False)
    _tables: dict[int, np.ndarray] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        if self.levels not in (3, 4):
            raise ValueError(f"a PPGTT has 3 or 4 levels, not {self.levels}")

    @property
    def limit(self) -> int:
        return regs.PPGTT_L4_GM_SIZE if self.levels == 4 else regs.PPGTT_L3_GM_SIZE

    def flush(self) -> None:
        self._tlb.clear()
        self._tables.clear()

    def forget_tables(self) -> None:
        self._tables.clear()

    def _table(self, addr: int, gma: int) -> np.ndarray:
        frame = addr >> PAGE_SHIFT
        t = self._tables.get(frame)
        if t is None:
            if frame in self.fault_frames:
                raise Fault(FaultKind.UNMAPPED, gma, "PPGTT table on scratch")
            t = np.frombuffer(_pages_of(self.sysmem, (frame,), gma)[0], dtype="<u8")
            self._tables[frame] = t
        return t

    def _walk(self, gma: int) -> tuple[int, int, np.ndarray | None]:
        """(first frame, frames covered, PT or None) of the leaf that maps ``gma``."""
        if not 0 <= gma < self.limit:
            raise Fault(FaultKind.UNMAPPED, gma, f"beyond the {self.levels}-level PPGTT")
        if self.levels == 4:
            addr, level = self.roots[0], 4
        else:
            addr, level = self.roots[(gma >> regs.PPGTT_PDPE_SHIFT) & regs.PPGTT_L3_PDPE_MASK], 2
        while True:
            table = self._table(addr, gma)
            if level == 1:
                return 0, 1, table
            e = int(table[(gma >> (PAGE_SHIFT + 9 * (level - 1))) & regs.PPGTT_INDEX_MASK])
            if not e & _PRESENT:
                raise Fault(FaultKind.UNMAPPED, gma, f"level-{level} PPGTT entry not present")
            if e & _PS and level == 3:
                return (e & regs.ADDR_MASK_1G) >> PAGE_SHIFT, _FRAMES_1G, None
            if e & _PS and level == 2:
                return (e & regs.ADDR_MASK_2M) >> PAGE_SHIFT, _FRAMES_2M, None
            addr = e & _ADDR
            level -= 1

    def _frame(self, vpn: int) -> int:
        gma = vpn << PAGE_SHIFT
        base, span, pt = self._walk(gma)
        if pt is None:
            frame = base + (vpn & (span - 1))
        else:
            e = int(pt[vpn & regs.PPGTT_INDEX_MASK])
            if not e & _PRESENT:
                raise Fault(FaultKind.UNMAPPED, gma, "PPGTT entry not present")
            frame = (e & _ADDR) >> PAGE_SHIFT
        if frame in self.fault_frames:
            raise Fault(FaultKind.UNMAPPED, gma, "PPGTT entry on scratch")
        return frame

    def page(self, vpn: int, access: Access) -> memoryview:
        view = self._tlb.get(vpn)
        if view is None:
            view = _pages_of(self.sysmem, (self._frame(vpn),), vpn << PAGE_SHIFT)[0]
            self._tlb[vpn] = view
        return view

    def pages(self, gma: int, length: int, access: Access) -> list[memoryview]:
        if length <= 0:
            return []
        first, last = gma >> PAGE_SHIFT, (gma + length - 1) >> PAGE_SHIFT
        vpns = range(first, last + 1)
        hits = list(map(self._tlb.get, vpns))
        if None not in hits:
            return hits  # type: ignore[return-value]
        views = self._translate(gma, first, last)
        self._tlb.update(zip(vpns, views, strict=True))
        return views

    def _translate(self, gma: int, first: int, last: int) -> list[memoryview]:
        frames: list[int] = []
        vpn = first
        while vpn <= last:
            base, span, pt = self._walk(vpn << PAGE_SHIFT)
            # pages of this leaf table (or huge page) that the range covers
            end = min(last + 1, (vpn | (_ENTRIES - 1)) + 1 if pt is not None else
                      (vpn | (span - 1)) + 1)
            if pt is None:
                lo = vpn & (span - 1)
                frames.extend(range(base + lo, base + lo + (end - vpn)))
            else:
                ents = pt[vpn & regs.PPGTT_INDEX_MASK : ((end - 1) & regs.PPGTT_INDEX_MASK) + 1]
                if not bool(np.all(ents & _ONE_U)):
                    at = vpn + int(np.flatnonzero((ents & _ONE_U) == 0)[0])
                    raise Fault(FaultKind.UNMAPPED, at << PAGE_SHIFT, "PPGTT entry not present")
                frames.extend(((ents & _ADDR_U) >> _SHIFT_U).tolist())
            vpn = end
        if self.fault_frames and not self.fault_frames.isdisjoint(frames):
            at = next(i for i, f in enumerate(frames) if f in self.fault_frames)
            raise Fault(FaultKind.UNMAPPED, (first + at) << PAGE_SHIFT, "PPGTT entry on scratch")
        return _pages_of(self.sysmem, frames, gma)


# --- byte access helpers (an engine's loads and stores) -----------------------------------------
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def read(space: AddressSpace, gma: int, length: int, access: Access = Access.READ) -> bytes:
    off = gma & PAGE_MASK
    if off + length <= PAGE_SIZE:
        return bytes(space.page(gma >> PAGE_SHIFT, access)[off : off + length])
    out = bytearray()
    for i, page in enumerate(space.pages(gma, length, access)):
        lo = off if i == 0 else 0
        hi = min(PAGE_SIZE, lo + length - len(out))
        out += page[lo:hi]
    return bytes(out)


def write(space: AddressSpace, gma: int, data: bytes) -> None:
    off = gma & PAGE_MASK
    n = len(data)
    if off + n <= PAGE_SIZE:
        space.page(gma >> PAGE_SHIFT, Access.WRITE)[off : off + n] = data
        return
    pos = 0
    for i, page in enumerate(space.pages(gma, n, Access.WRITE)):
        lo = off if i == 0 else 0
        k = min(PAGE_SIZE - lo, n - pos)
        page[lo : lo + k] = data[pos : pos + k]
        pos += k


def read_u32(space: AddressSpace, gma: int, access: Access = Access.READ) -> int:
    off = gma & PAGE_MASK
    if off <= PAGE_SIZE - 4:
        return _U32.unpack_from(space.page(gma >> PAGE_SHIFT, access), off)[0]
    return int.from_bytes(read(space, gma, 4, access), "little")


def write_u32(space: AddressSpace, gma: int, value: int) -> None:
    off = gma & PAGE_MASK
    if off <= PAGE_SIZE - 4:
        _U32.pack_into(space.page(gma >> PAGE_SHIFT, Access.WRITE), off, value & 0xFFFF_FFFF)
    else:
        write(space, gma, (value & 0xFFFF_FFFF).to_bytes(4, "little"))


def write_u64(space: AddressSpace, gma: int, value: int) -> None:
    off = gma & PAGE_MASK
    value &= 0xFFFF_FFFF_FFFF_FFFF
    if off <= PAGE_SIZE - 8:
        _U64.pack_into(space.page(gma >> PAGE_SHIFT, Access.WRITE), off, value)
    else:
        write(space, gma, value.to_bytes(8, "little"))
