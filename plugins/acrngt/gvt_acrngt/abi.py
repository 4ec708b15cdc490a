"""The ACRN HSM user-space ABI (``<linux/acrn.h>``) as ctypes, for x86-64.

Everything in ``linux/acrn.h`` is here: the request slots and the shared
request buffer, every ioctl argument structure, every ioctl number and
every constant. ioctl numbers are *computed* from their definitions
(``_IO``/``_IOW``/``_IOWR`` from :mod:`gvt_core.hostabi.ioctl`, with
``ACRN_IOCTL_TYPE`` and the ctypes sizes),
so a wrong structure size shows up as a wrong ioctl number;
``tests/test_abi.py`` compiles a probe against the installed header with gcc
and checks every size, offset, number and constant.

Two values the upstream header does not carry are kept apart at the end,
each with where it comes from: the hypervisor's write-protect request type
and the HSM's internal limits and region operations the emulated HSM obeys.
"""

from __future__ import annotations

import ctypes

from gvt_core.hostabi.ioctl import IO, IOW, IOWR

c_u8, c_u16, c_u32, c_u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
c_s32 = ctypes.c_int32

# --- constants ---------------------------------------------------------------------------
ACRN_IO_REQUEST_MAX = 16

ACRN_IOREQ_STATE_PENDING = 0
ACRN_IOREQ_STATE_COMPLETE = 1
ACRN_IOREQ_STATE_PROCESSING = 2
ACRN_IOREQ_STATE_FREE = 3

ACRN_IOREQ_TYPE_PORTIO = 0
ACRN_IOREQ_TYPE_MMIO = 1
ACRN_IOREQ_TYPE_PCICFG = 2

ACRN_IOREQ_DIR_READ = 0
ACRN_IOREQ_DIR_WRITE = 1

ACRN_MEM_ACCESS_RIGHT_MASK = 0x00000007
ACRN_MEM_ACCESS_READ = 0x00000001
ACRN_MEM_ACCESS_WRITE = 0x00000002
ACRN_MEM_ACCESS_EXEC = 0x00000004
ACRN_MEM_ACCESS_RWX = ACRN_MEM_ACCESS_READ | ACRN_MEM_ACCESS_WRITE | ACRN_MEM_ACCESS_EXEC

ACRN_MEM_TYPE_MASK = 0x000007C0
ACRN_MEM_TYPE_WB = 0x00000040
ACRN_MEM_TYPE_WT = 0x00000080
ACRN_MEM_TYPE_UC = 0x00000100
ACRN_MEM_TYPE_WC = 0x00000200
ACRN_MEM_TYPE_WP = 0x00000400

ACRN_MEMMAP_RAM = 0
ACRN_MEMMAP_MMIO = 1

ACRN_PTDEV_IRQ_INTX = 0
ACRN_PTDEV_IRQ_MSI = 1
ACRN_PTDEV_IRQ_MSIX = 2

ACRN_PTDEV_QUIRK_ASSIGN = 1 << 0
ACRN_MMIODEV_RES_NUM = 3
ACRN_PCI_NUM_BARS = 6

PMCMD_TYPE_MASK = 0x000000FF
ACRN_PMCMD_GET_PX_CNT = 0
ACRN_PMCMD_GET_PX_DATA = 1
ACRN_PMCMD_GET_CX_CNT = 2
ACRN_PMCMD_GET_CX_DATA = 3

ACRN_IOEVENTFD_FLAG_PIO = 0x01
ACRN_IOEVENTFD_FLAG_DATAMATCH = 0x02
ACRN_IOEVENTFD_FLAG_DEASSIGN = 0x04

ACRN_IRQFD_FLAG_DEASSIGN = 0x01

ACRN_IOCTL_TYPE = 0xA2


# --- I/O requests --------------------------------------------------------------------------
class acrn_mmio_request(ctypes.Structure):
    _fields_ = [
        ("direction", c_u32),
        ("reserved", c_u32),
        ("address", c_u64),
        ("size", c_u64),
        ("value", c_u64),
    ]


class acrn_pio_request(ctypes.Structure):
    _fields_ = [
        ("direction", c_u32),
        ("reserved", c_u32),
        ("address", c_u64),
        ("size", c_u64),
        ("value", c_u32),
    ]


