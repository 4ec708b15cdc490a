"""The Xen device-model ABI as ctypes: structures, ioctl numbers and constants.

Sources, for x86-64:

* Linux uapi ``<xen/privcmd.h>`` and ``<xen/evtchn.h>``: the two device
  nodes a user-space device model talks to (``/dev/xen/privcmd``,
  ``/dev/xen/evtchn``);
* Xen's public ``hvm/dm_op.h`` (device-model operations), ``hvm/ioreq.h``
  (the shared ioreq page), ``hvm/hvm_op.h`` (memory types), ``memory.h``
  (resource mapping, maximum gpfn), ``domctl.h`` (pause, iomem permission,
  memory mapping) and ``xen.h`` (hypercall numbers, reserved domain ids).

ioctl numbers are *computed* from their definitions (``_IOC`` from
:mod:`gvt_core.hostabi.ioctl`, with the ctypes structure sizes), so a wrong
structure size shows up as a wrong ioctl number; ``tests/test_abi.py``
compiles a probe with gcc against the installed headers and checks every
size, offset, ioctl number and constant here. Only what the backend uses is defined.
"""

from __future__ import annotations

import ctypes

from gvt_core.hostabi.ioctl import IOC, IOC_NONE

c_u8, c_u16, c_u32, c_u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

# --- xen.h ----------------------------------------------------------------------------------
domid_t = c_u16
#: ``xen_pfn_t`` and ``xen_ulong_t`` are ``unsigned long`` on x86-64.
xen_pfn_t = ctypes.c_ulong
evtchn_port_t = c_u32
ioservid_t = c_u16

DOMID_FIRST_RESERVED = 0x7FF0
DOMID_SELF = 0x7FF0
DOMID_INVALID = 0x7FF4

#: ``__HYPERVISOR_*`` in C (the leading underscores would be mangled in a Python class).
HYPERVISOR_memory_op = 12
HYPERVISOR_domctl = 36
HYPERVISOR_dm_op = 41

# --- sched.h: shutdown reasons ---------------------------------------------------------------
SHUTDOWN_poweroff = 0
SHUTDOWN_reboot = 1
SHUTDOWN_suspend = 2
SHUTDOWN_crash = 3
SHUTDOWN_watchdog = 4
SHUTDOWN_soft_reset = 5
SHUTDOWN_MAX = 5

# --- privcmd.h -----------------------------------------------------------------------------------


class privcmd_hypercall(ctypes.Structure):
    _fields_ = [("op", c_u64), ("arg", c_u64 * 5)]


class privcmd_mmapbatch_v2(ctypes.Structure):
    _fields_ = [
        ("num", ctypes.c_uint),
        ("dom", domid_t),
        ("addr", c_u64),
        ("arr", ctypes.c_void_p),  # const xen_pfn_t *
        ("err", ctypes.c_void_p),  # int *
    ]


class privcmd_dm_op_buf(ctypes.Structure):
    _fields_ = [("uptr", ctypes.c_void_p), ("size", ctypes.c_size_t)]


class privcmd_dm_op(ctypes.Structure):
    _fields_ = [
        ("dom", domid_t),
        ("num", c_u16),
        ("ubufs", ctypes.c_void_p),  # const struct privcmd_dm_op_buf *
    ]


class privcmd_mmap_resource(ctypes.Structure):
    _fields_ = [
        ("dom", domid_t),
        ("type", c_u32),
        ("id", c_u32),
        ("idx", c_u32),
        ("num", c_u64),
        ("addr", c_u64),
    ]


PRIVCMD_MMAPBATCH_MFN_ERROR = 0xF000_0000
PRIVCMD_MMAPBATCH_PAGED_ERROR = 0x8000_0000

