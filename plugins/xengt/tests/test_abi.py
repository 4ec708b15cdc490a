"""The Xen ABI against the C headers: every size, offset, ioctl number and constant.

A probe is compiled with gcc against Linux's ``<xen/privcmd.h>`` and
``<xen/evtchn.h>`` and Xen's public ``hvm/dm_op.h``, ``hvm/ioreq.h``,
``hvm/hvm_op.h``, ``memory.h``, ``domctl.h`` and ``sched.h`` (Debian's
libxen-dev) and prints what C sees. Both the backend's ctypes structures
(:mod:`gvt_xengt.abi`) and the emulated Xen's independent ``struct``
layouts (:mod:`gvt_xengt.emulated.layouts`) must match it. Skipped, saying
what to install, where gcc or a header is missing.

Linux's ``privcmd.h`` includes ``<xen/interface/xen.h>``, the kernel's
copy of Xen's ``xen.h``; the probe points that name at the installed
``<xen/xen.h>``.
"""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import pytest

from gvt_core.hostabi import ioctl
from gvt_core.testing.abi_probe import run_c_probe
from gvt_xengt import abi
from gvt_xengt.emulated import layouts as L
from gvt_xengt.emulated.layouts import Layout

INCLUDE = Path("/usr/include")
HEADERS = {
    "xen/privcmd.h": "linux-libc-dev (Linux uapi)",
    "xen/evtchn.h": "linux-libc-dev (Linux uapi)",
    "xen/xen.h": "libxen-dev (apt-get install libxen-dev)",
    "xen/hvm/dm_op.h": "libxen-dev (apt-get install libxen-dev)",
    "xen/hvm/ioreq.h": "libxen-dev (apt-get install libxen-dev)",
    "xen/hvm/hvm_op.h": "libxen-dev (apt-get install libxen-dev)",
    "xen/memory.h": "libxen-dev (apt-get install libxen-dev)",
    "xen/domctl.h": "libxen-dev (apt-get install libxen-dev)",
    "xen/sched.h": "libxen-dev (apt-get install libxen-dev)",
}

#: ctypes structures of abi, by C struct name (every named field is checked).
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "privcmd_hypercall": abi.privcmd_hypercall,
    "privcmd_mmapbatch_v2": abi.privcmd_mmapbatch_v2,
    "privcmd_dm_op_buf": abi.privcmd_dm_op_buf,
    "privcmd_dm_op": abi.privcmd_dm_op,
    "privcmd_mmap_resource": abi.privcmd_mmap_resource,
    "ioctl_evtchn_bind_interdomain": abi.ioctl_evtchn_bind_interdomain,
    "ioctl_evtchn_unbind": abi.ioctl_evtchn_unbind,
    "ioctl_evtchn_notify": abi.ioctl_evtchn_notify,
    "ioctl_evtchn_restrict_domid": abi.ioctl_evtchn_restrict_domid,
    "ioreq": abi.ioreq,
    "xen_dm_op_create_ioreq_server": abi.xen_dm_op_create_ioreq_server,
    "xen_dm_op_get_ioreq_server_info": abi.xen_dm_op_get_ioreq_server_info,
    "xen_dm_op_ioreq_server_range": abi.xen_dm_op_ioreq_server_range,
    "xen_dm_op_set_ioreq_server_state": abi.xen_dm_op_set_ioreq_server_state,
    "xen_dm_op_destroy_ioreq_server": abi.xen_dm_op_destroy_ioreq_server,
    "xen_dm_op_set_mem_type": abi.xen_dm_op_set_mem_type,
    "xen_dm_op_inject_msi": abi.xen_dm_op_inject_msi,
    "xen_dm_op_map_mem_type_to_ioreq_server": abi.xen_dm_op_map_mem_type_to_ioreq_server,
    "xen_dm_op_remote_shutdown": abi.xen_dm_op_remote_shutdown,
    "xen_dm_op_nr_vcpus": abi.xen_dm_op_nr_vcpus,
    "xen_dm_op": abi.xen_dm_op,
    "xen_domctl_iomem_permission": abi.xen_domctl_iomem_permission,
    "xen_domctl_memory_mapping": abi.xen_domctl_memory_mapping,
    "xen_domctl": abi.xen_domctl,
}
#: ioreq's bit fields: C cannot take their offset, the probe sets each and prints the byte.
BITFIELDS = {"state": 4, "data_is_ptr": 1, "dir": 1, "df": 1}
#: scalar typedefs (no struct keyword).
TYPEDEFS = {"domid_t": abi.domid_t, "xen_pfn_t": abi.xen_pfn_t, "evtchn_port_t": abi.evtchn_port_t,
            "ioservid_t": abi.ioservid_t}

