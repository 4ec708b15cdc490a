"""The /dev/kvm ABI as ctypes: structures, ioctl numbers and exit reasons.

Everything here mirrors ``<linux/kvm.h>`` and ``<asm/kvm.h>`` for x86-64.
ioctl numbers are *computed* from their definitions (``_IO``/``_IOR``/
``_IOW``/``_IOWR`` from :mod:`gvt_core.hostabi.ioctl`, with ``KVMIO`` and the
ctypes structure sizes) rather than copied as magic numbers, so a wrong
structure size shows up as a wrong ioctl number; ``tests/test_abi.py``
checks both against the C header with gcc.
"""

from __future__ import annotations

import ctypes

from gvt_core.hostabi.ioctl import IO, IOR, IOW, IOWR

c_u8, c_u16, c_u32, c_u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

KVMIO = 0xAE
KVM_API_VERSION = 12


# --- structures -------------------------------------------------------------------------
class kvm_userspace_memory_region(ctypes.Structure):
    _fields_ = [
        ("slot", c_u32),
        ("flags", c_u32),
        ("guest_phys_addr", c_u64),
        ("memory_size", c_u64),
        ("userspace_addr", c_u64),
    ]


class kvm_regs(ctypes.Structure):
    _fields_ = [
        (name, c_u64)
        for name in (
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
            "rip", "rflags",
        )
    ]


class kvm_segment(ctypes.Structure):
    _fields_ = [
        ("base", c_u64),
        ("limit", c_u32),
        ("selector", c_u16),
        ("type", c_u8),
        ("present", c_u8),
        ("dpl", c_u8),
        ("db", c_u8),
        ("s", c_u8),
        ("l", c_u8),
        ("g", c_u8),
        ("avl", c_u8),
        ("unusable", c_u8),
        ("padding", c_u8),
    ]


class kvm_dtable(ctypes.Structure):
    _fields_ = [("base", c_u64), ("limit", c_u16), ("padding", c_u16 * 3)]


KVM_NR_INTERRUPTS = 256


