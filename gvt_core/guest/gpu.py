"""The guest i915's command submission, over a :class:`~gvt_core.guest.port.GuestPort`.

After :meth:`GuestDriver.load`, a :class:`GuestGpu` does what the guest's
execlist backend does: it puts a hardware status page behind each engine's
RING_HWS_PGA, switches the engines to execlist mode, unmasks their
context-switch interrupts, and then builds logical ring contexts
(:class:`GuestContext`: an LRC image and a ring in the vGPU's graphics
memory, with a PPGTT of its own, 3- or 4-level, whose tables live in guest
RAM), writes commands and batch buffers, submits contexts through ELSP,
waits for the context-switch MSI and reads the context-status buffer from
its status page as i915 does.

Everything is a guest access: register writes are MMIO (real exits on
kvmgt), page-table and ring writes are CPU stores (trapped when the host
tracks the page), results are read from guest RAM.
"""

from __future__ import annotations

import itertools
import struct
import time
from collections.abc import Callable, Iterable, Sequence

import attrs

from gvt_core.errors import GuestDriverError
from gvt_core.guest import commands as cmd
from gvt_core.guest.driver import GuestDriver, GuestRam, notify_ppgtt
from gvt_core.guest.port import GuestPort
from gvt_core.hw import regs
from gvt_core.hw.engine import context as lrc

PAGE = regs.GTT_PAGE_SIZE
_ENGINE_NAMES = {v: k for k, v in regs.ENGINE_IDS.items()}
#: GT interrupt bits the guest unmasks per engine (bank, bits): user interrupt and
#: context switch (facts 6.2); RCS/BCS share GT0, VCS/VCS2 GT1, VECS GT3.
_IRQ_BITS = {
    regs.ENGINE_RCS: (0, regs.GT_RENDER_USER_INTERRUPT | regs.GT_CONTEXT_SWITCH_INTERRUPT),
    regs.ENGINE_BCS: (0, (regs.GT_RENDER_USER_INTERRUPT | regs.GT_CONTEXT_SWITCH_INTERRUPT) << 16),
    regs.ENGINE_VCS: (1, regs.GT_RENDER_USER_INTERRUPT | regs.GT_CONTEXT_SWITCH_INTERRUPT),
    regs.ENGINE_VCS2: (1, (regs.GT_RENDER_USER_INTERRUPT | regs.GT_CONTEXT_SWITCH_INTERRUPT)
                       << 16),
    regs.ENGINE_VECS: (3, regs.GT_RENDER_USER_INTERRUPT | regs.GT_CONTEXT_SWITCH_INTERRUPT),
}
#: CSB status bits the guest decodes (facts 7.2).
CSB_IDLE_TO_ACTIVE = 1 << 0
CSB_PREEMPTED = 1 << 1
CSB_ELEMENT_SWITCH = 1 << 2
CSB_ACTIVE_TO_IDLE = 1 << 3
CSB_CONTEXT_COMPLETE = 1 << 4
CSB_LITE_RESTORE = 1 << 15
#: i915 starts reading the CSB after the last entry.
CSB_HEAD_RESET = regs.GEN8_CSB_ENTRIES - 1
#: dword of the per-process status page the breadcrumb (last completed seqno) lands in.
SEQNO_INDEX = 0x30


def _base(engine: int) -> int:
    return regs.ENGINE_BASES[_ENGINE_NAMES[engine]]


@attrs.frozen
class CsbEvent:
    """One context-status-buffer entry as the guest read it."""

    engine: int
    status: int
    context_id: int

    @property
    def complete(self) -> bool:
        return bool(self.status & CSB_CONTEXT_COMPLETE)


@attrs.define
class GmBump:
    """The guest's bump allocator of graphics memory inside one of its ranges."""

    base: int
    end: int
    next: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.next = self.base

    def alloc(self, size: int) -> int:
        size = (size + PAGE - 1) & ~(PAGE - 1)
        if self.next + size > self.end:
            raise GuestDriverError("allocate graphics memory",
                                   f"{size} bytes do not fit below {self.end:#x}")
        gm = self.next
        self.next += size
        return gm


@attrs.frozen
class GuestBuffer:
    """Guest RAM mapped at a graphics address (GGTT or a context's PPGTT)."""

    gma: int
    gpa: int
    size: int
    port: GuestPort

    def write(self, offset: int, data: bytes) -> None:
        self.port.mem_write(self.gpa + offset, data)

    def read(self, offset: int, length: int) -> bytes:
        return self.port.mem_read(self.gpa + offset, length)

    def write_dwords(self, offset: int, dwords: Sequence[int]) -> None:
        self.write(offset, struct.pack(f"<{len(dwords)}I", *dwords))

    def read_dwords(self, offset: int, count: int) -> tuple[int, ...]:
        return struct.unpack(f"<{count}I", self.read(offset, 4 * count))