IOCTL_PRIVCMD_HYPERCALL = IOC(IOC_NONE, "P", 0, ctypes.sizeof(privcmd_hypercall))
IOCTL_PRIVCMD_MMAPBATCH_V2 = IOC(IOC_NONE, "P", 4, ctypes.sizeof(privcmd_mmapbatch_v2))
IOCTL_PRIVCMD_DM_OP = IOC(IOC_NONE, "P", 5, ctypes.sizeof(privcmd_dm_op))
IOCTL_PRIVCMD_RESTRICT = IOC(IOC_NONE, "P", 6, ctypes.sizeof(domid_t))
IOCTL_PRIVCMD_MMAP_RESOURCE = IOC(IOC_NONE, "P", 7, ctypes.sizeof(privcmd_mmap_resource))

# --- evtchn.h (Linux uapi) ---------------------------------------------------------------------


class ioctl_evtchn_bind_interdomain(ctypes.Structure):
    _fields_ = [("remote_domain", ctypes.c_uint), ("remote_port", ctypes.c_uint)]


class ioctl_evtchn_unbind(ctypes.Structure):
    _fields_ = [("port", ctypes.c_uint)]


class ioctl_evtchn_notify(ctypes.Structure):
    _fields_ = [("port", ctypes.c_uint)]


class ioctl_evtchn_restrict_domid(ctypes.Structure):
    _fields_ = [("domid", domid_t)]


IOCTL_EVTCHN_BIND_INTERDOMAIN = IOC(
    IOC_NONE, "E", 1, ctypes.sizeof(ioctl_evtchn_bind_interdomain)
)
IOCTL_EVTCHN_UNBIND = IOC(IOC_NONE, "E", 3, ctypes.sizeof(ioctl_evtchn_unbind))
IOCTL_EVTCHN_NOTIFY = IOC(IOC_NONE, "E", 4, ctypes.sizeof(ioctl_evtchn_notify))
IOCTL_EVTCHN_RESET = IOC(IOC_NONE, "E", 5, 0)
IOCTL_EVTCHN_RESTRICT_DOMID = IOC(
    IOC_NONE, "E", 6, ctypes.sizeof(ioctl_evtchn_restrict_domid)
)
#: bytes of one pending-port record read from (and written back to) the device.
EVTCHN_PORT_BYTES = ctypes.sizeof(evtchn_port_t)

# --- memory.h ---------------------------------------------------------------------------------------
XENMEM_maximum_gpfn = 14
XENMEM_acquire_resource = 28
XENMEM_resource_ioreq_server = 0
XENMEM_resource_ioreq_server_frame_bufioreq = 0


def XENMEM_resource_ioreq_server_frame_ioreq(n: int) -> int:
    return 1 + n


# --- hvm/hvm_op.h -------------------------------------------------------------------------------------
HVMMEM_ram_rw = 0
HVMMEM_ram_ro = 1
HVMMEM_mmio_dm = 2
HVMMEM_unused = 3
HVMMEM_ioreq_server = 4

HVM_IOREQSRV_BUFIOREQ_OFF = 0
HVM_IOREQSRV_BUFIOREQ_LEGACY = 1
HVM_IOREQSRV_BUFIOREQ_ATOMIC = 2

# --- hvm/ioreq.h ------------------------------------------------------------------------------------------
IOREQ_READ = 1
IOREQ_WRITE = 0

STATE_IOREQ_NONE = 0
STATE_IOREQ_READY = 1
STATE_IOREQ_INPROCESS = 2
STATE_IORESP_READY = 3

IOREQ_TYPE_PIO = 0
IOREQ_TYPE_COPY = 1
IOREQ_TYPE_PCI_CONFIG = 2
IOREQ_TYPE_TIMEOFFSET = 7
IOREQ_TYPE_INVALIDATE = 8


class ioreq(ctypes.Structure):
    _fields_ = [
        ("addr", c_u64),
        ("data", c_u64),
        ("count", c_u32),
        ("size", c_u32),
        ("vp_eport", c_u32),
        ("_pad0", c_u16),
        ("state", c_u8, 4),
        ("data_is_ptr", c_u8, 1),
        ("dir", c_u8, 1),
        ("df", c_u8, 1),
        ("_pad1", c_u8, 1),
        ("type", c_u8),
    ]


