"""The GuestPort of a kvmgt guest: every access a real instruction on a vCPU.

Each call becomes micro-ops for the stub (see :mod:`gvt_kvmgt.stub`): config
accesses are ``out`` to 0xCF8 then ``in``/``out`` at 0xCFC (PCI mechanism
#1), MMIO and RAM stores are ``mov`` of the requested width, waiting for an
MSI is ``sti; hlt`` under a LAPIC timer. Only :meth:`mem_read` reads guest RAM
directly, which is side-effect free for the guest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gvt_core.guest.port import check_cfg_access, check_cpu_access
from gvt_core.mpt.ops import Msi
from gvt_kvmgt import stub
from gvt_kvmgt.vm import MASKS, PCI_CONFIG_ADDRESS, PCI_CONFIG_DATA, PCI_CONFIG_ENABLE, VGPU_BDF

if TYPE_CHECKING:
    from gvt_kvmgt.vm import KvmGuestVm, VcpuRunner



def natural_stores(gpa: int, data: bytes) -> list[tuple[int, int, int]]:
    """Split ``data`` at ``gpa`` into naturally aligned stores of the largest width:
    (address, size, little-endian value)."""
    out = []
    pos, n = 0, len(data)
    while pos < n:
        addr = gpa + pos
        left = n - pos
        for size in (8, 4, 2, 1):
            if size <= left and addr % size == 0:
                break
        out.append((addr, size, int.from_bytes(data[pos : pos + size], "little")))
        pos += size
    return out


class KvmGuestPort:
    """GuestPort on one vCPU of a :class:`~gvt_kvmgt.vm.KvmGuestVm`."""

    def __init__(self, vm: KvmGuestVm, runner: VcpuRunner) -> None:
        self.vm = vm
        self.runner = runner
        self.mem_size = vm.mem_size

    # --- config space ------------------------------------------------------------------
    @staticmethod
    def _cfg_address(offset: int, size: int, value: int | None = None) -> int:
        check_cfg_access(offset, size, value)
        return (
            PCI_CONFIG_ENABLE
            | ((offset >> 8) << 24)
            | (VGPU_BDF << 8)
            | (offset & 0xFC)
        )

    def cfg_read(self, offset: int, size: int) -> int:
        address = self._cfg_address(offset, size)
        values = self.runner.execute(
            [
                (stub.OP_OUT, 4, PCI_CONFIG_ADDRESS, address, 1),
                (stub.OP_IN, size, PCI_CONFIG_DATA + (offset & 3), 0, 1),
            ]
        )
        return values[1] & MASKS[size]

    def cfg_write(self, offset: int, value: int, size: int) -> None:
        address = self._cfg_address(offset, size, value)
        self.runner.execute(
            [
                (stub.OP_OUT, 4, PCI_CONFIG_ADDRESS, address, 1),
                (stub.OP_OUT, size, PCI_CONFIG_DATA + (offset & 3), value, 1),
            ]
        )

    # --- memory space ----------------------------------------------------------------------
    def _reach(self, gpa: int, size: int, value: int | None = None) -> None:
        check_cpu_access(gpa, size, value)
        self.vm.page_dirs.ensure(gpa, size)

    def mmio_read(self, gpa: int, size: int) -> int:
        self._reach(gpa, size)
        return self.runner.execute([(stub.OP_LOAD, size, gpa, 0, 1)])[0] & MASKS[size]

    def mmio_write(self, gpa: int, value: int, size: int) -> None:
        self._reach(gpa, size, value)
        self.runner.execute([(stub.OP_STORE, size, gpa, value, 1)])

    def mmio_write_repeat(self, gpa: int, value: int, size: int, count: int) -> None:
        """The same store ``count`` times in a guest loop (one command, ``count`` exits
        when ``gpa`` traps): what the MMIO round-trip benchmark measures."""
        if type(count) is not int or count < 1:
            raise ValueError(f"repeat count must be an int >= 1, not {count!r}")
        self._reach(gpa, size, value)
        self.runner.execute([(stub.OP_STORE, size, gpa, value, count)])

    def mem_read(self, gpa: int, length: int) -> bytes:
        return self.vm.read(gpa, length)

    def store(self, gpa: int, value: int, size: int) -> None:
        check_cpu_access(gpa, size, value)
        self.vm.check_ram(gpa, size, "store")
        self.runner.execute([(stub.OP_STORE, size, gpa, value, 1)])

    def mem_write(self, gpa: int, data: bytes) -> None:
        self.vm.check_ram(gpa, len(data), "write")
        stores = natural_stores(gpa, bytes(data))
        chunk = stub.MAX_ENTRIES
        for i in range(0, len(stores), chunk):
            self.runner.execute(
                [(stub.OP_STORE, size, addr, value, 1) for addr, size, value in stores[i : i + chunk]]
            )

    # --- interrupts ----------------------------------------------------------------------------
    def wait_msi(self, timeout: float) -> Msi | None:
        return self.vm.wait_msi(self.runner, timeout)
