"""The emulation thread of one domain: the ioreq state machine and its dispatch.

Xen signals a vCPU's event channel when that vCPU's slot of the shared
ioreq page holds a request in state READY. The thread takes the slot
(INPROCESS), emulates it, writes the answer and sets IORESP_READY, then
notifies the channel back, as XenGT's ``xengt_emulation_thread`` does:

* ``IOREQ_TYPE_PCI_CONFIG``: bits 63:32 of ``addr`` are the SBDF, 31:0 the
  register; 00:02.0 goes to the core's config-space emulation, anything
  else reads all ones;
* ``IOREQ_TYPE_COPY``: MMIO, ``count`` elements of ``size`` bytes walking
  up (or down with ``df``); with ``data_is_ptr`` each element's value is in
  (or goes to) guest RAM at ``data``. An address in BAR0 goes to the core's
  MMIO emulation; one in a page the core tracks goes to
  ``page_track_write`` (the write did not land: the core commits it); a
  write to RAM nobody tracks any more lands as the guest meant it. A range
  serves only an access that lies wholly inside it: one that starts in a trap
  area or aperture slice and ends past it (Xen selects a server by the whole
  access, so the next range may be the same server's) reads all ones and its
  write is dropped (``straddling``), so no byte past a slice's last frame is
  ever served;
* ``IOREQ_TYPE_INVALIDATE``/``TIMEOFFSET``: acknowledged, whatever their other
  fields (Xen sends an invalidation with ``count`` 0 whenever a guest gives
  memory back).

Anything Xen should never send in an access (a size other than 1, 2, 4, 8, a
count of 0 or more than :data:`MAX_REPS`, an unknown type, a ``data_is_ptr``
buffer not wholly in RAM: checked before any element acts) or an exception
from the core is an emulation error: the request completes (reads all ones)
and the domain is paused, this domain only.
"""

from __future__ import annotations

import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from gvt_core.errors import DmaFault, GuestMemoryError, HypervisorCallError
from gvt_core.hw.sysmem import SystemMemory
from gvt_core.mpt.ops import CoreOps
from gvt_xengt import abi

if TYPE_CHECKING:
    from gvt_xengt.domain import XenDomain

log = logging.getLogger(__name__)

#: the most elements one request may carry (Xen clamps string operations to a page).
MAX_REPS = abi.PAGE_SIZE
#: how often an idle thread asks Xen whether its domain still exists.
LIVENESS_INTERVAL_S = 0.25

_IOREQ = struct.Struct("<QQIIIHBB")
_DATA = struct.Struct("<Q")
MASKS = tuple((1 << (8 * n)) - 1 for n in range(9))
_SIZES = (1, 2, 4, 8)


class EmulationError(Exception):
    """A request the device model cannot have been sent."""


def _unbound_read(addr: int, size: int) -> int:
    return MASKS[8]


def _unbound_write(addr: int, value: int, size: int) -> None:
    return None


@attrs.define(eq=False)
class Attachment:
    """What the thread serves for the vGPU attached to the domain.

    ``read``/``write`` are the core's MMIO accessors, bound each time a BAR0
    trap is placed (as sim and kvmgt bind them when BAR0 is placed), not at
    attach: they take the vGPU's lock as it is then. ``live`` goes False
    under ``lock`` when the vGPU is detached; an aperture access served from
    the host's frames runs under the same lock, so once detach returns none
    is in flight and none starts (the frames may belong to another vGPU next).
    """

    vgpu: Any
    ops: CoreOps
    sysmem: SystemMemory
    read: Callable[[int, int], int] = _unbound_read
    write: Callable[[int, int, int], None] = _unbound_write
    #: the BAR0 trap areas, [start, end) guest-physical.
    traps: list[tuple[int, int]] = attrs.field(factory=list)
    #: aperture slices served by emulation: (start, end, first machine frame).
    aperture: list[tuple[int, int, int]] = attrs.field(factory=list)
    live: bool = True
    lock: threading.Lock = attrs.field(factory=threading.Lock)

    def revoke(self) -> None:
        """Detach: nothing is served for the vGPU from now on."""
        with self.lock:
            self.live = False