IOCTLS = [
    "IOCTL_PRIVCMD_HYPERCALL", "IOCTL_PRIVCMD_MMAPBATCH_V2", "IOCTL_PRIVCMD_DM_OP",
    "IOCTL_PRIVCMD_RESTRICT", "IOCTL_PRIVCMD_MMAP_RESOURCE", "IOCTL_EVTCHN_BIND_INTERDOMAIN",
    "IOCTL_EVTCHN_UNBIND", "IOCTL_EVTCHN_NOTIFY", "IOCTL_EVTCHN_RESET",
    "IOCTL_EVTCHN_RESTRICT_DOMID",
]

#: abi constant -> the C expression it stands for.
CONSTANTS: dict[str, str] = {
    name: name for name in (
        "DOMID_FIRST_RESERVED", "DOMID_SELF", "DOMID_INVALID",
        "SHUTDOWN_poweroff", "SHUTDOWN_reboot", "SHUTDOWN_suspend", "SHUTDOWN_crash",
        "SHUTDOWN_watchdog", "SHUTDOWN_soft_reset", "SHUTDOWN_MAX",
        "PRIVCMD_MMAPBATCH_MFN_ERROR", "PRIVCMD_MMAPBATCH_PAGED_ERROR",
        "XENMEM_maximum_gpfn", "XENMEM_acquire_resource", "XENMEM_resource_ioreq_server",
        "XENMEM_resource_ioreq_server_frame_bufioreq",
        "HVMMEM_ram_rw", "HVMMEM_ram_ro", "HVMMEM_mmio_dm", "HVMMEM_unused",
        "HVMMEM_ioreq_server", "HVM_IOREQSRV_BUFIOREQ_OFF", "HVM_IOREQSRV_BUFIOREQ_LEGACY",
        "HVM_IOREQSRV_BUFIOREQ_ATOMIC", "IOREQ_READ", "IOREQ_WRITE", "STATE_IOREQ_NONE",
        "STATE_IOREQ_READY", "STATE_IOREQ_INPROCESS", "STATE_IORESP_READY", "IOREQ_TYPE_PIO",
        "IOREQ_TYPE_COPY", "IOREQ_TYPE_PCI_CONFIG", "IOREQ_TYPE_TIMEOFFSET",
        "IOREQ_TYPE_INVALIDATE", "XEN_DMOP_no_gfns", "XEN_DMOP_IO_RANGE_PORT",
        "XEN_DMOP_IO_RANGE_MEMORY", "XEN_DMOP_IO_RANGE_PCI", "XEN_DMOP_IOREQ_MEM_ACCESS_READ",
        "XEN_DMOP_IOREQ_MEM_ACCESS_WRITE", "XEN_DOMCTL_INTERFACE_VERSION",
        "XEN_DOMCTL_pausedomain", "XEN_DOMCTL_unpausedomain", "XEN_DOMCTL_iomem_permission",
        "XEN_DOMCTL_memory_mapping", "DPCI_ADD_MAPPING", "DPCI_REMOVE_MAPPING",
    )
} | {name: name for name in abi.DMOP_NAMES.values()} | {
    "HYPERVISOR_memory_op": "__HYPERVISOR_memory_op",
    "HYPERVISOR_domctl": "__HYPERVISOR_domctl",
    "HYPERVISOR_dm_op": "__HYPERVISOR_dm_op",
}
#: computed values: Python expression -> C expression.
COMPUTED = {
    "abi.XEN_DMOP_PCI_SBDF(0, 0, 2, 0)": "XEN_DMOP_PCI_SBDF(0, 0, 2, 0)",
    "abi.XEN_DMOP_PCI_SBDF(0x1234, 0xAB, 0x1F, 7)": "XEN_DMOP_PCI_SBDF(0x1234, 0xAB, 0x1F, 7)",
    "abi.XENMEM_resource_ioreq_server_frame_ioreq(0)": "XENMEM_resource_ioreq_server_frame_ioreq(0)",
    "abi.XENMEM_resource_ioreq_server_frame_ioreq(5)": "XENMEM_resource_ioreq_server_frame_ioreq(5)",
    "abi.XEN_DM_OP_HEADER": "offsetof(struct xen_dm_op, u)",
    "abi.IOREQ_SIZE": "sizeof(struct ioreq)",
    "abi.IOREQ_TYPE_BYTE": "offsetof(struct ioreq, type)",
}