class acrn_pci_request(ctypes.Structure):
    _fields_ = [
        ("direction", c_u32),
        ("reserved", c_u32 * 3),
        ("size", c_u64),
        ("value", c_u32),
        ("bus", c_u32),
        ("dev", c_u32),
        ("func", c_u32),
        ("reg", c_u32),
    ]


class acrn_io_request_reqs(ctypes.Union):
    _fields_ = [
        ("pio_request", acrn_pio_request),
        ("pci_request", acrn_pci_request),
        ("mmio_request", acrn_mmio_request),
        ("data", c_u64 * 8),
    ]


#: ``struct acrn_io_request`` is ``__attribute__((aligned(256)))``: 140 bytes of fields
#: padded to 256 so the 16 slots tile one 4 KiB page.
IO_REQUEST_SIZE = 256


class acrn_io_request(ctypes.Structure):
    _fields_ = [
        ("type", c_u32),
        ("completion_polling", c_u32),
        ("reserved0", c_u32 * 14),
        ("reqs", acrn_io_request_reqs),
        ("reserved1", c_u32),
        ("kernel_handled", c_u32),
        ("processed", c_u32),
        ("_aligned_256", c_u8 * (IO_REQUEST_SIZE - 140)),
    ]


class acrn_io_request_buffer(ctypes.Union):
    _fields_ = [
        ("req_slot", acrn_io_request * ACRN_IO_REQUEST_MAX),
        ("reserved", c_u8 * 4096),
    ]


class acrn_ioreq_notify(ctypes.Structure):
    _fields_ = [("vmid", c_u16), ("reserved", c_u16), ("vcpu", c_u32)]


# --- VM management -----------------------------------------------------------------------------
class guid_t(ctypes.Structure):
    _fields_ = [("b", c_u8 * 16)]


class acrn_vm_creation(ctypes.Structure):
    _fields_ = [
        ("vmid", c_u16),
        ("reserved0", c_u16),
        ("vcpu_num", c_u16),
        ("reserved1", c_u16),
        ("uuid", guid_t),
        ("vm_flag", c_u64),
        ("ioreq_buf", c_u64),
        ("cpu_affinity", c_u64),
    ]


class acrn_gp_regs(ctypes.Structure):
    _fields_ = [
        (name, c_u64)
        for name in (
            "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
        )
    ]


class acrn_descriptor_ptr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("limit", c_u16), ("base", c_u64), ("reserved", c_u16 * 3)]


class acrn_regs(ctypes.Structure):
    _fields_ = [
        ("gprs", acrn_gp_regs),
        ("gdt", acrn_descriptor_ptr),
        ("idt", acrn_descriptor_ptr),
        ("rip", c_u64),
        ("cs_base", c_u64),
        ("cr0", c_u64),
        ("cr4", c_u64),
        ("cr3", c_u64),
        ("ia32_efer", c_u64),
        ("rflags", c_u64),
        ("reserved_64", c_u64 * 4),
        ("cs_ar", c_u32),
        ("cs_limit", c_u32),
        ("reserved_32", c_u32 * 3),
        ("cs_sel", c_u16),
        ("ss_sel", c_u16),
        ("ds_sel", c_u16),
        ("es_sel", c_u16),
        ("fs_sel", c_u16),
        ("gs_sel", c_u16),
        ("ldt_sel", c_u16),
        ("tr_sel", c_u16),
    ]


class acrn_vcpu_regs(ctypes.Structure):
    _fields_ = [("vcpu_id", c_u16), ("reserved", c_u16 * 3), ("vcpu_regs", acrn_regs)]


class acrn_vm_memmap_pa(ctypes.Union):
    _fields_ = [("service_vm_pa", c_u64), ("vma_base", c_u64)]


class acrn_vm_memmap(ctypes.Structure):
    _anonymous_ = ("_pa",)
    _fields_ = [
        ("type", c_u32),
        ("attr", c_u32),
        ("user_vm_pa", c_u64),
        ("_pa", acrn_vm_memmap_pa),
        ("len", c_u64),
    ]


class acrn_ptdev_irq_intx(ctypes.Structure):
    _fields_ = [("virt_pin", c_u32), ("phys_pin", c_u32), ("is_pic_pin", c_u32)]


class acrn_ptdev_irq(ctypes.Structure):
    _fields_ = [
        ("type", c_u32),
        ("virt_bdf", c_u16),
        ("phys_bdf", c_u16),
        ("intx", acrn_ptdev_irq_intx),
    ]


