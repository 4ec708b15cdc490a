"""A vCPU of an emulated HVM domain: what Xen does with each of its accesses.

The guest's loads, stores and port I/O are routed as Xen's ``hvmemul`` and
EPT do it:

* port 0xCF8 (4 bytes) latches the PCI address; 0xCFC-0xCFF with the latch
  enabled become ``IOREQ_TYPE_PCI_CONFIG`` requests for the server claiming
  the SBDF (only the 256-byte legacy window: an Intel host ignores bits
  27:24 of the latch);
* memory by p2m type: RAM is accessed directly; a store to a page typed
  ``HVMMEM_ioreq_server`` becomes a COPY write for the server that owns the
  type; frames mapped with ``XEN_DOMCTL_memory_mapping`` go to machine
  memory; everything else is offered to the server claiming the range,
  else the null handler answers (reads all ones, writes dropped);
* an access crossing a page is split at the boundary, and an ioreq carries
  power-of-two chunks of at most 8 bytes (``hvmemul_phys_mmio_access``).

Sending an ioreq follows ``hvm_send_ioreq``/``hvm_wait_for_io``: the slot
must be idle and carry the server's port, else the domain is crashed; the
vCPU then waits for the state to reach IORESP_READY, crashing the domain on
a backwards or unknown state. Unlike Xen, which blocks the vCPU forever, a
request left unanswered for :data:`IOREQ_TIMEOUT_S` crashes the domain so
a broken device model cannot hang a test.
"""

from __future__ import annotations

import struct
import threading
import time
from typing import TYPE_CHECKING

from gvt_core.errors import GuestMemoryError
from gvt_core.mpt.ops import Msi
from gvt_xengt import abi
from gvt_xengt.emulated.layouts import IOREQ

if TYPE_CHECKING:
    from gvt_xengt.emulated.domain import HvmDomain
    from gvt_xengt.emulated.ioreq import IoreqServerModel

PCI_CONFIG_ADDRESS = 0xCF8
PCI_CONFIG_DATA = 0xCFC
PCI_CONFIG_ENABLE = 1 << 31
#: how long a vCPU waits for its device model before the domain is crashed.
IOREQ_TIMEOUT_S = 30.0
#: vectors below 16 are illegal for a fixed interrupt: the LAPIC drops them (ESR).
FIRST_LEGAL_VECTOR = 16

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
MASKS = tuple((1 << (8 * n)) - 1 for n in range(9))
_FLAGS = IOREQ.offsets["flags"]
_DATA = IOREQ.offsets["data"]
_VP_EPORT = IOREQ.offsets["vp_eport"]


class Vlapic:
    """The interrupts a vCPU has been sent and not yet taken (its IRR).

    A vector already pending absorbs a second message for it, as in a real
    LAPIC; the highest pending vector is taken first. The MSI that set a
    vector is kept so the guest side can report what arrived.
    """

    def __init__(self, apic_id: int) -> None:
        self.apic_id = apic_id
        self._cond = threading.Condition()
        self._irr: dict[int, Msi] = {}
        self.illegal_vectors = 0
        self.coalesced = 0

    def accept(self, vector: int, msi: Msi) -> None:
        with self._cond:
            if vector < FIRST_LEGAL_VECTOR:
                self.illegal_vectors += 1  # ESR "receive illegal vector"
                return
            if vector in self._irr:
                self.coalesced += 1
                return
            self._irr[vector] = msi
            self._cond.notify_all()

    def take(self, timeout: float) -> Msi | None:
        with self._cond:
            if not self._irr:
                self._cond.wait_for(lambda: bool(self._irr), timeout=max(timeout, 0.0))
            if not self._irr:
                return None
            return self._irr.pop(max(self._irr))

    def pending(self) -> list[int]:
        with self._cond:
            return sorted(self._irr)