#: emulator layouts that describe only the head of a C structure (size not compared).
HEAD_ONLY = {"xen_dm_op", "xen_domctl"}
#: emulator fields that are not C members (the byte holding ioreq's bit fields).
SYNTHETIC = {("ioreq", "flags")}


def _ctype(cname: str) -> str:
    return cname if cname in TYPEDEFS else f"struct {cname}"


def _fields(struct: type[ctypes.Structure]) -> list[str]:
    return [f[0] for f in struct._fields_ if len(f) == 2 and not f[0].startswith("_size")]


def _probe_source() -> str:
    lines = [
        "#include <stdio.h>", "#include <stddef.h>", "#include <stdint.h>", "#include <string.h>",
        "#include <sys/ioctl.h>", "#define __XEN_TOOLS__ 1", "#include <xen/xen.h>",
        "#include <xen/privcmd.h>", "#include <xen/evtchn.h>", "#include <xen/hvm/dm_op.h>",
        "#include <xen/hvm/ioreq.h>", "#include <xen/hvm/hvm_op.h>", "#include <xen/memory.h>",
        "#include <xen/domctl.h>", "#include <xen/sched.h>",
        "int main(void) {",
    ]
    out = lines.append
    for cname, struct in STRUCTS.items():
        out(f'printf("sizeof {cname} %zu\\n", sizeof(struct {cname}));')
        for f in _fields(struct):
            out(f'printf("offsetof {cname}.{f} %zu\\n", offsetof(struct {cname}, {f}));')
    for cname in TYPEDEFS:
        out(f'printf("sizeof {cname} %zu\\n", sizeof({cname}));')
    for i, (field, width) in enumerate(BITFIELDS.items()):
        out(f"{{ struct ioreq r{i}; memset(&r{i}, 0, sizeof r{i}); r{i}.{field} = {(1 << width) - 1};")
        out(f'printf("bits ioreq.{field} %u\\n", ((unsigned char *)&r{i})[{abi.IOREQ_FLAGS_BYTE}]); }}')
    for layout in L.ALL:
        ctype = _ctype(layout.cname)
        if layout.cname not in HEAD_ONLY:
            out(f'printf("layout-size {layout.cname} %zu\\n", sizeof({ctype}));')
        if layout.cname in TYPEDEFS:
            continue
        for field, _ in layout.fields:
            if field and (layout.cname, field) not in SYNTHETIC:
                out(f'printf("layout-offset {layout.cname}.{field} %zu\\n", '
                    f"offsetof({ctype}, {field}));")
    out('printf("layout-size xen_domctl %zu\\n", sizeof(struct xen_domctl));')
    out('printf("layout-head xen_domctl %zu\\n", offsetof(struct xen_domctl, u));')
    out('printf("layout-head xen_dm_op %zu\\n", offsetof(struct xen_dm_op, u));')
    for name in IOCTLS:
        out(f'printf("value {name} %llu\\n", (unsigned long long)({name}));')
    for name, cexpr in CONSTANTS.items():
        out(f'printf("value {name} %llu\\n", (unsigned long long)({cexpr}));')
    for i, cexpr in enumerate(COMPUTED.values()):
        out(f'printf("computed {i} %llu\\n", (unsigned long long)({cexpr}));')
    lines += ["return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def c_says(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the ABI probe cannot be compiled")
    for header, package in HEADERS.items():
        if not (INCLUDE / header).exists():
            pytest.skip(f"<{header}> is not installed; install {package} to run the ABI probe")
    d = tmp_path_factory.mktemp("xen-abi")
    shim = d / "shim" / "xen" / "interface"
    shim.mkdir(parents=True)
    (shim / "xen.h").write_text("#include <xen/xen.h>\n")
    return run_c_probe(gcc, _probe_source(), d, ["-I", str(d / "shim")])