class acrn_pcidev(ctypes.Structure):
    _fields_ = [
        ("type", c_u32),
        ("virt_bdf", c_u16),
        ("phys_bdf", c_u16),
        ("intr_line", c_u8),
        ("intr_pin", c_u8),
        ("bar", c_u32 * ACRN_PCI_NUM_BARS),
    ]


class acrn_mmiodev_res(ctypes.Structure):
    _fields_ = [
        ("user_vm_pa", c_u64),
        ("service_vm_pa", c_u64),
        ("size", c_u64),
        ("mem_type", c_u64),
    ]


class acrn_mmiodev(ctypes.Structure):
    _fields_ = [("name", c_u8 * 8), ("res", acrn_mmiodev_res * ACRN_MMIODEV_RES_NUM)]


class acrn_vdev_id_fields(ctypes.Structure):
    _fields_ = [("vendor", c_u16), ("device", c_u16), ("legacy_id", c_u32)]


class acrn_vdev_id(ctypes.Union):
    _fields_ = [("value", c_u64), ("fields", acrn_vdev_id_fields)]


class acrn_vdev(ctypes.Structure):
    _fields_ = [
        ("id", acrn_vdev_id),
        ("slot", c_u64),
        ("io_addr", c_u32 * ACRN_PCI_NUM_BARS),
        ("io_size", c_u32 * ACRN_PCI_NUM_BARS),
        ("args", c_u8 * 128),
    ]


class acrn_msi_entry(ctypes.Structure):
    _fields_ = [("msi_addr", c_u64), ("msi_data", c_u64)]


class acrn_acpi_generic_address(ctypes.Structure):
    _pack_ = 1
    _fields_ = [
        ("space_id", c_u8),
        ("bit_width", c_u8),
        ("bit_offset", c_u8),
        ("access_size", c_u8),
        ("address", c_u64),
    ]


class acrn_cstate_data(ctypes.Structure):
    _fields_ = [
        ("cx_reg", acrn_acpi_generic_address),
        ("type", c_u8),
        ("latency", c_u32),
        ("power", c_u64),
    ]


class acrn_pstate_data(ctypes.Structure):
    _fields_ = [
        (name, c_u64)
        for name in (
            "core_frequency", "power", "transition_latency", "bus_master_latency",
            "control", "status",
        )
    ]


class acrn_ioeventfd(ctypes.Structure):
    _fields_ = [
        ("fd", c_u32),
        ("flags", c_u32),
        ("addr", c_u64),
        ("len", c_u32),
        ("reserved", c_u32),
        ("data", c_u64),
    ]


class acrn_irqfd(ctypes.Structure):
    _fields_ = [("fd", c_s32), ("flags", c_u32), ("msi", acrn_msi_entry)]


# --- ioctl numbers ---------------------------------------------------------------------------
ACRN_IOCTL_CREATE_VM = IOWR(ACRN_IOCTL_TYPE, 0x10, acrn_vm_creation)
ACRN_IOCTL_DESTROY_VM = IO(ACRN_IOCTL_TYPE, 0x11)
ACRN_IOCTL_START_VM = IO(ACRN_IOCTL_TYPE, 0x12)
ACRN_IOCTL_PAUSE_VM = IO(ACRN_IOCTL_TYPE, 0x13)
ACRN_IOCTL_RESET_VM = IO(ACRN_IOCTL_TYPE, 0x15)
ACRN_IOCTL_SET_VCPU_REGS = IOW(ACRN_IOCTL_TYPE, 0x16, acrn_vcpu_regs)

ACRN_IOCTL_INJECT_MSI = IOW(ACRN_IOCTL_TYPE, 0x23, acrn_msi_entry)
ACRN_IOCTL_VM_INTR_MONITOR = IOW(ACRN_IOCTL_TYPE, 0x24, ctypes.c_ulong)
ACRN_IOCTL_SET_IRQLINE = IOW(ACRN_IOCTL_TYPE, 0x25, c_u64)

