"""One class per KVM file-descriptor level: the system, a VM, a vCPU.

Thin and literal: each method is one ioctl, failures raise
:class:`~gvt_core.errors.HypervisorCallError` naming the call and errno.
The VMM logic (what to map, how to dispatch exits) lives in :mod:`gvt_kvmgt.vm`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import mmap
import os

from gvt_core.errors import HypervisorCallError
from gvt_kvmgt import abi

KVM_DEVICE = "/dev/kvm"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong]


def _call(what: str, fd: int, request: int, arg: object = 0) -> int:
    try:
        return fcntl.ioctl(fd, request, arg)  # type: ignore[call-overload]
    except OSError as exc:
        raise HypervisorCallError("kvmgt", what, exc.errno or 0) from exc


def _call_ulong(what: str, fd: int, request: int, arg: int) -> int:
    """An ioctl whose argument is an unsigned long too large for fcntl.ioctl's C int."""
    ret = _libc.ioctl(fd, request, arg)
    if ret < 0:
        raise HypervisorCallError("kvmgt", what, ctypes.get_errno())
    return ret


class KvmSystem:
    """``/dev/kvm``: API version, capabilities, VM creation."""

    def __init__(self, path: str = KVM_DEVICE) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._cpuid: bytes | None = None

    def api_version(self) -> int:
        return _call("KVM_GET_API_VERSION", self.fd, abi.KVM_GET_API_VERSION)

    def check_extension(self, cap: int) -> int:
        return _call("KVM_CHECK_EXTENSION", self.fd, abi.KVM_CHECK_EXTENSION, cap)

    def vcpu_mmap_size(self) -> int:
        return _call("KVM_GET_VCPU_MMAP_SIZE", self.fd, abi.KVM_GET_VCPU_MMAP_SIZE)

    def supported_cpuid(self) -> bytes:
        """The raw ``kvm_cpuid2`` of every leaf KVM supports (cached; grows on E2BIG)."""
        if self._cpuid is None:
            nent = 64
            while True:
                buf = abi.cpuid2_buffer(nent)()
                buf.nent = nent
                try:
                    fcntl.ioctl(self.fd, abi.KVM_GET_SUPPORTED_CPUID, buf)
                except OSError as exc:
                    if exc.errno == errno.E2BIG and nent < 4096:
                        nent *= 2
                        continue
                    raise HypervisorCallError("kvmgt", "KVM_GET_SUPPORTED_CPUID", exc.errno or 0) from exc
                n = buf.nent
                self._cpuid = bytes(buf)[: ctypes.sizeof(abi.kvm_cpuid2) + n * ctypes.sizeof(abi.kvm_cpuid_entry2)]
                break
        return self._cpuid

    def create_vm(self) -> KvmVm:
        fd = _call("KVM_CREATE_VM", self.fd, abi.KVM_CREATE_VM, 0)
        return KvmVm(self, fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class KvmVm:
    """A VM file descriptor: memslots, the in-kernel irqchip, MSIs, vCPUs."""

    def __init__(self, system: KvmSystem, fd: int) -> None:
        self.system = system
        self.fd = fd
        self._region = abi.kvm_userspace_memory_region()
        self._msi = abi.kvm_msi()

    def check_extension(self, cap: int) -> int:
        """Per-VM answer (more precise than the system's, e.g. for memslot counts)."""
        return _call("KVM_CHECK_EXTENSION", self.fd, abi.KVM_CHECK_EXTENSION, cap)

    def set_user_memory_region(
        self, slot: int, flags: int, guest_phys_addr: int, memory_size: int, userspace_addr: int
    ) -> None:
        """Create, or with ``memory_size=0`` delete, memslot ``slot``."""
        r = self._region
        r.slot, r.flags = slot, flags
        r.guest_phys_addr, r.memory_size, r.userspace_addr = guest_phys_addr, memory_size, userspace_addr
        _call("KVM_SET_USER_MEMORY_REGION", self.fd, abi.KVM_SET_USER_MEMORY_REGION, r)

    def set_tss_addr(self, addr: int) -> None:
        _call_ulong("KVM_SET_TSS_ADDR", self.fd, abi.KVM_SET_TSS_ADDR, addr)

    def create_irqchip(self) -> None:
        _call("KVM_CREATE_IRQCHIP", self.fd, abi.KVM_CREATE_IRQCHIP)

    def signal_msi(self, address: int, data: int) -> int:
        """Inject one MSI into the in-kernel LAPICs; returns how many vCPUs took it
        (0: blocked or coalesced, as KVM reports)."""
        m = abi.kvm_msi(address_lo=address & 0xFFFF_FFFF, address_hi=address >> 32, data=data)
        return _call("KVM_SIGNAL_MSI", self.fd, abi.KVM_SIGNAL_MSI, m)

    def create_vcpu(self, index: int) -> KvmVcpu:
        fd = _call("KVM_CREATE_VCPU", self.fd, abi.KVM_CREATE_VCPU, index)
        return KvmVcpu(self, fd, index)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class KvmVcpu:
    """A vCPU file descriptor and its shared ``kvm_run`` page."""

    def __init__(self, vm: KvmVm, fd: int, index: int) -> None:
        self.vm = vm
        self.fd = fd
        self.index = index
        self.run_size = vm.system.vcpu_mmap_size()
        self.run_map = mmap.mmap(fd, self.run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        #: typed views of the kvm_run page for the exit fast path (no struct decoding per exit).
        self.run_view = memoryview(self.run_map)
        self.run_u8 = self.run_view.cast("B")
        self.run_u16 = self.run_view.cast("H")
        self.run_u32 = self.run_view.cast("I")
        self._run_whole = self.run_view[: self.run_size - self.run_size % 8]
        self.run_u64 = self._run_whole.cast("Q")
        self.run = abi.kvm_run.from_buffer(self.run_map)

    def get_regs(self) -> abi.kvm_regs:
        regs = abi.kvm_regs()
        _call("KVM_GET_REGS", self.fd, abi.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: abi.kvm_regs) -> None:
        _call("KVM_SET_REGS", self.fd, abi.KVM_SET_REGS, regs)

    def get_sregs(self) -> abi.kvm_sregs:
        sregs = abi.kvm_sregs()
        _call("KVM_GET_SREGS", self.fd, abi.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: abi.kvm_sregs) -> None:
        _call("KVM_SET_SREGS", self.fd, abi.KVM_SET_SREGS, sregs)

    def set_cpuid2(self, raw: bytes) -> None:
        buf = bytearray(raw)
        _call("KVM_SET_CPUID2", self.fd, abi.KVM_SET_CPUID2, buf)

    def set_mp_state(self, state: int) -> None:
        _call("KVM_SET_MP_STATE", self.fd, abi.KVM_SET_MP_STATE, abi.kvm_mp_state(state))

    def close(self) -> None:
        if self.fd < 0:
            return
        del self.run
        views = (self.run_u8, self.run_u16, self.run_u32, self.run_u64, self._run_whole, self.run_view)
        for view in views:
            view.release()
        self.run_map.close()
        os.close(self.fd)
        self.fd = -1