class GuestPpgtt:
    """A PPGTT whose tables live in guest RAM, written by guest CPU stores.

    New page tables are filled before the entry pointing at them is written,
    as a driver does, so the host shadows them in one go when it sees the
    pointer; entries of tables already in use are stores the host traps.
    """

    def __init__(self, gpu: GuestGpu, levels: int) -> None:
        if levels not in (3, 4):
            raise ValueError(f"a PPGTT has 3 or 4 levels, not {levels}")
        self.gpu = gpu
        self.port = gpu.port
        self.levels = levels
        count = 1 if levels == 4 else regs.PPGTT_L3_PDPES
        self.root_pages = [self._new_table() for _ in range(count)]
        self.roots: tuple[int, int, int, int] = tuple(  # type: ignore[assignment]
            [*self.root_pages, 0, 0, 0, 0][:4])
        #: guest address of every table below the roots, by (level, va >> shift of its parent).
        self._tables: dict[tuple[int, int], int] = {}
        self.next_va = 0x10_0000
        self.limit = regs.PPGTT_L4_GM_SIZE if levels == 4 else regs.PPGTT_L3_GM_SIZE

    def _new_table(self, entries: dict[int, int] | None = None) -> int:
        gpa = self.gpu.ram.alloc(PAGE)
        page = bytearray(PAGE)
        for idx, value in (entries or {}).items():
            struct.pack_into("<Q", page, 8 * idx, value)
        self.port.mem_write(gpa, bytes(page))
        return gpa

    def _store_entry(self, table: int, idx: int, value: int) -> None:
        self.port.store(table + 8 * idx, value, 8)

    def _top(self, gma: int) -> tuple[int, int]:
        if self.levels == 4:
            return self.root_pages[0], 4
        return self.root_pages[(gma >> regs.PPGTT_PDPE_SHIFT) & regs.PPGTT_L3_PDPE_MASK], 2

    def map(self, gma: int, gpas: Sequence[int], flags: int = regs.PPGTT_RW) -> None:
        """Map the 4 KiB guest pages ``gpas`` at ``gma`` onward (one PT at a time)."""
        i = 0
        while i < len(gpas):
            va = gma + i * PAGE
            first = (va >> regs.PPGTT_PTE_SHIFT) & regs.PPGTT_INDEX_MASK
            n = min(len(gpas) - i, regs.PPGTT_ENTRIES_PER_PAGE - first)
            ptes = {first + k: gpas[i + k] | regs.PPGTT_PRESENT | flags for k in range(n)}
            self._map_pt(va, ptes)
            i += n

    def _map_pt(self, va: int, ptes: dict[int, int]) -> None:
        table, level = self._top(va)
        while level > 1:
            shift = regs.PPGTT_PTE_SHIFT + 9 * (level - 1)
            idx = (va >> shift) & regs.PPGTT_INDEX_MASK
            tkey = (level - 1, va >> shift)
            child = self._tables.get(tkey)
            if child is None:
                child = self._new_table(ptes if level == 2 else None)
                self._tables[tkey] = child
                self._store_entry(table, idx, child | regs.PPGTT_PRESENT | regs.PPGTT_RW)
                if level == 2:
                    return
            table = child
            level -= 1
        data = bytearray()
        lo, hi = min(ptes), max(ptes)
        for idx in range(lo, hi + 1):
            data += struct.pack("<Q", ptes.get(idx, 0))
        self.port.mem_write(table + 8 * lo, bytes(data))

    def alloc(self, size: int, flags: int = regs.PPGTT_RW) -> GuestBuffer:
        """Fresh guest RAM mapped at the next free PPGTT address."""
        npages = (size + PAGE - 1) // PAGE
        gpa = self.gpu.ram.alloc(npages * PAGE)
        gma = self.next_va
        if gma + npages * PAGE > self.limit:
            raise GuestDriverError("allocate PPGTT space", "the address space is full")
        self.next_va += npages * PAGE + PAGE  # a guard page between buffers
        self.map(gma, [gpa + k * PAGE for k in range(npages)], flags)
        return GuestBuffer(gma, gpa, npages * PAGE, self.port)