IOREQ_SIZE = ctypes.sizeof(ioreq)
#: the byte holding state (bits 3:0), data_is_ptr (4), dir (5) and df (6).
IOREQ_FLAGS_BYTE = ioreq._pad0.offset + ctypes.sizeof(c_u16)
IOREQ_STATE_MASK = 0x0F
IOREQ_DATA_IS_PTR_BIT = 1 << 4
IOREQ_DIR_BIT = 1 << 5
IOREQ_DF_BIT = 1 << 6
IOREQ_TYPE_BYTE = ioreq.type.offset
#: slots of ``shared_iopage.vcpu_ioreq[]`` in one page: the vCPU limit of a server.
IOREQS_PER_PAGE = PAGE_SIZE // IOREQ_SIZE

# --- hvm/dm_op.h ------------------------------------------------------------------------------------------
XEN_DMOP_create_ioreq_server = 1
XEN_DMOP_get_ioreq_server_info = 2
XEN_DMOP_map_io_range_to_ioreq_server = 3
XEN_DMOP_unmap_io_range_from_ioreq_server = 4
XEN_DMOP_set_ioreq_server_state = 5
XEN_DMOP_destroy_ioreq_server = 6
XEN_DMOP_track_dirty_vram = 7
XEN_DMOP_set_pci_intx_level = 8
XEN_DMOP_set_isa_irq_level = 9
XEN_DMOP_set_pci_link_route = 10
XEN_DMOP_modified_memory = 11
XEN_DMOP_set_mem_type = 12
XEN_DMOP_inject_event = 13
XEN_DMOP_inject_msi = 14
XEN_DMOP_map_mem_type_to_ioreq_server = 15
XEN_DMOP_remote_shutdown = 16
XEN_DMOP_relocate_memory = 17
XEN_DMOP_pin_memory_cacheattr = 18
XEN_DMOP_set_irq_level = 19
XEN_DMOP_nr_vcpus = 20

DMOP_NAMES: dict[int, str] = {
    value: name for name, value in list(globals().items())
    if name.startswith("XEN_DMOP_") and isinstance(value, int)
}

XEN_DMOP_no_gfns = 1 << 0
XEN_DMOP_IO_RANGE_PORT = 0
XEN_DMOP_IO_RANGE_MEMORY = 1
XEN_DMOP_IO_RANGE_PCI = 2
XEN_DMOP_IOREQ_MEM_ACCESS_READ = 1 << 0
XEN_DMOP_IOREQ_MEM_ACCESS_WRITE = 1 << 1


def XEN_DMOP_PCI_SBDF(s: int, b: int, d: int, f: int) -> int:
    return ((s & 0xFFFF) << 16) | ((b & 0xFF) << 8) | ((d & 0x1F) << 3) | (f & 0x07)


class xen_dm_op_create_ioreq_server(ctypes.Structure):
    _fields_ = [("handle_bufioreq", c_u8), ("pad", c_u8 * 3), ("id", ioservid_t)]


class xen_dm_op_get_ioreq_server_info(ctypes.Structure):
    _fields_ = [
        ("id", ioservid_t),
        ("flags", c_u16),
        ("bufioreq_port", evtchn_port_t),
        ("ioreq_gfn", c_u64),
        ("bufioreq_gfn", c_u64),
    ]


class xen_dm_op_ioreq_server_range(ctypes.Structure):
    _fields_ = [
        ("id", ioservid_t),
        ("pad", c_u16),
        ("type", c_u32),
        ("start", c_u64),
        ("end", c_u64),
    ]


class xen_dm_op_set_ioreq_server_state(ctypes.Structure):
    _fields_ = [("id", ioservid_t), ("enabled", c_u8), ("pad", c_u8)]