class EmulatedVcpu:
    """vCPU ``index`` of an emulated domain; one access at a time."""

    def __init__(self, domain: HvmDomain, index: int) -> None:
        self.domain = domain
        self.index = index
        self.lapic = Vlapic(index)
        self.lock = threading.RLock()
        self._io = threading.Condition()
        self._io_events = 0
        self.ioreqs_sent = 0

    def io_event(self) -> None:
        """An event on this vCPU's ioreq channel (the device model notified it)."""
        with self._io:
            self._io_events += 1
            self._io.notify_all()

    # --- port I/O ------------------------------------------------------------------------
    def outp(self, port: int, size: int, value: int) -> None:
        _check_size(size, (1, 2, 4))
        with self.lock:
            self._pio(port, size, abi.IOREQ_WRITE, value & MASKS[size])

    def inp(self, port: int, size: int) -> int:
        _check_size(size, (1, 2, 4))
        with self.lock:
            return self._pio(port, size, abi.IOREQ_READ, 0) & MASKS[size]

    def _pio(self, port: int, size: int, direction: int, value: int) -> int:
        d = self.domain
        with d.xen.lock:
            d.check_running()
            if port == PCI_CONFIG_ADDRESS and size == 4 and direction == abi.IOREQ_WRITE:
                d.pci_cf8 = value  # hvm_access_cf8, then on to the device models
            type_, addr = abi.IOREQ_TYPE_PIO, port
            cf8 = d.pci_cf8
            if port & ~3 == PCI_CONFIG_DATA and cf8 & PCI_CONFIG_ENABLE:
                sbdf = (cf8 >> 8) & 0xFFFF
                reg = (cf8 & 0xFC) | (port & 3)
                server = d.select_server(abi.XEN_DMOP_IO_RANGE_PCI, sbdf, sbdf)
                type_, addr = abi.IOREQ_TYPE_PCI_CONFIG, (sbdf << 32) | reg
            else:
                server = d.select_server(abi.XEN_DMOP_IO_RANGE_PORT, port, port + size - 1)
            if server is None:
                return MASKS[size]  # the null handler
            ticket = self._post(server, type_, addr, size, 1, direction, False, False, value)
        return self._wait(server, ticket)

    # --- memory ----------------------------------------------------------------------------
    def load(self, gpa: int, size: int) -> int:
        _check_size(size, (1, 2, 4, 8))
        with self.lock:
            return int.from_bytes(self._mem(gpa, size, None), "little")

    def store(self, gpa: int, size: int, value: int) -> None:
        _check_size(size, (1, 2, 4, 8))
        with self.lock:
            self._mem(gpa, size, (value & MASKS[size]).to_bytes(size, "little"))

    def write_block(self, gpa: int, data: bytes) -> None:
        """A guest copy into plain RAM (``rep movs`` within RAM): one direct write.
        The caller splits off anything that is not ``HVMMEM_ram_rw`` RAM."""
        with self.lock:
            d = self.domain
            with d.xen.lock:
                d.check_running()
                if not d.plain_ram(gpa, len(data)):
                    raise ValueError(f"[{gpa:#x}, +{len(data)}) is not plain guest RAM")
            d.ram.view[gpa : gpa + len(data)] = data

    def _mem(self, gpa: int, size: int, data: bytes | None) -> bytes:
        out = bytearray()
        pos = 0
        while pos < size:
            a = gpa + pos
            n = min(size - pos, abi.PAGE_SIZE - (a & (abi.PAGE_SIZE - 1)))
            piece = None if data is None else data[pos : pos + n]
            out += self._mem_page(a, n, piece)
            pos += n
        return bytes(out)

    def _mem_page(self, gpa: int, n: int, data: bytes | None) -> bytes:
        """One access within one page."""
        d = self.domain
        with d.xen.lock:
            d.check_running()
            kind, arg = d.route(gpa >> abi.PAGE_SHIFT)
            if kind == "ram":
                if data is None or arg == abi.HVMMEM_ram_rw:
                    return d.ram_access(gpa, n, data)
                if arg == abi.HVMMEM_ram_ro:
                    return b""  # writes discarded
                if arg == abi.HVMMEM_ioreq_server:
                    server = d.ioreq_owner if d.ioreq_flags & abi.XEN_DMOP_IOREQ_MEM_ACCESS_WRITE else None
                    if server is None or not server.enabled:
                        server = d.select_server(abi.XEN_DMOP_IO_RANGE_MEMORY, gpa, gpa + n - 1)
                else:  # HVMMEM_mmio_dm: a hole now
                    server = d.select_server(abi.XEN_DMOP_IO_RANGE_MEMORY, gpa, gpa + n - 1)
            elif kind == "mmio":
                machine = (arg << abi.PAGE_SHIFT) | (gpa & (abi.PAGE_SIZE - 1))
                if data is None:
                    return d.xen.machine.read(machine, n)
                d.xen.machine.write(machine, data)
                return b""
            elif kind == "special":
                page = d.xen.heap.page(arg)
                off = gpa & (abi.PAGE_SIZE - 1)
                if data is None:
                    return bytes(page[off : off + n])
                page[off : off + n] = data
                return b""
            else:
                server = d.select_server(abi.XEN_DMOP_IO_RANGE_MEMORY, gpa, gpa + n - 1)
        if server is None:
            return b"\xff" * n if data is None else b""
        return self._mmio_chunks(server, gpa, n, data)

    def _mmio_chunks(self, server: IoreqServerModel, gpa: int, n: int, data: bytes | None) -> bytes:
        chunk = 1 << (n.bit_length() - 1)
        chunk = min(chunk, 8)
        out = bytearray()
        pos = 0
        while pos < n:
            while chunk > n - pos:
                chunk >>= 1
            a = gpa + pos
            if data is None:
                with self.domain.xen.lock:
                    self.domain.check_running()
                    ticket = self._post(server, abi.IOREQ_TYPE_COPY, a, chunk, 1,
                                        abi.IOREQ_READ, False, False, 0)
                value = self._wait(server, ticket)
                out += (value & MASKS[chunk]).to_bytes(chunk, "little")
            else:
                value = int.from_bytes(data[pos : pos + chunk], "little")
                with self.domain.xen.lock:
                    self.domain.check_running()
                    ticket = self._post(server, abi.IOREQ_TYPE_COPY, a, chunk, 1,
                                        abi.IOREQ_WRITE, False, False, value)
                self._wait(server, ticket)
            pos += chunk
        return bytes(out)

    # --- string instructions ----------------------------------------------------------------
    def rep_movs(self, dst: int, src: int, size: int, count: int, df: bool = False) -> None:
        """``rep movs`` of ``count`` elements of ``size`` bytes; ``df`` walks
        downwards. Between RAM and an emulated range (device memory, a
        write-tracked page) one ioreq carries as many elements as fit in the page
        on both sides (``data_is_ptr``), as Xen sends them; RAM to RAM is a copy."""
        _check_size(size, (1, 2, 4, 8))
        if count < 0:
            raise ValueError("a repeat count is >= 0")
        step = -size if df else size
        with self.lock:
            while count:
                d = self.domain
                with d.xen.lock:
                    d.check_running()
                    dst_emul = d.emulated_target(dst, size, write=True)
                    src_emul = d.emulated_target(src, size, write=False)
                    if dst_emul is not None and src_emul is not None:
                        raise ValueError(
                            "rep_movs between two emulated ranges is not modelled; "
                            f"got {dst:#x} <- {src:#x}"
                        )
                    if dst_emul is None and src_emul is None:  # RAM to RAM: no exit
                        reps = min(count, _reps_in_page(dst, size, df), _reps_in_page(src, size, df))
                        lo_d = dst - (reps - 1) * size if df else dst
                        lo_s = src - (reps - 1) * size if df else src
                        if not (d.plain_ram(lo_d, reps * size) and d.plain_ram(lo_s, reps * size)):
                            raise GuestMemoryError(lo_d, reps * size, d.mem_size, "rep_movs")
                        d.ram.view[lo_d : lo_d + reps * size] = d.ram.view[lo_s : lo_s + reps * size]
                        count -= reps
                        dst += step * reps
                        src += step * reps
                        continue
                    if dst_emul is not None:
                        server, mmio, ram, direction = dst_emul, dst, src, abi.IOREQ_WRITE
                    else:
                        assert src_emul is not None
                        server, mmio, ram, direction = src_emul, src, dst, abi.IOREQ_READ
                    if not d.plain_ram(ram, size):
                        raise GuestMemoryError(ram, size, d.mem_size, "rep_movs buffer")
                    reps = min(count, _reps_in_page(mmio, size, df), _reps_in_page(ram, size, df))
                    ticket = self._post(server, abi.IOREQ_TYPE_COPY, mmio, size, reps,
                                        direction, True, df, ram)
                self._wait(server, ticket)
                count -= reps
                dst += step * reps
                src += step * reps

    # --- map-cache invalidation ---------------------------------------------------------------
    def mapcache_invalidate(self) -> None:
        """What Xen does after this vCPU gave memory back (``XENMEM_decrease_reservation``,
        ``ioreq_signal_mapcache_invalidate``): an ``IOREQ_TYPE_INVALIDATE`` request
        to every enabled server, waited for in turn, as Xen fills it: size 4, a
        write of ~0 ("flush all") and a ``count`` of 0 (the field is never set)."""
        with self.lock:
            d = self.domain
            with d.xen.lock:
                d.check_running()
                servers = [s for s in d.servers if s is not None and s.enabled]
            for server in servers:
                with d.xen.lock:
                    d.check_running()
                    ticket = self._post(server, abi.IOREQ_TYPE_INVALIDATE, 0, 4, 0,
                                        abi.IOREQ_WRITE, False, False, MASKS[8])
                self._wait(server, ticket)

    # --- the ioreq protocol -------------------------------------------------------------------
    def _post(self, server: IoreqServerModel, type_: int, addr: int, size: int, count: int,
              direction: int, data_is_ptr: bool, df: bool, data: int) -> int:
        """``hvm_send_ioreq``, under the hypervisor lock: fill the slot, mark it
        READY, signal the channel. Returns the event count before signalling."""
        d = self.domain
        heap = d.xen.heap
        slot = server.slot(heap, self.index)
        state = slot[_FLAGS] & abi.IOREQ_STATE_MASK
        if state != abi.STATE_IOREQ_NONE:
            raise d.crash(f"device model set bad IO state {state} (vCPU {self.index})")
        port = server.ports[self.index]
        vp_eport = _U32.unpack_from(slot, _VP_EPORT)[0]
        if vp_eport != port:
            raise d.crash(f"device model set bad event channel {vp_eport} (vCPU {self.index})")
        flags = ((abi.IOREQ_DATA_IS_PTR_BIT if data_is_ptr else 0)
                 | (abi.IOREQ_DIR_BIT if direction == abi.IOREQ_READ else 0)
                 | (abi.IOREQ_DF_BIT if df else 0))
        slot[:] = IOREQ.pack(addr, data & MASKS[8], count, size, port, 0,
                             flags | abi.STATE_IOREQ_NONE, type_)
        slot[_FLAGS] = flags | abi.STATE_IOREQ_READY
        self.ioreqs_sent += 1
        with self._io:
            ticket = self._io_events
        d.evtchn.send(port)
        return ticket

    def _wait(self, server: IoreqServerModel, ticket: int) -> int:
        """``hvm_wait_for_io``: returns the response data (all ones when the device
        model set the slot idle without a response or the server went away)."""
        d = self.domain
        slot = server.slot(d.xen.heap, self.index)
        deadline = time.monotonic() + IOREQ_TIMEOUT_S
        prev = abi.STATE_IOREQ_NONE
        problem = ""
        data = MASKS[8]
        with self._io:
            seen = ticket
            state = slot[_FLAGS] & abi.IOREQ_STATE_MASK
            while state != abi.STATE_IOREQ_NONE:
                if state < prev:
                    problem = f"Weird HVM ioreq state transition {prev} -> {state}"
                    break
                prev = state
                if state == abi.STATE_IORESP_READY:
                    slot[_FLAGS] = (slot[_FLAGS] & ~abi.IOREQ_STATE_MASK) | abi.STATE_IOREQ_NONE
                    data = _U64.unpack_from(slot, _DATA)[0]
                    break
                if state not in (abi.STATE_IOREQ_READY, abi.STATE_IOREQ_INPROCESS):
                    problem = f"Weird HVM iorequest state {state}"
                    break
                # wait_on_xen_event_channel: sleep until an event, then look again
                while True:
                    if not d.server_alive(server) or d.dying:
                        return MASKS[8]
                    now = slot[_FLAGS] & abi.IOREQ_STATE_MASK
                    if now != prev:
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        problem = (f"no ioreq response from the device model within "
                                   f"{IOREQ_TIMEOUT_S:.0f} s (vCPU {self.index}, state {now})")
                        break
                    if self._io_events == seen:
                        self._io.wait(min(remaining, 0.5))
                    seen = self._io_events
                if problem:
                    break
                state = slot[_FLAGS] & abi.IOREQ_STATE_MASK
        if problem:
            with d.xen.lock:
                raise d.crash(problem)
        return data

    # --- interrupts -------------------------------------------------------------------------------
    def wait_interrupt(self, timeout: float) -> Msi | None:
        with self.domain.xen.lock:
            self.domain.check_running()
        return self.lapic.take(timeout)


def _check_size(size: int, allowed: tuple[int, ...]) -> None:
    if size not in allowed:
        raise ValueError(f"access size {size} is not one of {allowed}")


def _reps_in_page(addr: int, size: int, df: bool) -> int:
    """Elements of a string operation from ``addr`` that stay in its page."""
    off = addr & (abi.PAGE_SIZE - 1)
    if df:
        return off // size + 1
    return max(1, (abi.PAGE_SIZE - off) // size)

