"""Byte layouts the emulated kernel and hypervisor decode, written independently of
:mod:`gvt_xengt.abi`.

The backend builds its arguments with the ctypes structures of ``abi``; the
emulated Xen reads the same bytes with these ``struct`` formats, taken
from the C headers separately. A layout mistake on either side therefore
shows up as a refused or misread call instead of two wrongs agreeing, and
the ABI probe checks both against the headers.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any

import attrs


@attrs.frozen
class Layout:
    """One C structure: its name and ``(field, struct code)`` pairs in order.

    A field named ``""`` is padding; a code with a count (``"5Q"``) is an
    array and decodes to a tuple.
    """

    cname: str
    fields: tuple[tuple[str, str], ...]
    struct: struct.Struct = attrs.field(init=False)
    record: type = attrs.field(init=False)
    offsets: dict[str, int] = attrs.field(init=False)
    #: per named field: its array length, 0 for a scalar.
    arrays: tuple[int, ...] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        fmt = "<" + "".join(code for _, code in self.fields)
        object.__setattr__(self, "struct", struct.Struct(fmt))
        # C names like ``_pad0`` become ``pad0``: a namedtuple field cannot start with "_"
        names = [name.lstrip("_") for name, _ in self.fields if name]
        object.__setattr__(self, "record", namedtuple(self.cname, names))
        offsets, pos = {}, 0
        for name, code in self.fields:
            if name:
                offsets[name] = pos
            pos += struct.calcsize("<" + code)
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "arrays", tuple(
            int(code[:-1]) if code[:-1].isdigit() and code[-1] not in "sx" else 0
            for name, code in self.fields if name
        ))

    @property
    def size(self) -> int:
        return self.struct.size

    def unpack(self, data: bytes | memoryview, offset: int = 0) -> Any:
        flat = list(self.struct.unpack_from(data, offset))
        out = []
        for n in self.arrays:
            if n:
                out.append(tuple(flat[:n]))
                del flat[:n]
            else:
                out.append(flat.pop(0))
        return self.record(*out)

    def pack(self, *values: Any) -> bytes:
        flat: list[Any] = []
        for n, value in zip(self.arrays, values, strict=True):
            if n:
                flat.extend(value)
            else:
                flat.append(value)
        return self.struct.pack(*flat)


def _L(cname: str, *fields: tuple[str, str]) -> Layout:
    return Layout(cname, tuple(fields))


# --- Linux uapi: privcmd.h -------------------------------------------------------------------
PRIVCMD_HYPERCALL = _L("privcmd_hypercall", ("op", "Q"), ("arg", "5Q"))
PRIVCMD_MMAPBATCH_V2 = _L(
    "privcmd_mmapbatch_v2", ("num", "I"), ("dom", "H"), ("", "2x"), ("addr", "Q"),
    ("arr", "Q"), ("err", "Q"),
)
PRIVCMD_DM_OP_BUF = _L("privcmd_dm_op_buf", ("uptr", "Q"), ("size", "Q"))
PRIVCMD_DM_OP = _L("privcmd_dm_op", ("dom", "H"), ("num", "H"), ("", "4x"), ("ubufs", "Q"))
PRIVCMD_MMAP_RESOURCE = _L(
    "privcmd_mmap_resource", ("dom", "H"), ("", "2x"), ("type", "I"), ("id", "I"), ("idx", "I"),
    ("num", "Q"), ("addr", "Q"),
)
DOMID = _L("domid_t", ("domid", "H"))
XEN_PFN = _L("xen_pfn_t", ("pfn", "Q"))

# --- Linux uapi: evtchn.h --------------------------------------------------------------------------
EVTCHN_BIND_INTERDOMAIN = _L(
    "ioctl_evtchn_bind_interdomain", ("remote_domain", "I"), ("remote_port", "I")
)
EVTCHN_UNBIND = _L("ioctl_evtchn_unbind", ("port", "I"))
EVTCHN_NOTIFY = _L("ioctl_evtchn_notify", ("port", "I"))
EVTCHN_RESTRICT_DOMID = _L("ioctl_evtchn_restrict_domid", ("domid", "H"))
EVTCHN_PORT = _L("evtchn_port_t", ("port", "I"))

# --- Xen public: hvm/dm_op.h ------------------------------------------------------------------------
DM_OP_BUF = _L("xen_dm_op_buf", ("h", "Q"), ("size", "Q"))
DM_OP_HEADER = _L("xen_dm_op", ("op", "I"), ("pad", "I"))
DM_OP_CREATE_IOREQ_SERVER = _L(
    "xen_dm_op_create_ioreq_server", ("handle_bufioreq", "B"), ("pad", "3s"), ("id", "H")
)
DM_OP_GET_IOREQ_SERVER_INFO = _L(
    "xen_dm_op_get_ioreq_server_info", ("id", "H"), ("flags", "H"), ("bufioreq_port", "I"),
    ("ioreq_gfn", "Q"), ("bufioreq_gfn", "Q"),
)
DM_OP_IOREQ_SERVER_RANGE = _L(
    "xen_dm_op_ioreq_server_range", ("id", "H"), ("pad", "H"), ("type", "I"), ("start", "Q"),
    ("end", "Q"),
)
DM_OP_SET_IOREQ_SERVER_STATE = _L(
    "xen_dm_op_set_ioreq_server_state", ("id", "H"), ("enabled", "B"), ("pad", "B")
)
DM_OP_DESTROY_IOREQ_SERVER = _L("xen_dm_op_destroy_ioreq_server", ("id", "H"), ("pad", "H"))
DM_OP_TRACK_DIRTY_VRAM = _L(
    "xen_dm_op_track_dirty_vram", ("nr", "I"), ("pad", "I"), ("first_pfn", "Q")
)
DM_OP_SET_PCI_INTX_LEVEL = _L(
    "xen_dm_op_set_pci_intx_level", ("domain", "H"), ("bus", "B"), ("device", "B"),
    ("intx", "B"), ("level", "B"),
)
DM_OP_SET_ISA_IRQ_LEVEL = _L("xen_dm_op_set_isa_irq_level", ("isa_irq", "B"), ("level", "B"))
DM_OP_SET_PCI_LINK_ROUTE = _L("xen_dm_op_set_pci_link_route", ("link", "B"), ("isa_irq", "B"))
DM_OP_MODIFIED_MEMORY = _L("xen_dm_op_modified_memory", ("nr_extents", "I"), ("opaque", "I"))
DM_OP_SET_MEM_TYPE = _L(
    "xen_dm_op_set_mem_type", ("nr", "I"), ("mem_type", "H"), ("pad", "H"), ("first_pfn", "Q")
)
DM_OP_INJECT_EVENT = _L(
    "xen_dm_op_inject_event", ("vcpuid", "I"), ("vector", "B"), ("type", "B"),
    ("insn_len", "B"), ("pad0", "B"), ("error_code", "I"), ("pad1", "I"), ("cr2", "Q"),
)
DM_OP_INJECT_MSI = _L("xen_dm_op_inject_msi", ("data", "I"), ("pad", "I"), ("addr", "Q"))
DM_OP_MAP_MEM_TYPE_TO_IOREQ_SERVER = _L(
    "xen_dm_op_map_mem_type_to_ioreq_server", ("id", "H"), ("type", "H"), ("flags", "I"),
    ("opaque", "Q"),
)
DM_OP_REMOTE_SHUTDOWN = _L("xen_dm_op_remote_shutdown", ("reason", "I"))
DM_OP_RELOCATE_MEMORY = _L(
    "xen_dm_op_relocate_memory", ("size", "I"), ("pad", "I"), ("src_gfn", "Q"), ("dst_gfn", "Q")
)
DM_OP_PIN_MEMORY_CACHEATTR = _L(
    "xen_dm_op_pin_memory_cacheattr", ("start", "Q"), ("end", "Q"), ("type", "I"), ("pad", "I")
)
DM_OP_SET_IRQ_LEVEL = _L("xen_dm_op_set_irq_level", ("irq", "I"), ("level", "B"), ("pad", "3s"))
DM_OP_NR_VCPUS = _L("xen_dm_op_nr_vcpus", ("vcpus", "I"))

# --- Xen public: hvm/ioreq.h ---------------------------------------------------------------------------
#: ``flags`` is the byte holding state:4, data_is_ptr:1, dir:1, df:1.
IOREQ = _L(
    "ioreq", ("addr", "Q"), ("data", "Q"), ("count", "I"), ("size", "I"), ("vp_eport", "I"),
    ("_pad0", "H"), ("flags", "B"), ("type", "B"),
)

# --- Xen public: domctl.h ------------------------------------------------------------------------------
DOMCTL_HEADER = _L(
    "xen_domctl", ("cmd", "I"), ("interface_version", "I"), ("domain", "H"), ("_pad", "3H")
)
DOMCTL_SIZE = 144
DOMCTL_IOMEM_PERMISSION = _L(
    "xen_domctl_iomem_permission", ("first_mfn", "Q"), ("nr_mfns", "Q"), ("allow_access", "B"),
    ("", "7x"),
)
DOMCTL_MEMORY_MAPPING = _L(
    "xen_domctl_memory_mapping", ("first_gfn", "Q"), ("first_mfn", "Q"), ("nr_mfns", "Q"),
    ("add_mapping", "I"), ("padding", "I"),
)

#: every layout, by C name, for the ABI probe.
ALL: tuple[Layout, ...] = tuple(
    v for v in list(globals().values()) if isinstance(v, Layout)
)
