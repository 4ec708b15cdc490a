"""The GuestPort of a domain on the emulated Xen: each access is one guest instruction.

Config space is PCI mechanism #1 (``out`` of the address to 0xCF8, then
``in``/``out`` at 0xCFC-0xCFF); MMIO and RAM stores are ``mov`` loads and
stores of the requested width; ``mem_write`` copies into plain RAM and
splits anything else into naturally aligned stores; ``wait_msi`` halts
until the vCPU's LAPIC has a vector. Xen decides what each access becomes
(:mod:`gvt_xengt.emulated.vcpu`). Every call is first held to the argument
contract all ports share (``check_cfg_access``/``check_cpu_access``), so a
malformed one is a ``ValueError`` before any instruction runs. Beyond that
contract, only the 256-byte legacy config window is reachable this way: Xen
forwards the AMD extended-config bits of 0xCF8 only to AMD guests, and this
model is an Intel host (an offset above it is a ``ValueError`` too, saying so).
"""

from __future__ import annotations

from gvt_core.errors import GuestMemoryError
from gvt_core.guest.port import (
    VGPU_BUS,
    VGPU_DEVICE,
    VGPU_FUNCTION,
    check_cfg_access,
    check_cpu_access,
)
from gvt_core.mpt.ops import Msi
from gvt_xengt.abi import PAGE_SIZE
from gvt_xengt.emulated.domain import HvmDomain
from gvt_xengt.emulated.vcpu import PCI_CONFIG_ADDRESS, PCI_CONFIG_DATA, PCI_CONFIG_ENABLE

VGPU_BDF = (VGPU_BUS << 8) | (VGPU_DEVICE << 3) | VGPU_FUNCTION
#: config bytes reachable through 0xCF8/0xCFC on this (Intel) model.
LEGACY_CONFIG_SIZE = 256


class XenGuestPort:
    """GuestPort on vCPU ``vcpu`` of an emulated domain."""

    def __init__(self, domain: HvmDomain, vcpu: int = 0) -> None:
        if not 0 <= vcpu < domain.max_vcpus:
            raise ValueError(f"domain {domain.domid} has vCPUs 0..{domain.max_vcpus - 1}, not {vcpu}")
        self.domain = domain
        self.vcpu = domain.vcpus[vcpu]
        self.mem_size = domain.mem_size
        self._pci_lock = domain.guest_pci_lock

    # --- config space -----------------------------------------------------------------------
    @staticmethod
    def _address(offset: int, size: int, value: int | None = None) -> int:
        check_cfg_access(offset, size, value)
        if offset >= LEGACY_CONFIG_SIZE:
            raise ValueError(
                f"config access of {size} bytes at {offset:#x}: through 0xCF8/0xCFC a Xen HVM "
                f"guest on an Intel host reaches only the first {LEGACY_CONFIG_SIZE} bytes"
            )
        return PCI_CONFIG_ENABLE | (VGPU_BDF << 8) | (offset & 0xFC)

    def cfg_read(self, offset: int, size: int) -> int:
        address = self._address(offset, size)
        with self._pci_lock:
            self.vcpu.outp(PCI_CONFIG_ADDRESS, 4, address)
            return self.vcpu.inp(PCI_CONFIG_DATA + (offset & 3), size)

    def cfg_write(self, offset: int, value: int, size: int) -> None:
        address = self._address(offset, size, value)
        with self._pci_lock:
            self.vcpu.outp(PCI_CONFIG_ADDRESS, 4, address)
            self.vcpu.outp(PCI_CONFIG_DATA + (offset & 3), size, value)

    # --- memory -------------------------------------------------------------------------------
    def mmio_read(self, gpa: int, size: int) -> int:
        check_cpu_access(gpa, size)
        return self.vcpu.load(gpa, size)

    def mmio_write(self, gpa: int, value: int, size: int) -> None:
        check_cpu_access(gpa, size, value)
        self.vcpu.store(gpa, size, value)

    def mem_read(self, gpa: int, length: int) -> bytes:
        self._check_ram(gpa, length, "read")
        return self.domain.read_ram(gpa, length)

    def _check_ram(self, gpa: int, length: int, what: str) -> None:
        if type(length) is not int or length < 0:
            raise ValueError(f"a guest memory {what} needs an int length >= 0, got {length!r}")
        if type(gpa) is not int:
            raise ValueError(f"a guest memory {what} needs an int address, got {gpa!r}")
        if gpa < 0 or gpa + length > self.mem_size:
            raise GuestMemoryError(gpa, length, self.mem_size, what)

    def store(self, gpa: int, value: int, size: int) -> None:
        check_cpu_access(gpa, size, value)
        self._check_ram(gpa, size, "store")
        self.vcpu.store(gpa, size, value)

    def mem_write(self, gpa: int, data: bytes) -> None:
        data = bytes(data)
        n = len(data)
        self._check_ram(gpa, n, "write")
        pos = 0
        while pos < n:
            a = gpa + pos
            k = min(n - pos, PAGE_SIZE - (a & (PAGE_SIZE - 1)))
            with self.domain.xen.lock:
                plain = self.domain.plain_ram(a, k)
            if plain:
                self.vcpu.write_block(a, data[pos : pos + k])
            else:
                end = pos + k
                while pos < end:
                    a = gpa + pos
                    size = 8
                    while a % size or size > end - pos:
                        size >>= 1
                    self.vcpu.store(a, size, int.from_bytes(data[pos : pos + size], "little"))
                    pos += size
                continue
            pos += k

    def rep_movs(self, dst: int, src: int, size: int, count: int, df: bool = False) -> None:
        """``rep movs`` between RAM and an emulated range (not part of GuestPort)."""
        self.vcpu.rep_movs(dst, src, size, count, df)

    # --- interrupts -------------------------------------------------------------------------------
    def wait_msi(self, timeout: float) -> Msi | None:
        return self.vcpu.wait_interrupt(timeout)