class xen_dm_op_destroy_ioreq_server(ctypes.Structure):
    _fields_ = [("id", ioservid_t), ("pad", c_u16)]


class xen_dm_op_set_mem_type(ctypes.Structure):
    _fields_ = [("nr", c_u32), ("mem_type", c_u16), ("pad", c_u16), ("first_pfn", c_u64)]


class xen_dm_op_inject_msi(ctypes.Structure):
    _fields_ = [("data", c_u32), ("pad", c_u32), ("addr", c_u64)]


class xen_dm_op_map_mem_type_to_ioreq_server(ctypes.Structure):
    _fields_ = [("id", ioservid_t), ("type", c_u16), ("flags", c_u32), ("opaque", c_u64)]


class xen_dm_op_remote_shutdown(ctypes.Structure):
    _fields_ = [("reason", c_u32)]


class xen_dm_op_nr_vcpus(ctypes.Structure):
    _fields_ = [("vcpus", c_u32)]


class xen_dm_op_u(ctypes.Union):
    """The members of ``xen_dm_op.u`` this backend uses; ``_size`` gives the union
    the size of its largest C member (24 bytes)."""

    _fields_ = [
        ("create_ioreq_server", xen_dm_op_create_ioreq_server),
        ("get_ioreq_server_info", xen_dm_op_get_ioreq_server_info),
        ("map_io_range_to_ioreq_server", xen_dm_op_ioreq_server_range),
        ("unmap_io_range_from_ioreq_server", xen_dm_op_ioreq_server_range),
        ("set_ioreq_server_state", xen_dm_op_set_ioreq_server_state),
        ("destroy_ioreq_server", xen_dm_op_destroy_ioreq_server),
        ("set_mem_type", xen_dm_op_set_mem_type),
        ("inject_msi", xen_dm_op_inject_msi),
        ("map_mem_type_to_ioreq_server", xen_dm_op_map_mem_type_to_ioreq_server),
        ("remote_shutdown", xen_dm_op_remote_shutdown),
        ("nr_vcpus", xen_dm_op_nr_vcpus),
        ("_size", c_u64 * 3),
    ]


class xen_dm_op(ctypes.Structure):
    _fields_ = [("op", c_u32), ("pad", c_u32), ("u", xen_dm_op_u)]


#: bytes of ``xen_dm_op`` before the union: what Xen reads first to learn the op.
XEN_DM_OP_HEADER = xen_dm_op.u.offset

# --- domctl.h ------------------------------------------------------------------------------------------------
#: domctl is not a stable interface: Xen refuses (EACCES) any other version.
#: This is Xen 4.17's; the probe checks it against the installed header.
XEN_DOMCTL_INTERFACE_VERSION = 0x15
XEN_DOMCTL_pausedomain = 3
XEN_DOMCTL_unpausedomain = 4
XEN_DOMCTL_iomem_permission = 20
XEN_DOMCTL_memory_mapping = 39
DPCI_ADD_MAPPING = 1
DPCI_REMOVE_MAPPING = 0


class xen_domctl_iomem_permission(ctypes.Structure):
    _fields_ = [("first_mfn", c_u64), ("nr_mfns", c_u64), ("allow_access", c_u8)]


class xen_domctl_memory_mapping(ctypes.Structure):
    _fields_ = [
        ("first_gfn", c_u64),
        ("first_mfn", c_u64),
        ("nr_mfns", c_u64),
        ("add_mapping", c_u32),
        ("padding", c_u32),
    ]


class xen_domctl_u(ctypes.Union):
    _fields_ = [
        ("iomem_permission", xen_domctl_iomem_permission),
        ("memory_mapping", xen_domctl_memory_mapping),
        ("pad", c_u8 * 128),
    ]


class xen_domctl(ctypes.Structure):
    _fields_ = [
        ("cmd", c_u32),
        ("interface_version", c_u32),
        ("domain", domid_t),
        ("_pad", c_u16 * 3),
        ("u", xen_domctl_u),
    ]