class GuestContext:
    """A logical ring context on one engine: LRC image, ring, PPGTT (facts 7.4)."""

    def __init__(self, gpu: GuestGpu, engine: int, ppgtt: GuestPpgtt, ring_pages: int) -> None:
        self.gpu = gpu
        self.engine = engine
        self.ppgtt = ppgtt
        self.levels = ppgtt.levels
        self.context_id = next(gpu._context_ids)
        self.lrc = gpu.ggtt_buffer(2 * PAGE)
        self.ring = gpu.ggtt_buffer(ring_pages * PAGE)
        self.tail = 0
        self.sealed_tail = 0
        #: the last breadcrumb emitted (see :meth:`seal`).
        self.seqno = 0
        self._write_image()

    def _write_image(self) -> None:
        base = _base(self.engine)
        words = [0] * lrc.RING_CTX_DWORDS

        def reg(index: int, offset: int, value: int) -> None:
            words[index], words[index + 1] = offset, value & 0xFFFF_FFFF

        words[lrc.CTX_LRI_HEADER_0] = 0x1100_1000 | (2 * 14 - 1)  # MI_LOAD_REGISTER_IMM(14)
        reg(lrc.CTX_CONTEXT_CONTROL, base + regs.RING_CONTEXT_CONTROL,
            (lrc.CTX_CTRL_ENGINE_CTX_RESTORE_INHIBIT << regs.MASKED_WRITE_SHIFT))
        reg(lrc.CTX_RING_HEAD, base + regs.RING_HEAD, 0)
        reg(lrc.CTX_RING_TAIL, base + regs.RING_TAIL, 0)
        reg(lrc.CTX_RING_BUFFER_START, base + regs.RING_START, self.ring.gma)
        reg(lrc.CTX_RING_BUFFER_CONTROL, base + regs.RING_CTL, lrc.ring_ctl(self.ring.size))
        words[lrc.CTX_LRI_HEADER_1] = 0x1100_1000 | (2 * 9 - 1)
        reg(lrc.CTX_CTX_TIMESTAMP, base + regs.RING_CTX_TIMESTAMP, 0)
        for n, (lo_i, hi_i) in enumerate(lrc.CTX_PDP):
            root = self.ppgtt.roots[n]
            reg(lo_i, base + regs.RING_PDP_BASE + 8 * n, root)
            reg(hi_i, base + regs.RING_PDP_BASE + 8 * n + 4, root >> 32)
        self.lrc.write(0, bytes(PAGE))
        self.lrc.write(PAGE, struct.pack(f"<{len(words)}I", *words))

    def _state(self, index: int) -> int:
        return struct.unpack("<I", self.lrc.read(PAGE + 4 * (index + 1), 4))[0]

    @property
    def head(self) -> int:
        """Where the engine stopped (written back into the image at each completion)."""
        return self._state(lrc.CTX_RING_HEAD) & lrc.RB_HEAD_OFF_MASK

    @property
    def pphwsp(self) -> GuestBuffer:
        return GuestBuffer(self.lrc.gma, self.lrc.gpa, PAGE, self.lrc.port)

    def descriptor(self) -> int:
        return lrc.descriptor(self.lrc.gma, self.context_id, self.levels)

    def emit(self, dwords: Iterable[int]) -> None:
        """Append commands to the ring (padded to a qword with MI_NOOP)."""
        words = list(dwords)
        if len(words) % 2:
            words.append(0)
        data = struct.pack(f"<{len(words)}I", *words)
        size = self.ring.size
        if len(data) >= size - (self.tail - self.head) % size:
            raise GuestDriverError("write the ring", f"{len(data)} bytes do not fit; wait "
                                   "for the engine to consume the ring")
        first = min(len(data), size - self.tail)
        self.ring.write(self.tail, data[:first])
        if first < len(data):
            self.ring.write(0, data[first:])
        self.tail = (self.tail + len(data)) % size

    def seal(self) -> int:
        """End what was emitted with a breadcrumb, as i915 ends every request: the
        engine stores the next seqno into the context's status page when it gets
        there. Returns that seqno."""
        self.seqno += 1
        self.emit(cmd.store_dword_index(4 * SEQNO_INDEX, self.seqno, pphwsp=True))
        return self.seqno

    @property
    def done_seqno(self) -> int:
        """The last breadcrumb the engine wrote."""
        return struct.unpack("<I", self.lrc.read(4 * SEQNO_INDEX, 4))[0]

    @property
    def idle(self) -> bool:
        return self.done_seqno == self.seqno

    def publish_tail(self) -> None:
        """Write the ring tail into the context image (before an ELSP write)."""
        self.lrc.write(PAGE + 4 * (lrc.CTX_RING_TAIL + 1), struct.pack("<I", self.tail))


