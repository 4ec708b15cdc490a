"""Native submission: the host driver running its own context on an engine, no vGPU.

What the host i915 would do without GVT-g: put a ring in the host's graphics
memory, give the context a PPGTT of its own (host page tables, host pages)
or let it use the GGTT, write a context image, and let an engine execute
it. The native-versus-virtual benchmark measures this path against a guest
submitting the same work through its vGPU; tests use it to exercise the
engines on their own. Only use it on a host whose engines no scheduler is
driving (a host with no active vGPU).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import attrs
import numpy as np

from gvt_core.hw import regs
from gvt_core.hw.engine import context as lrc
from gvt_core.hw.engine.memory import GgttSpace
from gvt_core.hw.engine.state import ExecContext, RunState
from gvt_core.hw.gm_heap import GmBlock
from gvt_core.hw.gpu import HostGpu
from gvt_core.hw.sysmem import PAGE_SIZE

#: GPU time a native run may take before it is declared hung (10 s).
NATIVE_HANG_NS = 10_000_000_000
#: slice length of a native run (the engine checks between commands).
NATIVE_SLICE_NS = 1_000_000
_OWNER = "native"


@attrs.define(eq=False)
class NativeBuffer:
    """Host pages mapped at ``gma`` in a :class:`NativePpgtt`."""

    gma: int
    pages: list[tuple[int, memoryview]]

    @property
    def size(self) -> int:
        return len(self.pages) * PAGE_SIZE

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            i, off = divmod(offset + len(out), PAGE_SIZE)
            k = min(PAGE_SIZE - off, length - len(out))
            out += self.pages[i][1][off : off + k]
        return bytes(out)


class NativePpgtt:
    """A 4-level PPGTT the host builds for its own context: tables and pages are
    host pages, entries hold their bus frames."""

    levels = 4

    def __init__(self, gpu: HostGpu) -> None:
        self.gpu = gpu
        self._owned: list[tuple[int, memoryview]] = []
        self.pml4 = self._table()
        self._tables: dict[tuple[int, int], tuple[int, np.ndarray]] = {}
        self.next_va = 0x10_0000

    def _table(self) -> tuple[int, np.ndarray]:
        frame, page = self.gpu.pages.alloc(owner=_OWNER)
        self._owned.append((frame, page))
        return frame, np.frombuffer(page, dtype="<u8")

    @property
    def root(self) -> int:
        return self.pml4[0] << 12

    def _pt(self, va: int) -> np.ndarray:
        ents = self.pml4[1]
        for level in (4, 3, 2):
            shift = 12 + 9 * (level - 1)
            key = (level - 1, va >> shift)
            child = self._tables.get(key)
            if child is None:
                child = self._tables[key] = self._table()
                ents[(va >> shift) & regs.PPGTT_INDEX_MASK] = (
                    (child[0] << 12) | regs.PPGTT_PRESENT | regs.PPGTT_RW)
            ents = child[1]
        return ents

    def alloc(self, size: int) -> NativeBuffer:
        """Fresh host pages mapped at the next free address."""
        npages = (size + PAGE_SIZE - 1) // PAGE_SIZE
        pages = self.gpu.pages.alloc_many(npages, owner=_OWNER)
        self._owned += pages
        gma = self.next_va
        self.next_va += (npages + 1) * PAGE_SIZE
        for i, (frame, _) in enumerate(pages):
            va = gma + i * PAGE_SIZE
            self._pt(va)[(va >> 12) & regs.PPGTT_INDEX_MASK] = (
                (frame << 12) | regs.PPGTT_PRESENT | regs.PPGTT_RW)
        return NativeBuffer(gma, pages)

    def close(self) -> None:
        for frame, page in self._owned:
            self.gpu.pages.free(frame, page)
        self._owned.clear()


class NativeContext:
    """A host context on one engine: an LRC register-state page and a ring in host GM,
    with its own PPGTT when given one (else its memory operands use the GGTT)."""

    def __init__(self, gpu: HostGpu, engine_id: int, ring_pages: int = 8,
                 ppgtt: NativePpgtt | None = None) -> None:
        self.gpu = gpu
        self.ppgtt = ppgtt
        self.engine = gpu.engines[engine_id]
        self.ring = gpu.host_gm.alloc(ring_pages, owner=_OWNER)
        self.state_frame, self.state = gpu.pages.alloc(owner=_OWNER)
        self.ggtt = GgttSpace(gpu.ggtt, gpu.sysmem, frozenset({gpu.scratch_frame}))
        self.tail = 0
        self._set(lrc.CTX_RING_BUFFER_START, self.ring.gm)
        self._set(lrc.CTX_RING_BUFFER_CONTROL, lrc.ring_ctl(self.ring.size))
        self._set(lrc.CTX_RING_HEAD, 0)
        self._set(lrc.CTX_RING_TAIL, 0)
        if ppgtt is not None:
            lo, hi = lrc.CTX_PDP[0]
            self._set(lo, ppgtt.root & 0xFFFF_FFFF)
            self._set(hi, ppgtt.root >> 32)
        self.time_ns = 0

    def _set(self, index: int, value: int) -> None:
        struct.pack_into("<I", self.state, 4 * (index + 1), value & 0xFFFF_FFFF)

    def _get(self, index: int) -> int:
        return int(struct.unpack_from("<I", self.state, 4 * (index + 1))[0])

    def emit(self, dwords: Sequence[int]) -> None:
        """Append commands to the ring (padded to a qword with MI_NOOP, as i915 does)."""
        words = list(dwords) + ([0] if len(dwords) % 2 else [])
        data = struct.pack(f"<{len(words)}I", *words)
        size = self.ring.size
        head = self._get(lrc.CTX_RING_HEAD) & lrc.RB_HEAD_OFF_MASK
        if len(data) >= size - ((self.tail - head) % size):
            raise ValueError(f"{len(data)} bytes do not fit the {size}-byte ring")
        first = min(len(data), size - self.tail)
        self.ring.write(self.tail, data[:first])
        if first < len(data):
            self.ring.write(0, data[first:])
        self.tail = (self.tail + len(data)) % size
        self._set(lrc.CTX_RING_TAIL, self.tail)

    def run(self) -> ExecContext:
        """Execute everything up to the tail; returns the finished (or faulted) context."""
        levels = self.ppgtt.levels if self.ppgtt is not None else None
        ctx = self.engine.load_context(self.state, levels=levels, ggtt=self.ggtt)
        state = RunState.RUNNING
        while state in (RunState.RUNNING, RunState.WAITING) and ctx.cost_ns < NATIVE_HANG_NS:
            state = self.engine.run(ctx, NATIVE_SLICE_NS, self.time_ns + ctx.cost_ns)
        self.time_ns += ctx.cost_ns
        if ctx.fault is None:
            self.engine.save_context(ctx, self.state)
        return ctx

    def close(self) -> None:
        self.gpu.host_gm.free(self.ring)
        self.gpu.pages.free(self.state_frame, self.state)


def buffer(gpu: HostGpu, size: int) -> GmBlock:
    """Host memory of ``size`` bytes mapped in host GM (free with ``gpu.host_gm.free``)."""
    return gpu.host_gm.alloc((size + PAGE_SIZE - 1) // PAGE_SIZE, owner=_OWNER)
