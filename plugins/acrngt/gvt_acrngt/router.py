"""What the default ioreq client does with each request of one User VM.

The upstream HSM gives a user-space client no ranges of its own: the default
client receives every request no kernel client claims, so the router
answers all of them, as acrn-dm does for the devices it emulates:

* PCICFG of 00:02.0 -> the core's config space (any other device is absent:
  reads all ones, writes dropped);
* MMIO inside a trap area (the vGPU's BAR0, ``set_trap_area``) -> the core's
  MMIO emulation, through the accessors bound for the vGPU;
* WP (a store to a page mapped R-X) -> in a PV MMIO range, the core's MMIO
  write (the PVINFO page is never mapped, it arrives as MMIO); in guest RAM,
  the core's page-track handler if the core tracks that page (the store did
  not land: ``WRITE_FORWARDED``), else the store is committed to RAM (a
  request that raced the end of tracking);
* MMIO inside guest RAM (a page between the two steps of a remap) -> served
  from RAM the same way;
* anything else -> an unassigned address: reads all ones, writes dropped,
  counted.

A request the hypervisor cannot have produced (an unknown type, an access
size no instruction has) is an emulation error: its read answers all ones and
the vGPU goes into failsafe (``CoreOps.emulation_failed``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from gvt_acrngt import abi
from gvt_core.guest.port import VGPU_BUS, VGPU_DEVICE, VGPU_FUNCTION
from gvt_core.hw.sysmem import PAGE_SHIFT
from gvt_core.mpt.ops import CoreOps

if TYPE_CHECKING:
    from gvt_acrngt.memory import GuestRam

MASKS = tuple((1 << (8 * n)) - 1 for n in range(9))
_CFG_SPACE = 4096


class EmulationError(Exception):
    """A request the router cannot serve (the message says which and why)."""


@attrs.define(eq=False)
class RouterStats:
    """Requests served, by kind (per VM, for ``gvt serve`` and tests)."""

    cfg: int = 0
    mmio: int = 0
    wp: int = 0
    ram: int = 0
    unassigned: int = 0
    stale_wp: int = 0
    errors: int = 0


def _unassigned_read(gpa: int, size: int) -> int:
    return MASKS[size]


def _unassigned_write(gpa: int, value: int, size: int) -> None:
    return None


@attrs.frozen
class Binding:
    """Everything a request needs of the vGPU bound to the VM, replaced as a whole.

    A request reads the router's binding once and uses only that: a detach
    (or a new trap area) that happens meanwhile never hands it half of the
    old binding and half of the new one, and a request that started before
    the detach reaches at most the old vGPU, whose core entry points and
    revoked accessors refuse it once the vGPU is destroyed."""

    vgpu: Any = None
    ops: CoreOps | None = None
    #: (start, end) trap areas; the first one's accessors are bound.
    traps: tuple[tuple[int, int], ...] = ()
    pv: tuple[tuple[int, int], ...] = ()
    read: Callable[[int, int], int] = _unassigned_read
    write: Callable[[int, int, int], None] = _unassigned_write


UNBOUND = Binding()


class RequestRouter:
    """Serves the requests of one User VM for the vGPU bound to it (if any)."""

    def __init__(self, ram: GuestRam) -> None:
        self.ram = ram
        self.stats = RouterStats()
        self.binding = UNBOUND

    # --- binding (the VM calls these under its lock) ------------------------------------
    def bind(self, vgpu: Any, ops: CoreOps) -> None:
        self.binding = Binding(vgpu, ops)

    def unbind(self) -> None:
        self.binding = UNBOUND

    def set_ranges(self, traps: list[tuple[int, int]], pv: list[tuple[int, int]]) -> None:
        b = self.binding
        if b.ops is None:
            return
        read, write = _unassigned_read, _unassigned_write
        if traps:
            read, write = b.ops.mmio_accessors(b.vgpu)
        self.binding = Binding(b.vgpu, b.ops, tuple(traps), tuple(pv), read, write)

    # --- serving ------------------------------------------------------------------------------
    def handle(self, slot: abi.acrn_io_request) -> None:
        """Serve one request; a read's value goes back into the slot."""
        b = self.binding
        kind = slot.type
        if kind == abi.ACRN_IOREQ_TYPE_MMIO or kind == abi.ACRN_IOREQ_TYPE_WP:
            m = slot.reqs.mmio_request
            size = m.size
            if size not in (1, 2, 4, 8):
                raise EmulationError(f"an MMIO request of {size} bytes at {m.address:#x}")
            if m.direction == abi.ACRN_IOREQ_DIR_WRITE:
                self._mmio_write(b, kind, m.address, m.value & MASKS[size], size)
            elif kind == abi.ACRN_IOREQ_TYPE_WP:
                raise EmulationError(f"a write-protect request that reads {m.address:#x}")
            else:
                m.value = self._mmio_read(b, m.address, size) & MASKS[size]
        elif kind == abi.ACRN_IOREQ_TYPE_PCICFG:
            self._pci(b, slot.reqs.pci_request)
        elif kind == abi.ACRN_IOREQ_TYPE_PORTIO:
            p = slot.reqs.pio_request
            if p.size not in (1, 2, 4):
                raise EmulationError(f"a port I/O request of {p.size} bytes at {p.address:#x}")
            self.stats.unassigned += 1
            if p.direction == abi.ACRN_IOREQ_DIR_READ:
                p.value = MASKS[p.size]
        else:
            raise EmulationError(f"a request of unknown type {kind}")

    def answer_failed(self, slot: abi.acrn_io_request) -> None:
        """What a read gets when its request could not be served: all ones."""
        self.stats.errors += 1
        if slot.type in (abi.ACRN_IOREQ_TYPE_MMIO, abi.ACRN_IOREQ_TYPE_WP):
            slot.reqs.mmio_request.value = MASKS[8]
        else:
            slot.reqs.pio_request.value = MASKS[4]

    def _pci(self, b: Binding, pci: abi.acrn_pci_request) -> None:
        size, reg = pci.size, pci.reg
        ops = b.ops
        mine = (
            ops is not None
            and (pci.bus, pci.dev, pci.func) == (VGPU_BUS, VGPU_DEVICE, VGPU_FUNCTION)
            and size in (1, 2, 4) and reg + size <= _CFG_SPACE
        )
        if not mine:
            self.stats.unassigned += 1
            if pci.direction == abi.ACRN_IOREQ_DIR_READ:
                pci.value = MASKS[min(size, 4)] if size else 0
            return
        assert ops is not None
        self.stats.cfg += 1
        if pci.direction == abi.ACRN_IOREQ_DIR_READ:
            pci.value = ops.emulate_cfg_read(b.vgpu, reg, size) & MASKS[size]
        else:
            ops.emulate_cfg_write(b.vgpu, reg, pci.value & MASKS[size], size)

    @staticmethod
    def _in(ranges: tuple[tuple[int, int], ...], gpa: int, size: int) -> bool:
        return any(lo <= gpa and gpa + size <= hi for lo, hi in ranges)

    def _mmio_read(self, b: Binding, gpa: int, size: int) -> int:
        traps = b.traps
        if traps and traps[0][0] <= gpa and gpa + size <= traps[0][1]:
            self.stats.mmio += 1
            return b.read(gpa, size)
        if b.ops is not None and (self._in(traps, gpa, size) or self._in(b.pv, gpa, size)):
            self.stats.mmio += 1
            return b.ops.emulate_mmio_read(b.vgpu, gpa, size)
        if gpa >= 0 and gpa + size <= self.ram.size:
            self.stats.ram += 1
            return int.from_bytes(self.ram.view[gpa : gpa + size], "little")
        self.stats.unassigned += 1
        return MASKS[size]

    def _mmio_write(self, b: Binding, kind: int, gpa: int, value: int, size: int) -> None:
        traps = b.traps
        if kind == abi.ACRN_IOREQ_TYPE_MMIO and traps and traps[0][0] <= gpa and (
                gpa + size <= traps[0][1]):
            self.stats.mmio += 1
            b.write(gpa, value, size)
            return
        ops, vgpu = b.ops, b.vgpu
        if ops is not None and (self._in(b.pv, gpa, size) or self._in(traps, gpa, size)):
            self.stats.mmio += 1
            ops.emulate_mmio_write(vgpu, gpa, value, size)
            return
        if gpa >= 0 and gpa + size <= self.ram.size:
            data = value.to_bytes(size, "little")
            # a store that reaches into a tracked page is that page's write, whichever
            # page it starts in (the core hands each tracked page its own bytes)
            first, last = gpa >> PAGE_SHIFT, (gpa + size - 1) >> PAGE_SHIFT
            if ops is not None and (ops.is_page_tracked(vgpu, first) or (
                    last != first and ops.is_page_tracked(vgpu, last))):
                self.stats.wp += 1
                ops.page_track_write(vgpu, gpa, data)
                return
            if kind == abi.ACRN_IOREQ_TYPE_WP:
                self.stats.stale_wp += 1
            self.stats.ram += 1
            self.ram.view[gpa : gpa + size] = data
            return
        self.stats.unassigned += 1