ACRN_IOCTL_NOTIFY_REQUEST_FINISH = IOW(ACRN_IOCTL_TYPE, 0x31, acrn_ioreq_notify)
ACRN_IOCTL_CREATE_IOREQ_CLIENT = IO(ACRN_IOCTL_TYPE, 0x32)
ACRN_IOCTL_ATTACH_IOREQ_CLIENT = IO(ACRN_IOCTL_TYPE, 0x33)
ACRN_IOCTL_DESTROY_IOREQ_CLIENT = IO(ACRN_IOCTL_TYPE, 0x34)
ACRN_IOCTL_CLEAR_VM_IOREQ = IO(ACRN_IOCTL_TYPE, 0x35)

ACRN_IOCTL_SET_MEMSEG = IOW(ACRN_IOCTL_TYPE, 0x41, acrn_vm_memmap)
ACRN_IOCTL_UNSET_MEMSEG = IOW(ACRN_IOCTL_TYPE, 0x42, acrn_vm_memmap)

ACRN_IOCTL_SET_PTDEV_INTR = IOW(ACRN_IOCTL_TYPE, 0x53, acrn_ptdev_irq)
ACRN_IOCTL_RESET_PTDEV_INTR = IOW(ACRN_IOCTL_TYPE, 0x54, acrn_ptdev_irq)
ACRN_IOCTL_ASSIGN_PCIDEV = IOW(ACRN_IOCTL_TYPE, 0x55, acrn_pcidev)
ACRN_IOCTL_DEASSIGN_PCIDEV = IOW(ACRN_IOCTL_TYPE, 0x56, acrn_pcidev)
ACRN_IOCTL_ASSIGN_MMIODEV = IOW(ACRN_IOCTL_TYPE, 0x57, acrn_mmiodev)
ACRN_IOCTL_DEASSIGN_MMIODEV = IOW(ACRN_IOCTL_TYPE, 0x58, acrn_mmiodev)
ACRN_IOCTL_CREATE_VDEV = IOW(ACRN_IOCTL_TYPE, 0x59, acrn_vdev)
ACRN_IOCTL_DESTROY_VDEV = IOW(ACRN_IOCTL_TYPE, 0x5A, acrn_vdev)

ACRN_IOCTL_PM_GET_CPU_STATE = IOWR(ACRN_IOCTL_TYPE, 0x60, c_u64)

ACRN_IOCTL_IOEVENTFD = IOW(ACRN_IOCTL_TYPE, 0x70, acrn_ioeventfd)
ACRN_IOCTL_IRQFD = IOW(ACRN_IOCTL_TYPE, 0x71, acrn_irqfd)

#: every ioctl of the header, by name (error messages, the emulated HSM's dispatch).
IOCTL_NAMES: dict[int, str] = {
    value: name
    for name, value in dict(globals()).items()
    if name.startswith("ACRN_IOCTL_") and name != "ACRN_IOCTL_TYPE"
}


def ioctl_name(request: int) -> str:
    return IOCTL_NAMES.get(request, f"ioctl {request:#x}")


# --- beyond the uapi header (not checked by the probe: the header does not define them) ---
#: ``ACRN_IOREQ_TYPE_WP`` of the hypervisor's ``include/public/acrn_common.h``: a write
#: to a guest page whose EPT rights are R-X arrives with this type and the MMIO request
#: layout (``ept_violation_vmexit_handler``); the HSM hands it to the default client.
ACRN_IOREQ_TYPE_WP = 3
#: ``ACRN_INVALID_VMID`` of the HSM's ``acrn_drv.h``: the vmid of an HSM file with no VM.
ACRN_INVALID_VMID = 0xFFFF
#: ``ACRN_MEM_MAPPING_MAX`` of ``acrn_drv.h``: RAM memory segments one VM can hold.
ACRN_MEM_MAPPING_MAX = 256
#: ``ACRN_MEM_REGION_ADD`` / ``ACRN_MEM_REGION_DEL`` of ``acrn_drv.h`` (hypervisor MR_ADD/MR_DEL).
ACRN_MEM_REGION_ADD = 0
ACRN_MEM_REGION_DEL = 2
#: PCI configuration mechanism #1 ports the HSM combines into PCICFG requests.
PCI_CONFIG_ADDRESS_PORT = 0xCF8
PCI_CONFIG_DATA_PORT = 0xCFC
PCI_CONFIG_ENABLE = 0x8000_0000
#: ``MSI_ADDR_BASE`` of the hypervisor: an MSI address's bits 31:20 must be 0xFEE.
MSI_ADDR_BASE = 0xFEE