class EmulationThread(threading.Thread):
    """Serves the ioreqs of one domain until stopped or the domain is gone."""

    def __init__(self, domain: XenDomain) -> None:
        super().__init__(name=f"xengt-ioreq-dom{domain.domid}", daemon=True)
        self.domain = domain
        self._stop_r, self._stop_w = os.pipe()
        self._stopping = False
        self.handled = 0
        self.errors = 0
        #: accesses that started in a trap area or aperture slice and ended past it.
        self.straddling = 0

    def stop(self) -> None:
        self._stopping = True
        os.write(self._stop_w, b"x")
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
        os.close(self._stop_r)
        os.close(self._stop_w)

    # --- loop ------------------------------------------------------------------------------
    def run(self) -> None:
        d = self.domain
        poller = select.poll()
        poller.register(d.evtchn.pollable(), select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        try:
            while not self._stopping:
                events = poller.poll(LIVENESS_INTERVAL_S * 1000)
                if self._stopping:
                    return
                if not events:
                    if not d.alive():
                        d.mark_ended()
                        return
                    continue
                ports = d.evtchn.pending()
                if not ports:
                    continue
                d.evtchn.unmask(ports)
                for port in ports:
                    vcpu = d.vcpu_of_port.get(port)
                    if vcpu is not None:
                        self.serve(vcpu)
        except HypervisorCallError as exc:
            log.warning("xengt: the emulation thread of domain %d stops: %s", d.domid, exc)
            d.mark_ended()

    # --- one request ----------------------------------------------------------------------------
    def serve(self, vcpu: int) -> None:
        d = self.domain
        slot = d.slot(vcpu)
        fb = abi.IOREQ_FLAGS_BYTE
        flags = slot[fb]
        if flags & abi.IOREQ_STATE_MASK != abi.STATE_IOREQ_READY:
            return  # spurious, or already served
        addr, data, count, size, _port, _pad, flags, type_ = _IOREQ.unpack_from(slot)
        slot[fb] = (flags & ~abi.IOREQ_STATE_MASK) | abi.STATE_IOREQ_INPROCESS
        is_read = bool(flags & abi.IOREQ_DIR_BIT)
        try:
            result = self.emulate(type_, addr, data, count, size, flags)
        except Exception as exc:
            self.errors += 1
            result = MASKS[8]
            d.emulation_failed(
                f"ioreq type {type_} addr {addr:#x} size {size} count {count} "
                f"{'read' if is_read else 'write'} on vCPU {vcpu}: {type(exc).__name__}: {exc}"
            )
        if is_read and not flags & abi.IOREQ_DATA_IS_PTR_BIT:
            _DATA.pack_into(slot, 8, result & MASKS[8])
        slot[fb] = (flags & ~abi.IOREQ_STATE_MASK) | abi.STATE_IORESP_READY
        self.handled += 1
        d.evtchn.notify(d.port_of_vcpu[vcpu])

    def emulate(self, type_: int, addr: int, data: int, count: int, size: int, flags: int) -> int:
        if type_ in (abi.IOREQ_TYPE_INVALIDATE, abi.IOREQ_TYPE_TIMEOFFSET):
            return 0  # no access: Xen leaves count at 0 in an invalidation
        is_read = bool(flags & abi.IOREQ_DIR_BIT)
        if size not in _SIZES:
            raise EmulationError(f"access size {size}")
        if not 1 <= count <= MAX_REPS:
            raise EmulationError(f"repeat count {count}")
        if flags & abi.IOREQ_DATA_IS_PTR_BIT:
            # the whole buffer, before any element acts: a request is done or refused
            lo = data - (count - 1) * size if flags & abi.IOREQ_DF_BIT else data
            try:
                self.domain.ram.check(lo, count * size, "data_is_ptr buffer")
            except GuestMemoryError as exc:
                raise EmulationError(f"data pointer {data:#x}: {exc}") from None
        if type_ == abi.IOREQ_TYPE_COPY:
            if count == 1 and not flags & abi.IOREQ_DATA_IS_PTR_BIT:
                return self.mmio(addr, size, is_read, data)
            return self._repeat(addr, data, count, size, flags, self.mmio, size)
        if type_ == abi.IOREQ_TYPE_PCI_CONFIG:
            if count == 1 and not flags & abi.IOREQ_DATA_IS_PTR_BIT:
                return self.cfg(addr, size, is_read, data)
            return self._repeat(addr, data, count, size, flags, self.cfg, 0)
        if type_ == abi.IOREQ_TYPE_PIO:
            return MASKS[size]  # this server claims no ports
        raise EmulationError(f"unknown ioreq type {type_}")

    def _repeat(self, addr: int, data: int, count: int, size: int, flags: int,
                access: Callable[[int, int, bool, int], int], addr_step: int) -> int:
        """A string operation: the device side moves by ``addr_step`` (0 for I/O
        ports), the RAM side by ``size``; ``df`` walks both downwards."""
        is_read = bool(flags & abi.IOREQ_DIR_BIT)
        ptr = bool(flags & abi.IOREQ_DATA_IS_PTR_BIT)
        sign = -1 if flags & abi.IOREQ_DF_BIT else 1
        ram = self.domain.ram
        result = 0
        for i in range(count):
            a = addr + sign * i * addr_step
            if not ptr:
                result = access(a, size, is_read, data)
                continue
            p = data + sign * i * size
            if is_read:
                value = access(a, size, True, 0)
                ram.write(p, (value & MASKS[size]).to_bytes(size, "little"))
            else:
                access(a, size, False, int.from_bytes(ram.read(p, size), "little"))
        return result

    # --- targets ---------------------------------------------------------------------------------
    def cfg(self, addr: int, size: int, is_read: bool, value: int) -> int:
        att = self.domain.attachment
        if att is None or not att.live or addr >> 32 != self.domain.sbdf or size == 8:
            return MASKS[size] if is_read else 0
        reg = addr & 0xFFFF_FFFF
        if is_read:
            return att.ops.emulate_cfg_read(att.vgpu, reg, size)
        att.ops.emulate_cfg_write(att.vgpu, reg, value & MASKS[size], size)
        return 0

    def mmio(self, addr: int, size: int, is_read: bool, value: int) -> int:
        d = self.domain
        att = d.attachment
        if att is not None and att.live:
            for lo, hi in att.traps:
                if lo <= addr < hi:
                    if addr + size > hi:
                        return self._straddling(is_read, size)
                    if is_read:
                        return att.read(addr, size)
                    att.write(addr, value & MASKS[size], size)
                    return 0
            for lo, hi, mfn in att.aperture:
                if lo <= addr < hi:
                    if addr + size > hi:  # the frame after the slice is not the guest's
                        return self._straddling(is_read, size)
                    return self._machine(att, mfn, addr - lo, size, is_read, value)
        ram = d.ram
        if addr >= 0 and addr + size <= ram.size:
            if is_read:  # Xen forwards only writes of HVMMEM_ioreq_server pages
                return int.from_bytes(ram.read(addr, size), "little")
            data = (value & MASKS[size]).to_bytes(size, "little")
            # a store that reaches into a tracked page is that page's write, whichever
            # page it starts in (the core hands each tracked page its own bytes)
            first, last = addr >> abi.PAGE_SHIFT, (addr + size - 1) >> abi.PAGE_SHIFT
            if att is not None and att.live and (
                    att.ops.is_page_tracked(att.vgpu, first)
                    or (last != first and att.ops.is_page_tracked(att.vgpu, last))):
                att.ops.page_track_write(att.vgpu, addr, data)
            else:
                ram.write(addr, data)
            return 0
        return MASKS[size] if is_read else 0

    def _straddling(self, is_read: bool, size: int) -> int:
        """An access that starts in a range and ends past it (an unaligned string
        element, a neighbouring range of the same server): served by no range, as
        an unassigned address (reads all ones, writes dropped), counted."""
        self.straddling += 1
        return MASKS[size] if is_read else 0

    @staticmethod
    def _machine(att: Attachment, mfn: int, offset: int, size: int, is_read: bool,
                 value: int) -> int:
        """An aperture access served by emulation: the simulated host's frames,
        only while the vGPU is attached (see :class:`Attachment`)."""
        address = ((mfn << abi.PAGE_SHIFT) + offset)
        with att.lock:
            if not att.live:  # detached since the range was looked up
                return MASKS[size] if is_read else 0
            try:
                if is_read:
                    return int.from_bytes(att.sysmem.read(address, size), "little")
                att.sysmem.write(address, (value & MASKS[size]).to_bytes(size, "little"))
            except DmaFault:  # nothing behind the frame: a master abort
                return MASKS[size] if is_read else 0
        return 0