class kvm_sregs(ctypes.Structure):
    _fields_ = [
        ("cs", kvm_segment),
        ("ds", kvm_segment),
        ("es", kvm_segment),
        ("fs", kvm_segment),
        ("gs", kvm_segment),
        ("ss", kvm_segment),
        ("tr", kvm_segment),
        ("ldt", kvm_segment),
        ("gdt", kvm_dtable),
        ("idt", kvm_dtable),
        ("cr0", c_u64),
        ("cr2", c_u64),
        ("cr3", c_u64),
        ("cr4", c_u64),
        ("cr8", c_u64),
        ("efer", c_u64),
        ("apic_base", c_u64),
        ("interrupt_bitmap", c_u64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    ]


class kvm_msi(ctypes.Structure):
    _fields_ = [
        ("address_lo", c_u32),
        ("address_hi", c_u32),
        ("data", c_u32),
        ("flags", c_u32),
        ("devid", c_u32),
        ("pad", c_u8 * 12),
    ]


class kvm_mp_state(ctypes.Structure):
    _fields_ = [("mp_state", c_u32)]


KVM_MP_STATE_RUNNABLE = 0


class kvm_cpuid_entry2(ctypes.Structure):
    _fields_ = [
        ("function", c_u32),
        ("index", c_u32),
        ("flags", c_u32),
        ("eax", c_u32),
        ("ebx", c_u32),
        ("ecx", c_u32),
        ("edx", c_u32),
        ("padding", c_u32 * 3),
    ]


class kvm_cpuid2(ctypes.Structure):
    """Header only: the entries follow it (a flexible array in C)."""

    _fields_ = [("nent", c_u32), ("padding", c_u32)]


def cpuid2_buffer(nent: int) -> type[ctypes.Structure]:
    """A ``kvm_cpuid2`` with room for ``nent`` entries."""

    class _Cpuid2(ctypes.Structure):
        _fields_ = [("nent", c_u32), ("padding", c_u32), ("entries", kvm_cpuid_entry2 * nent)]

    return _Cpuid2


class kvm_run_io(ctypes.Structure):
    _fields_ = [
        ("direction", c_u8),
        ("size", c_u8),
        ("port", c_u16),
        ("count", c_u32),
        ("data_offset", c_u64),
    ]


class kvm_run_mmio(ctypes.Structure):
    _fields_ = [("phys_addr", c_u64), ("data", c_u8 * 8), ("len", c_u32), ("is_write", c_u8)]


class kvm_run_fail_entry(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", c_u64), ("cpu", c_u32)]


class kvm_run_internal(ctypes.Structure):
    _fields_ = [("suberror", c_u32), ("ndata", c_u32), ("data", c_u64 * 16)]


class kvm_run_system_event(ctypes.Structure):
    _fields_ = [("type", c_u32), ("ndata", c_u32), ("data", c_u64 * 16)]


class kvm_run_ex(ctypes.Structure):
    _fields_ = [("exception", c_u32), ("error_code", c_u32)]


class kvm_run_hw(ctypes.Structure):
    _fields_ = [("hardware_exit_reason", c_u64)]


class kvm_run_exit(ctypes.Union):
    """The part of ``kvm_run``'s exit union this VMM decodes (the C union is 256 bytes)."""

    _fields_ = [
        ("hw", kvm_run_hw),
        ("fail_entry", kvm_run_fail_entry),
        ("ex", kvm_run_ex),
        ("io", kvm_run_io),
        ("mmio", kvm_run_mmio),
        ("internal", kvm_run_internal),
        ("system_event", kvm_run_system_event),
        ("padding", ctypes.c_char * 256),
    ]


class kvm_run(ctypes.Structure):
    """Head of the shared ``kvm_run`` page (the rest is state this VMM does not use)."""

    _fields_ = [
        ("request_interrupt_window", c_u8),
        ("immediate_exit", c_u8),
        ("padding1", c_u8 * 6),
        ("exit_reason", c_u32),
        ("ready_for_interrupt_injection", c_u8),
        ("if_flag", c_u8),
        ("flags", c_u16),
        ("cr8", c_u64),
        ("apic_base", c_u64),
        ("exit", kvm_run_exit),
    ]


# --- ioctls -------------------------------------------------------------------------------
# system (/dev/kvm)
KVM_GET_API_VERSION = IO(KVMIO, 0x00)
KVM_CREATE_VM = IO(KVMIO, 0x01)
KVM_CHECK_EXTENSION = IO(KVMIO, 0x03)
KVM_GET_VCPU_MMAP_SIZE = IO(KVMIO, 0x04)
KVM_GET_SUPPORTED_CPUID = IOWR(KVMIO, 0x05, kvm_cpuid2)
# VM
KVM_CREATE_VCPU = IO(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION = IOW(KVMIO, 0x46, kvm_userspace_memory_region)
KVM_SET_TSS_ADDR = IO(KVMIO, 0x47)
KVM_CREATE_IRQCHIP = IO(KVMIO, 0x60)
KVM_SIGNAL_MSI = IOW(KVMIO, 0xA5, kvm_msi)
# vCPU
KVM_RUN = IO(KVMIO, 0x80)
KVM_GET_REGS = IOR(KVMIO, 0x81, kvm_regs)
KVM_SET_REGS = IOW(KVMIO, 0x82, kvm_regs)
KVM_GET_SREGS = IOR(KVMIO, 0x83, kvm_sregs)
KVM_SET_SREGS = IOW(KVMIO, 0x84, kvm_sregs)
KVM_SET_CPUID2 = IOW(KVMIO, 0x90, kvm_cpuid2)
KVM_SET_MP_STATE = IOW(KVMIO, 0x99, kvm_mp_state)

# --- capabilities (KVM_CHECK_EXTENSION) ----------------------------------------------------
KVM_CAP_IRQCHIP = 0
KVM_CAP_USER_MEMORY = 3
KVM_CAP_SET_TSS_ADDR = 4
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_SIGNAL_MSI = 77
KVM_CAP_READONLY_MEM = 81

# --- memslot flags -------------------------------------------------------------------------
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1

# --- exit reasons ---------------------------------------------------------------------------
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_SYSTEM_EVENT = 24

KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1

EXIT_NAMES: dict[int, str] = {
    value: name[len("KVM_EXIT_"):]
    for name, value in list(globals().items())
    if name.startswith("KVM_EXIT_") and not name.startswith("KVM_EXIT_IO_")
}

# --- byte offsets into kvm_run the exit fast path reads through memoryview casts -----------
RUN_EXIT_REASON = kvm_run.exit_reason.offset
RUN_EXIT_UNION = kvm_run.exit.offset
RUN_IO_DIRECTION = RUN_EXIT_UNION + kvm_run_io.direction.offset
RUN_IO_SIZE = RUN_EXIT_UNION + kvm_run_io.size.offset
RUN_IO_PORT = RUN_EXIT_UNION + kvm_run_io.port.offset
RUN_IO_COUNT = RUN_EXIT_UNION + kvm_run_io.count.offset
RUN_IO_DATA_OFFSET = RUN_EXIT_UNION + kvm_run_io.data_offset.offset
RUN_MMIO_PHYS_ADDR = RUN_EXIT_UNION + kvm_run_mmio.phys_addr.offset
RUN_MMIO_DATA = RUN_EXIT_UNION + kvm_run_mmio.data.offset
RUN_MMIO_LEN = RUN_EXIT_UNION + kvm_run_mmio.len.offset
RUN_MMIO_IS_WRITE = RUN_EXIT_UNION + kvm_run_mmio.is_write.offset

# --- x86 architectural constants the VMM programs ---------------------------------------------
X86_CR0_PE = 1 << 0
X86_CR0_MP = 1 << 1
X86_CR0_ET = 1 << 4
X86_CR0_NE = 1 << 5
X86_CR0_WP = 1 << 16
X86_CR0_AM = 1 << 18
X86_CR0_PG = 1 << 31
X86_CR4_PAE = 1 << 5
X86_CR4_OSFXSR = 1 << 9
X86_CR4_OSXMMEXCPT = 1 << 10
EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
X86_RFLAGS_RESERVED = 1 << 1