class GuestGpu:
    """The guest's execlist submission on its vGPU (see the module docstring)."""

    def __init__(self, driver: GuestDriver, engines: Iterable[int] = (regs.ENGINE_RCS,
                                                                      regs.ENGINE_BCS)) -> None:
        if driver.report is None or driver.ram is None:
            raise GuestDriverError("use the GPU", "load the driver first")
        self.driver = driver
        self.port = driver.port
        self.ram: GuestRam = driver.ram
        rep = driver.report
        self.gm = GmBump(rep.nonmappable.base + rep.ring_pages * PAGE, rep.nonmappable.end)
        self.gm_mappable = GmBump(rep.mappable.base + rep.framebuffer_pages * PAGE,
                                  rep.mappable.end)
        self.engines = tuple(engines)
        self.hwsp: dict[int, GuestBuffer] = {}
        self.csb_head: dict[int, int] = {}
        self.completed: dict[int, int] = {}
        self.events: list[CsbEvent] = []
        self.msis = 0
        #: the rest of the driver's interrupt handler (e.g. the display's), run after
        #: the GT banks on every MSI this object takes, as one i915 handler does.
        self.irq_handlers: list[Callable[[], object]] = []
        self._context_ids = itertools.count(1)
        self._enable()

    # --- set-up -----------------------------------------------------------------------
    def mmio_read(self, offset: int, size: int = 4) -> int:
        return self.driver.mmio_read(offset, size)

    def mmio_write(self, offset: int, value: int, size: int = 4) -> None:
        self.driver.mmio_write(offset, value, size)

    def ggtt_buffer(self, size: int, *, mappable: bool = False) -> GuestBuffer:
        """Fresh guest RAM mapped through the GGTT (hidden GM unless ``mappable``)."""
        npages = (size + PAGE - 1) // PAGE
        gm = (self.gm_mappable if mappable else self.gm).alloc(npages * PAGE)
        gpa = self.ram.alloc(npages * PAGE)
        self.driver.map_gm(gm, gpa, npages, split=False)
        return GuestBuffer(gm, gpa, npages * PAGE, self.port)

    def _enable(self) -> None:
        masks: dict[int, int] = {}
        for e in self.engines:
            base = _base(e)
            self.hwsp[e] = hwsp = self.ggtt_buffer(PAGE)
            hwsp.write_dwords(4 * lrc.HWS_CSB_WRITE_INDEX, [regs.CSB_PTR_RESET])
            self.mmio_write(base + regs.RING_HWS_PGA, hwsp.gma)
            mode = regs.GFX_RUN_LIST_ENABLE | regs.GFX_PPGTT_ENABLE
            self.mmio_write(base + regs.RING_MODE_GEN7, (mode << regs.MASKED_WRITE_SHIFT) | mode)
            if not self.mmio_read(base + regs.RING_MODE_GEN7) & regs.GFX_RUN_LIST_ENABLE:
                raise GuestDriverError("enable execlists",
                                       f"{_ENGINE_NAMES[e]} does not report execlist mode")
            self.csb_head[e] = CSB_HEAD_RESET
            bank, bits = _IRQ_BITS[e]
            masks[bank] = masks.get(bank, 0) | bits
        for bank, bits in masks.items():
            gt = regs.GEN8_GT_ISR_BASE + 0x10 * bank
            self.mmio_write(gt + regs.IRQ_IMR, self.mmio_read(gt + regs.IRQ_IMR) & ~bits)
            self.mmio_write(gt + regs.IRQ_IER, self.mmio_read(gt + regs.IRQ_IER) | bits)
        self.mmio_write(regs.GEN8_MASTER_IRQ, regs.GEN8_MASTER_IRQ_CONTROL)

    def ppgtt(self, levels: int = 4, *, announce: bool = True) -> GuestPpgtt:
        """A new PPGTT; announced to the host through PVINFO as the guest i915 does."""
        pt = GuestPpgtt(self, levels)
        if announce:
            notify_ppgtt(self.port, self.driver.bar0, levels, pt.roots, True)
        return pt

    def context(self, engine: int, ppgtt: GuestPpgtt | None = None, *, levels: int = 4,
                ring_pages: int = 4) -> GuestContext:
        if engine not in self.engines:
            raise GuestDriverError("create a context", f"engine {engine} is not enabled")
        return GuestContext(self, engine, ppgtt or self.ppgtt(levels), ring_pages)

    # --- submission -----------------------------------------------------------------------
    def submit(self, ctx0: GuestContext, ctx1: GuestContext | None = None) -> None:
        """Seal what each context emitted with a breadcrumb, publish the tails and
        write both descriptors to the engine's ELSP."""
        engine = ctx0.engine
        if ctx1 is not None and ctx1.engine != engine:
            raise GuestDriverError("submit", "both elements must be on the same engine")
        for ctx in (ctx0, ctx1):
            if ctx is not None and ctx.tail != ctx.sealed_tail:
                ctx.seal()
                ctx.sealed_tail = ctx.tail
        ctx0.publish_tail()
        d0 = ctx0.descriptor()
        d1 = 0
        if ctx1 is not None:
            ctx1.publish_tail()
            d1 = ctx1.descriptor()
        self.write_elsp(engine, d0, d1)

    def write_elsp(self, engine: int, desc0: int, desc1: int = 0) -> None:
        """The four ELSP dwords in hardware order: element 1 high/low, element 0 high/low."""
        elsp = _base(engine) + regs.RING_ELSP
        for dword in (desc1 >> 32, desc1 & 0xFFFF_FFFF, desc0 >> 32, desc0 & 0xFFFF_FFFF):
            self.mmio_write(elsp, dword)

    def read_csb(self, engine: int) -> list[CsbEvent]:
        """New CSB entries from the status page (as i915 reads them); the read pointer
        goes back to the hardware."""
        hwsp = self.hwsp[engine]
        write = hwsp.read_dwords(4 * lrc.HWS_CSB_WRITE_INDEX, 1)[0]
        if write >= regs.GEN8_CSB_ENTRIES:
            return []
        out = []
        head = self.csb_head[engine]
        while head != write:
            head = (head + 1) % regs.GEN8_CSB_ENTRIES
            status, ctx_id = hwsp.read_dwords(4 * (lrc.HWS_CSB_BUF0_INDEX + 2 * head), 2)
            out.append(CsbEvent(engine, status, ctx_id))
        self.csb_head[engine] = head
        ptr = _base(engine) + regs.RING_CONTEXT_STATUS_PTR
        self.mmio_write(ptr, (regs.CSB_READ_PTR_MASK << regs.MASKED_WRITE_SHIFT) | (head << 8))
        for ev in out:
            if ev.complete:
                self.completed[ev.context_id] = self.completed.get(ev.context_id, 0) + 1
        self.events += out
        return out

    def wait(self, timeout: float) -> list[CsbEvent]:
        """Wait for an MSI, acknowledge the GT interrupts, read every engine's CSB."""
        if self.port.wait_msi(timeout) is None:
            return []
        self.msis += 1
        for bank in {_IRQ_BITS[e][0] for e in self.engines}:
            iir = regs.GEN8_GT_ISR_BASE + 0x10 * bank + regs.IRQ_IIR
            pending = self.mmio_read(iir)
            if pending:
                self.mmio_write(iir, pending)
        for handler in self.irq_handlers:
            handler()
        out: list[CsbEvent] = []
        for e in self.engines:
            out += self.read_csb(e)
        return out

    def wait_complete(self, contexts: Iterable[GuestContext], timeout: float = 10.0) -> None:
        """Wait until every context in ``contexts`` reached its last breadcrumb,
        taking interrupts (and reading the CSB) meanwhile, as i915 waits on a request."""
        ctxs = list(contexts)
        deadline = time.monotonic() + timeout
        while not all(ctx.idle for ctx in ctxs):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = [ctx.context_id for ctx in ctxs if not ctx.idle]
                raise GuestDriverError("wait for completion",
                                       f"contexts {missing} did not complete in {timeout} s")
            self.wait(min(left, 0.05))
        self.poll()

    def poll(self) -> list[CsbEvent]:
        """Read every engine's CSB without waiting (the submission path does too)."""
        out: list[CsbEvent] = []
        for e in self.engines:
            out += self.read_csb(e)
        return out

    def run(self, ctx: GuestContext, commands: Iterable[int], timeout: float = 10.0) -> None:
        """Emit ``commands``, submit the context alone and wait for its completion."""
        ctx.emit(commands)
        self.submit(ctx)
        self.wait_complete([ctx], timeout)

    def reset_engine(self, engine: int) -> None:
        """GDRST of one engine; the CSB starts over."""
        bit = {v: k for k, v in regs.GDRST_ENGINE_BITS.items()}[1 << engine]
        self.mmio_write(regs.GEN6_GDRST, bit)
        self.csb_head[engine] = CSB_HEAD_RESET
        hwsp = self.hwsp[engine]
        hwsp.write_dwords(4 * lrc.HWS_CSB_WRITE_INDEX, [regs.CSB_PTR_RESET])
