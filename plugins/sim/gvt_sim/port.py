"""The guest CPU of a sim VM: :class:`gvt_core.guest.port.GuestPort` by direct calls.

``mmio_write`` / ``mmio_read`` are the hot path of every register access.
They are closures built by :meth:`SimGuestPort.rebind` whenever the VM's
address map or vGPU binding changes, holding the first trap range as two
integers and the core's bound ``emulate_mmio_*`` method: a trapped access is
one range compare and one call (closure variables are the cheapest loads
Python has); no allocation, no logging, no pluggy. Accesses outside that
range take the general path (:meth:`SimGuestPort._write_slow`).

A paused or closed VM's vCPUs do nothing: every guest access raises
:class:`~gvt_core.errors.VgpuStateError` (sim has no vCPU thread to block).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gvt_core.errors import VgpuStateError
from gvt_core.guest.port import check_cfg_access, check_cpu_access
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE
from gvt_core.mpt.info import PageTrackMode
from gvt_core.mpt.ops import Msi

if TYPE_CHECKING:
    from gvt_sim.vm import SimVm

#: the guest accesses a paused VM refuses.
_GUEST_ACCESSES = (
    "cfg_read", "cfg_write", "mmio_read", "mmio_write", "mem_read", "store", "mem_write",
    "wait_msi",
)


def _unassigned_cfg_read(vgpu: Any, offset: int, size: int) -> int:
    return (1 << (8 * size)) - 1


def _unassigned_cfg_write(vgpu: Any, offset: int, value: int, size: int) -> None:
    return None


_U32 = 0xFFFF_FFFF


class SimGuestPort:
    """Guest CPU accesses of one :class:`~gvt_sim.vm.SimVm`."""

    def __init__(self, vm: SimVm) -> None:
        self._vm = vm
        self.mem_size: int = vm.mem_size
        self._ram = vm.ram
        self._sysmem = vm.host.sysmem
        self._ops = vm.host.ops
        self._landed = vm.page_track_mode is PageTrackMode.WRITE_LANDED
        #: why guest accesses are refused (paused or closed VM); empty when they run.
        self._refusal = ""
        self.rebind()

    #: one load / store of ``size`` bytes at guest-physical ``gpa`` (closures, see rebind).
    mmio_read: Callable[[int, int], int]
    mmio_write: Callable[[int, int, int], None]

    def rebind(self) -> None:
        """Recompute the routing after an attach, detach or address-map change."""
        vm, ops = self._vm, self._ops
        handle = vm.handle
        vgpu = self._vgpu = handle.vgpu if handle is not None else None
        self._trap: tuple[tuple[int, int], ...] = tuple(vm.trap_areas) + tuple(vm.pvmmio)
        self._emu_read: Callable[[Any, int, int], int] = ops.emulate_mmio_read
        self._emu_write: Callable[[Any, int, int, int], None] = ops.emulate_mmio_write
        self._track_write: Callable[[Any, int, bytes], None] = ops.page_track_write
        if handle is None:
            self._cfg_read: Callable[[Any, int, int], int] = _unassigned_cfg_read
            self._cfg_write: Callable[[Any, int, int, int], None] = _unassigned_cfg_write
        else:
            self._cfg_read = ops.emulate_cfg_read
            self._cfg_write = ops.emulate_cfg_write
        if not self._refusal:
            self._install_fast_paths(vgpu)

    def _install_fast_paths(self, vgpu: Any) -> None:
        t0, t1 = self._trap[0] if self._trap else (-1, -1)
        read_slow, write_slow = self._read_slow, self._write_slow
        if vgpu is not None and t1 > t0:
            # the core's entry points with this vGPU bound: one call per trapped access
            emu_read, emu_write = self._ops.mmio_accessors(vgpu)
        else:
            emu_read = emu_write = None  # nothing trapped: the range check never passes

        # the fast path takes only what needs no checking (a 4-byte int that fits);
        # everything else is validated by the slow path, as every port does
        def mmio_write(gpa: int, value: int, size: int) -> None:
            if t0 <= gpa < t1 and size == 4 and type(value) is int and 0 <= value <= _U32:
                emu_write(gpa, value, size)
                return
            write_slow(gpa, value, size)

        def mmio_read(gpa: int, size: int) -> int:
            if t0 <= gpa < t1 and size == 4:
                return emu_read(gpa, size)
            return read_slow(gpa, size)

        self.mmio_write = mmio_write
        self.mmio_read = mmio_read

    # --- pause / close ------------------------------------------------------------------
    def refuse(self, why: str) -> None:
        """Make every guest access raise VgpuStateError(why)."""
        self._refusal = why
        for name in _GUEST_ACCESSES:
            setattr(self, name, self._refuse)

    def accept(self) -> None:
        self._refusal = ""
        for name in _GUEST_ACCESSES:
            self.__dict__.pop(name, None)
        self.rebind()

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise VgpuStateError(self._refusal)

    # --- config space ---------------------------------------------------------------------
    def cfg_read(self, offset: int, size: int) -> int:
        check_cfg_access(offset, size)
        return self._cfg_read(self._vgpu, offset, size)

    def cfg_write(self, offset: int, value: int, size: int) -> None:
        check_cfg_access(offset, size, value)
        self._cfg_write(self._vgpu, offset, value, size)

    # --- loads and stores ---------------------------------------------------------------------
    def _write_slow(self, gpa: int, value: int, size: int) -> None:
        check_cpu_access(gpa, size, value)
        vgpu = self._vgpu
        for start, end in self._trap:
            if start <= gpa < end:
                if vgpu is not None:
                    self._emu_write(vgpu, gpa, value, size)
                return
        self._store_any(gpa, value.to_bytes(size, "little"))

    def _read_slow(self, gpa: int, size: int) -> int:
        check_cpu_access(gpa, size)
        vgpu = self._vgpu
        for start, end in self._trap:
            if start <= gpa < end:
                return self._emu_read(vgpu, gpa, size) if vgpu is not None else (1 << 8 * size) - 1
        return int.from_bytes(self._load_any(gpa, size), "little")

    def _store_any(self, gpa: int, data: bytes) -> None:
        """An untrapped store: per page, to a gfn map, to RAM, or dropped."""
        vm, n, pos = self._vm, len(data), 0
        while pos < n:
            a = gpa + pos
            k = min(n - pos, PAGE_SIZE - (a & PAGE_MASK))
            frag = data[pos : pos + k]
            frame = vm.host_frame_of(a >> PAGE_SHIFT) if vm.gfn_maps else -1
            if frame >= 0:
                off = a & PAGE_MASK
                self._sysmem.page(frame)[off : off + k] = frag
            elif a >= 0 and a + k <= self.mem_size:
                self._ram_store(a, frag)
            pos += k

    def _load_any(self, gpa: int, length: int) -> bytes:
        vm, out, pos = self._vm, bytearray(), 0
        while pos < length:
            a = gpa + pos
            k = min(length - pos, PAGE_SIZE - (a & PAGE_MASK))
            frame = vm.host_frame_of(a >> PAGE_SHIFT) if vm.gfn_maps else -1
            if frame >= 0:
                off = a & PAGE_MASK
                out += self._sysmem.page(frame)[off : off + k]
            elif a >= 0 and a + k <= self.mem_size:
                out += self._ram.read(a, k)
            else:
                out += b"\xff" * k
            pos += k
        return bytes(out)

    def _ram_store(self, gpa: int, data: bytes) -> None:
        """One store within one RAM page; traps when the page is tracked.

        The vGPU is read before the tracked set: a store racing a detach either
        sees the page still tracked and the vGPU it was tracked for (whose core
        entry points refuse it once destroyed), or plain RAM.
        """
        vgpu = self._vgpu
        if vgpu is not None and (gpa >> PAGE_SHIFT) in self._vm.tracked:
            if self._landed:
                self._ram.write(gpa, data)
            self._track_write(vgpu, gpa, data)
        else:
            self._ram.write(gpa, data)

    # --- RAM ---------------------------------------------------------------------------------------
    def mem_read(self, gpa: int, length: int) -> bytes:
        return self._ram.read(gpa, length)

    def store(self, gpa: int, value: int, size: int) -> None:
        check_cpu_access(gpa, size, value)
        self._ram.check(gpa, size, "store")
        data = value.to_bytes(size, "little")
        split = PAGE_SIZE - (gpa & PAGE_MASK)
        if split >= size:
            self._ram_store(gpa, data)
        else:  # a store across a page boundary reaches each page separately
            self._ram_store(gpa, data[:split])
            self._ram_store(gpa + split, data[split:])

    def mem_write(self, gpa: int, data: bytes) -> None:
        n = len(data)
        self._ram.check(gpa, n, "write")
        tracked, pos = self._vm.tracked, 0
        if not tracked:
            self._ram.write(gpa, data)
            return
        while pos < n:
            a = gpa + pos
            k = min(n - pos, PAGE_SIZE - (a & PAGE_MASK))
            if (a >> PAGE_SHIFT) not in tracked:
                self._ram.write(a, data[pos : pos + k])
            else:  # naturally aligned stores, 8 bytes where possible, each trapping
                end = pos + k
                while pos < end:
                    a = gpa + pos
                    size = 8
                    while a % size or size > end - pos:
                        size >>= 1
                    self._ram_store(a, bytes(data[pos : pos + size]))
                    pos += size
                continue
            pos += k

    # --- interrupts ----------------------------------------------------------------------------------
    def wait_msi(self, timeout: float) -> Msi | None:
        return self._vm.pop_msi(timeout)