def test_the_probe_checks_everything_it_prints(c_says: dict[str, int]) -> None:
    """Every value the probe printed is compared by one of the tests below (the count
    is what the report quotes)."""
    kinds = {k.split()[0] for k in c_says}
    assert kinds == {"sizeof", "offsetof", "bits", "layout-size", "layout-offset", "layout-head",
                     "value", "computed"}
    assert len(c_says) > 300


@pytest.mark.parametrize("cname", list(STRUCTS))
def test_struct_layout_matches_the_header(c_says: dict[str, int], cname: str) -> None:
    struct = STRUCTS[cname]
    assert ctypes.sizeof(struct) == c_says[f"sizeof {cname}"]
    for f in _fields(struct):
        assert getattr(struct, f).offset == c_says[f"offsetof {cname}.{f}"], f


def test_scalar_types_match_the_header(c_says: dict[str, int]) -> None:
    for cname, ctype in TYPEDEFS.items():
        assert ctypes.sizeof(ctype) == c_says[f"sizeof {cname}"], cname


@pytest.mark.parametrize("field", list(BITFIELDS))
def test_ioreq_bit_fields_sit_where_gcc_puts_them(c_says: dict[str, int], field: str) -> None:
    r = abi.ioreq()
    setattr(r, field, (1 << BITFIELDS[field]) - 1)
    assert bytes(r)[abi.IOREQ_FLAGS_BYTE] == c_says[f"bits ioreq.{field}"]
    masks = {"state": abi.IOREQ_STATE_MASK, "data_is_ptr": abi.IOREQ_DATA_IS_PTR_BIT,
             "dir": abi.IOREQ_DIR_BIT, "df": abi.IOREQ_DF_BIT}
    assert masks[field] == c_says[f"bits ioreq.{field}"]


@pytest.mark.parametrize("layout", L.ALL, ids=[x.cname for x in L.ALL])
def test_emulator_layouts_match_the_header(c_says: dict[str, int], layout: Layout) -> None:
    if layout.cname in HEAD_ONLY:
        assert layout.size == c_says[f"layout-head {layout.cname}"]
    else:
        assert layout.size == c_says[f"layout-size {layout.cname}"]
    for field, offset in layout.offsets.items():
        if (layout.cname, field) not in SYNTHETIC and layout.cname not in TYPEDEFS:
            assert offset == c_says[f"layout-offset {layout.cname}.{field}"], field


def test_emulator_domctl_size_matches_the_header(c_says: dict[str, int]) -> None:
    assert c_says["layout-size xen_domctl"] == L.DOMCTL_SIZE


@pytest.mark.parametrize("name", IOCTLS)
def test_ioctl_numbers_match_the_header(c_says: dict[str, int], name: str) -> None:
    assert getattr(abi, name) == c_says[f"value {name}"]


@pytest.mark.parametrize("name", list(CONSTANTS))
def test_constants_match_the_header(c_says: dict[str, int], name: str) -> None:
    assert getattr(abi, name) == c_says[f"value {name}"]


@pytest.mark.parametrize("i", range(len(COMPUTED)), ids=list(COMPUTED))
def test_computed_values_match_the_header(c_says: dict[str, int], i: int) -> None:
    expr = list(COMPUTED)[i]
    assert eval(expr, {"abi": abi}) == c_says[f"computed {i}"]


def test_a_wrong_structure_size_changes_the_ioctl_number() -> None:
    class Shorter(ctypes.Structure):
        _fields_ = [("dom", ctypes.c_uint16)]

    assert ioctl.IOC(ioctl.IOC_NONE, "P", 5, ctypes.sizeof(Shorter)) != abi.IOCTL_PRIVCMD_DM_OP
