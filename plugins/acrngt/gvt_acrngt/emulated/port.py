"""The CPU of an emulated ACRN User VM, as a :class:`gvt_core.guest.port.GuestPort`.

Each access is what an x86 vCPU would execute: a load or store walks the
VM's EPT in the emulated hypervisor (RAM it may touch is read or written in
place; anything else exits and becomes an MMIO or write-protect request to
the device model), and a config-space access is the PCI mechanism #1 pair
``out 0xCF8`` / ``in``/``out 0xCFC+n``, each a port I/O exit. The calling
thread is the vCPU while the access runs; one port is one vCPU, and accesses
of several threads on one port take turns, as instructions of one CPU do.
Arguments are checked as every port checks them
(:func:`~gvt_core.guest.port.check_cfg_access`,
:func:`~gvt_core.guest.port.check_cpu_access`) before the vCPU acts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gvt_acrngt import abi
from gvt_core.errors import GuestMemoryError
from gvt_core.guest.port import (
    VGPU_BUS,
    VGPU_DEVICE,
    VGPU_FUNCTION,
    check_cfg_access,
    check_cpu_access,
)
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SIZE
from gvt_core.mpt.ops import Msi

if TYPE_CHECKING:
    from gvt_acrngt.emulated.hypervisor import Hypervisor, UserVm

#: widths of ``in`` / ``out``.
_PORT_IO_SIZES = (1, 2, 4)
#: the x86 I/O port space.
_PORT_LIMIT = 0x1_0000
#: bits 27:24 of CONFIG_ADDRESS select the extended register block (the HSM folds
#: them into the register number), so the whole 4 KiB config space is reachable.
_EXT_REG_SHIFT = 24


def _check_port_io(port: int, size: int, value: int | None = None) -> None:
    if type(size) is not int or size not in _PORT_IO_SIZES:
        raise ValueError(f"port I/O is 1, 2 or 4 bytes, not {size!r}")
    if type(port) is not int or not 0 <= port <= _PORT_LIMIT - size:
        raise ValueError(f"I/O port {port!r} is outside [0, {_PORT_LIMIT:#x})")
    if value is not None and not (type(value) is int and 0 <= value < 1 << (8 * size)):
        raise ValueError(f"value {value!r} does not fit a {size}-byte out")


class EmulatedGuestPort:
    """One vCPU of one User VM of the emulated ACRN."""

    def __init__(self, hv: Hypervisor, vm: UserVm, vcpu: int, mem_size: int) -> None:
        if not 0 <= vcpu < vm.vcpu_num:
            raise ValueError(f"User VM {vm.vmid} has vCPUs 0..{vm.vcpu_num - 1}, not {vcpu}")
        self._hv = hv
        self._vm = vm
        self._vcpu = vm.vcpus[vcpu]
        self.mem_size = mem_size

    @property
    def vcpu(self) -> int:
        return self._vcpu.index

    # --- config space through 0xCF8 / 0xCFC --------------------------------------------------
    @staticmethod
    def _config_address(offset: int) -> int:
        return (
            abi.PCI_CONFIG_ENABLE | ((offset >> 8) << _EXT_REG_SHIFT) | (VGPU_BUS << 16)
            | (VGPU_DEVICE << 11) | (VGPU_FUNCTION << 8) | (offset & 0xFC)
        )

    def cfg_read(self, offset: int, size: int) -> int:
        check_cfg_access(offset, size)
        address = self._config_address(offset)
        with self._vcpu.lock:
            self._hv.port_io(self._vcpu, abi.PCI_CONFIG_ADDRESS_PORT, 4, address, True)
            return self._hv.port_io(
                self._vcpu, abi.PCI_CONFIG_DATA_PORT + (offset & 3), size, 0, False
            )

    def cfg_write(self, offset: int, value: int, size: int) -> None:
        check_cfg_access(offset, size, value)
        address = self._config_address(offset)
        with self._vcpu.lock:
            self._hv.port_io(self._vcpu, abi.PCI_CONFIG_ADDRESS_PORT, 4, address, True)
            self._hv.port_io(self._vcpu, abi.PCI_CONFIG_DATA_PORT + (offset & 3), size, value, True)

    def port_read(self, port: int, size: int) -> int:
        """An ``in`` of ``size`` (1, 2 or 4) bytes."""
        _check_port_io(port, size)
        with self._vcpu.lock:
            return self._hv.port_io(self._vcpu, port, size, 0, False)

    def port_write(self, port: int, value: int, size: int) -> None:
        """An ``out`` of ``size`` (1, 2 or 4) bytes."""
        _check_port_io(port, size, value)
        with self._vcpu.lock:
            self._hv.port_io(self._vcpu, port, size, value, True)

    # --- loads and stores ------------------------------------------------------------------------
    def _access(self, gpa: int, data: bytearray, write: bool) -> None:
        """One access, split where it crosses into another page (each part exits on
        its own where its page is not mapped for it)."""
        with self._vcpu.lock:
            pos = 0
            while pos < len(data):
                a = gpa + pos
                k = min(len(data) - pos, PAGE_SIZE - (a & PAGE_MASK))
                part = data[pos : pos + k]
                self._hv.access_memory(self._vcpu, a, part, write)
                if not write:
                    data[pos : pos + k] = part
                pos += k

    def mmio_read(self, gpa: int, size: int) -> int:
        check_cpu_access(gpa, size)
        data = bytearray(size)
        self._access(gpa, data, False)
        return int.from_bytes(data, "little")

    def mmio_write(self, gpa: int, value: int, size: int) -> None:
        check_cpu_access(gpa, size, value)
        self._access(gpa, bytearray(value.to_bytes(size, "little")), True)

    def _check_ram(self, gpa: int, length: int, what: str) -> None:
        if type(length) is not int or length < 0:
            raise ValueError(f"guest {what} length must be an int >= 0, got {length!r}")
        if type(gpa) is not int:
            raise ValueError(f"guest-physical address {gpa!r} is not an int")
        if gpa < 0 or gpa + length > self.mem_size:
            raise GuestMemoryError(gpa, length, self.mem_size, what)

    def mem_read(self, gpa: int, length: int) -> bytes:
        self._check_ram(gpa, length, "read")
        data = bytearray(length)
        self._access(gpa, data, False)
        return bytes(data)

    def store(self, gpa: int, value: int, size: int) -> None:
        check_cpu_access(gpa, size, value)
        self._check_ram(gpa, size, "store")
        self._access(gpa, bytearray(value.to_bytes(size, "little")), True)

    def mem_write(self, gpa: int, data: bytes) -> None:
        """Stores of ``data``: one copy per page the EPT lets the vCPU write, naturally
        aligned stores of up to 8 bytes (each its own exit) elsewhere."""
        n = len(data)
        self._check_ram(gpa, n, "write")
        hv, vcpu = self._hv, self._vcpu
        with vcpu.lock:
            pos = 0
            while pos < n:
                a = gpa + pos
                k = min(n - pos, PAGE_SIZE - (a & PAGE_MASK))
                if hv.writable(vcpu.vm, a):
                    hv.access_memory(vcpu, a, bytearray(data[pos : pos + k]), True)
                    pos += k
                    continue
                end = pos + k
                while pos < end:
                    a = gpa + pos
                    size = 8
                    while a % size or size > end - pos:
                        size >>= 1
                    hv.access_memory(vcpu, a, bytearray(data[pos : pos + size]), True)
                    pos += size

    # --- interrupts ---------------------------------------------------------------------------------
    def wait_msi(self, timeout: float) -> Msi | None:
        """The highest interrupt pending at this vCPU's vLAPIC (see
        :mod:`gvt_acrngt.emulated.vlapic`), as the message that raised it."""
        return self._hv.wait_msi(self._vcpu, timeout)
