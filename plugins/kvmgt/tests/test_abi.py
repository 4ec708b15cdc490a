"""The ctypes ABI against the C header: every size, offset, ioctl number and constant.

A probe is compiled with gcc against ``<linux/kvm.h>`` and prints what C
sees; each value must match what :mod:`gvt_kvmgt.abi` computes.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from gvt_core.hostabi import ioctl
from gvt_core.testing.abi_probe import run_c_probe
from gvt_kvmgt import abi

STRUCTS: dict[str, tuple[type, list[str]]] = {
    "kvm_userspace_memory_region": (
        abi.kvm_userspace_memory_region,
        ["slot", "flags", "guest_phys_addr", "memory_size", "userspace_addr"],
    ),
    "kvm_regs": (abi.kvm_regs, [n for n, _ in abi.kvm_regs._fields_]),
    "kvm_segment": (abi.kvm_segment, [n for n, _ in abi.kvm_segment._fields_]),
    "kvm_dtable": (abi.kvm_dtable, ["base", "limit", "padding"]),
    "kvm_sregs": (abi.kvm_sregs, [n for n, _ in abi.kvm_sregs._fields_]),
    "kvm_msi": (abi.kvm_msi, ["address_lo", "address_hi", "data", "flags", "devid", "pad"]),
    "kvm_cpuid_entry2": (abi.kvm_cpuid_entry2, [n for n, _ in abi.kvm_cpuid_entry2._fields_]),
    "kvm_cpuid2": (abi.kvm_cpuid2, ["nent", "padding"]),
    "kvm_mp_state": (abi.kvm_mp_state, ["mp_state"]),
}

#: kvm_run members as C names them -> offset computed from the ctypes layout.
RUN_MEMBERS = {
    "exit_reason": abi.RUN_EXIT_REASON,
    "immediate_exit": abi.kvm_run.immediate_exit.offset,
    "apic_base": abi.kvm_run.apic_base.offset,
    "io.direction": abi.RUN_IO_DIRECTION,
    "io.size": abi.RUN_IO_SIZE,
    "io.port": abi.RUN_IO_PORT,
    "io.count": abi.RUN_IO_COUNT,
    "io.data_offset": abi.RUN_IO_DATA_OFFSET,
    "mmio.phys_addr": abi.RUN_MMIO_PHYS_ADDR,
    "mmio.data": abi.RUN_MMIO_DATA,
    "mmio.len": abi.RUN_MMIO_LEN,
    "mmio.is_write": abi.RUN_MMIO_IS_WRITE,
    "fail_entry.hardware_entry_failure_reason": abi.kvm_run.exit.offset,
    "internal.suberror": abi.kvm_run.exit.offset + abi.kvm_run_internal.suberror.offset,
    "internal.ndata": abi.kvm_run.exit.offset + abi.kvm_run_internal.ndata.offset,
    "internal.data": abi.kvm_run.exit.offset + abi.kvm_run_internal.data.offset,
    "system_event.type": abi.kvm_run.exit.offset + abi.kvm_run_system_event.type.offset,
}

IOCTLS = [
    "KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE",
    "KVM_GET_SUPPORTED_CPUID", "KVM_CREATE_VCPU", "KVM_SET_USER_MEMORY_REGION",
    "KVM_SET_TSS_ADDR", "KVM_CREATE_IRQCHIP", "KVM_SIGNAL_MSI", "KVM_RUN", "KVM_GET_REGS",
    "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_SET_CPUID2", "KVM_SET_MP_STATE",
]

CONSTANTS = [
    "KVMIO", "KVM_API_VERSION", "KVM_CAP_IRQCHIP", "KVM_CAP_USER_MEMORY", "KVM_CAP_SET_TSS_ADDR",
    "KVM_CAP_NR_MEMSLOTS", "KVM_CAP_SIGNAL_MSI", "KVM_CAP_READONLY_MEM", "KVM_MEM_LOG_DIRTY_PAGES",
    "KVM_MEM_READONLY", "KVM_EXIT_UNKNOWN", "KVM_EXIT_EXCEPTION", "KVM_EXIT_IO",
    "KVM_EXIT_HYPERCALL", "KVM_EXIT_DEBUG", "KVM_EXIT_HLT", "KVM_EXIT_MMIO",
    "KVM_EXIT_IRQ_WINDOW_OPEN", "KVM_EXIT_SHUTDOWN", "KVM_EXIT_FAIL_ENTRY", "KVM_EXIT_INTR",
    "KVM_EXIT_INTERNAL_ERROR", "KVM_EXIT_SYSTEM_EVENT", "KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT",
    "KVM_MP_STATE_RUNNABLE", "KVM_NR_INTERRUPTS",
]


def _probe_source() -> str:
    lines = [
        "#include <stdio.h>", "#include <stddef.h>", "#include <linux/kvm.h>",
        "int main(void) {",
    ]
    for cname, (_, fields) in STRUCTS.items():
        lines.append(f'printf("sizeof {cname} %zu\\n", sizeof(struct {cname}));')
        for f in fields:
            lines.append(f'printf("offsetof {cname}.{f} %zu\\n", offsetof(struct {cname}, {f}));')
    for member in RUN_MEMBERS:
        lines.append(f'printf("offsetof kvm_run.{member} %zu\\n", offsetof(struct kvm_run, {member}));')
    for name in IOCTLS + CONSTANTS:
        lines.append(f'printf("value {name} %llu\\n", (unsigned long long)({name}));')
    lines += ["return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def c_says(gcc: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    if not Path("/usr/include/linux/kvm.h").exists():
        pytest.skip("<linux/kvm.h> is not installed (linux-libc-dev)")
    d = tmp_path_factory.mktemp("abi")
    return run_c_probe(gcc, _probe_source(), d)


@pytest.mark.parametrize("cname", list(STRUCTS))
def test_struct_layout_matches_the_header(c_says: dict[str, int], cname: str) -> None:
    struct, fields = STRUCTS[cname]
    assert ctypes.sizeof(struct) == c_says[f"sizeof {cname}"]
    for f in fields:
        assert getattr(struct, f).offset == c_says[f"offsetof {cname}.{f}"], f


def test_kvm_run_offsets_match_the_header(c_says: dict[str, int]) -> None:
    for member, offset in RUN_MEMBERS.items():
        assert offset == c_says[f"offsetof kvm_run.{member}"], member


@pytest.mark.parametrize("name", IOCTLS)
def test_ioctl_numbers_match_the_header(c_says: dict[str, int], name: str) -> None:
    assert getattr(abi, name) == c_says[f"value {name}"]


@pytest.mark.parametrize("name", CONSTANTS)
def test_constants_match_the_header(c_says: dict[str, int], name: str) -> None:
    assert getattr(abi, name) == c_says[f"value {name}"]


def test_a_wrong_structure_size_changes_the_ioctl_number() -> None:
    class Shorter(ctypes.Structure):
        _fields_ = [("slot", ctypes.c_uint32)]

    assert ioctl.IOW(abi.KVMIO, 0x46, Shorter) != abi.KVM_SET_USER_MEMORY_REGION
