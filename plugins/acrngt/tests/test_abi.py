"""The ctypes ABI against ``<linux/acrn.h>``: every size, offset, ioctl number and constant.

A probe is compiled with gcc against the installed header and prints what C
sees; each value must match what :mod:`gvt_acrngt.abi` computes. Skipped,
saying why, where gcc or the header is missing.
"""

from __future__ import annotations

import ctypes
import shutil
from pathlib import Path
from typing import Any

import pytest

from gvt_acrngt import abi
from gvt_core.hostabi import ioctl
from gvt_core.testing.abi_probe import run_c_probe

HEADER = Path("/usr/include/linux/acrn.h")


def _members(struct: type, prefix: str = "") -> list[tuple[str, int]]:
    """Every member (nested ones by their C path) with the offset ctypes gives it."""
    out: list[tuple[str, int]] = []
    anonymous = set(getattr(struct, "_anonymous_", ()))
    for name, ctype in struct._fields_:
        if name.startswith("_aligned"):
            continue
        offset = getattr(struct, name).offset
        if name in anonymous:  # an anonymous union: its members belong to the parent
            out += [(p, offset + o) for p, o in _members(ctype)]
            continue
        path = f"{prefix}{name}"
        out.append((path, offset))
        if isinstance(ctype, type) and issubclass(ctype, ctypes.Structure | ctypes.Union):
            out += [(p, offset + o) for p, o in _members(ctype, f"{path}.")]
    return out


#: C struct name -> its ctypes class.
STRUCTS: dict[str, type] = {
    "acrn_mmio_request": abi.acrn_mmio_request,
    "acrn_pio_request": abi.acrn_pio_request,
    "acrn_pci_request": abi.acrn_pci_request,
    "acrn_io_request": abi.acrn_io_request,
    "acrn_io_request_buffer": abi.acrn_io_request_buffer,
    "acrn_ioreq_notify": abi.acrn_ioreq_notify,
    "acrn_vm_creation": abi.acrn_vm_creation,
    "acrn_gp_regs": abi.acrn_gp_regs,
    "acrn_descriptor_ptr": abi.acrn_descriptor_ptr,
    "acrn_regs": abi.acrn_regs,
    "acrn_vcpu_regs": abi.acrn_vcpu_regs,
    "acrn_vm_memmap": abi.acrn_vm_memmap,
    "acrn_ptdev_irq": abi.acrn_ptdev_irq,
    "acrn_pcidev": abi.acrn_pcidev,
    "acrn_mmiodev": abi.acrn_mmiodev,
    "acrn_vdev": abi.acrn_vdev,
    "acrn_msi_entry": abi.acrn_msi_entry,
    "acrn_acpi_generic_address": abi.acrn_acpi_generic_address,
    "acrn_cstate_data": abi.acrn_cstate_data,
    "acrn_pstate_data": abi.acrn_pstate_data,
    "acrn_ioeventfd": abi.acrn_ioeventfd,
    "acrn_irqfd": abi.acrn_irqfd,
}

#: every ioctl the header defines.
IOCTLS = sorted(abi.IOCTL_NAMES.values())

CONSTANTS = [
    "ACRN_IO_REQUEST_MAX",
    "ACRN_IOREQ_STATE_PENDING", "ACRN_IOREQ_STATE_COMPLETE", "ACRN_IOREQ_STATE_PROCESSING",
    "ACRN_IOREQ_STATE_FREE",
    "ACRN_IOREQ_TYPE_PORTIO", "ACRN_IOREQ_TYPE_MMIO", "ACRN_IOREQ_TYPE_PCICFG",
    "ACRN_IOREQ_DIR_READ", "ACRN_IOREQ_DIR_WRITE",
    "ACRN_MEM_ACCESS_RIGHT_MASK", "ACRN_MEM_ACCESS_READ", "ACRN_MEM_ACCESS_WRITE",
    "ACRN_MEM_ACCESS_EXEC", "ACRN_MEM_ACCESS_RWX",
    "ACRN_MEM_TYPE_MASK", "ACRN_MEM_TYPE_WB", "ACRN_MEM_TYPE_WT", "ACRN_MEM_TYPE_UC",
    "ACRN_MEM_TYPE_WC", "ACRN_MEM_TYPE_WP",
    "ACRN_MEMMAP_RAM", "ACRN_MEMMAP_MMIO",
    "ACRN_PTDEV_IRQ_INTX", "ACRN_PTDEV_IRQ_MSI", "ACRN_PTDEV_IRQ_MSIX",
    "ACRN_PTDEV_QUIRK_ASSIGN", "ACRN_MMIODEV_RES_NUM", "ACRN_PCI_NUM_BARS",
    "PMCMD_TYPE_MASK", "ACRN_PMCMD_GET_PX_CNT", "ACRN_PMCMD_GET_PX_DATA",
    "ACRN_PMCMD_GET_CX_CNT", "ACRN_PMCMD_GET_CX_DATA",
    "ACRN_IOEVENTFD_FLAG_PIO", "ACRN_IOEVENTFD_FLAG_DATAMATCH", "ACRN_IOEVENTFD_FLAG_DEASSIGN",
    "ACRN_IRQFD_FLAG_DEASSIGN", "ACRN_IOCTL_TYPE",
]


def _probe_source() -> str:
    lines = [
        "#include <stdio.h>", "#include <stddef.h>", "#include <linux/ioctl.h>",
        "#include <linux/acrn.h>",
        "int main(void) {",
    ]
    for cname, struct in STRUCTS.items():
        lines.append(f'printf("sizeof {cname} %zu\\n", sizeof(struct {cname}));')
        lines.append(f'printf("alignof {cname} %zu\\n", _Alignof(struct {cname}));')
        for path, _ in _members(struct):
            lines.append(
                f'printf("offsetof {cname}.{path} %zu\\n", offsetof(struct {cname}, {path}));'
            )
    for name in IOCTLS + CONSTANTS:
        lines.append(f'printf("value {name} %llu\\n", (unsigned long long)({name}));')
    lines += ["return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def c_says(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: the ABI probe cannot be compiled")
    if not HEADER.exists():
        pytest.skip(f"{HEADER} is not installed (linux-libc-dev): nothing to check against")
    d = tmp_path_factory.mktemp("acrn_abi")
    return run_c_probe(gcc, _probe_source(), d)


def _checks() -> list[tuple[str, Any]]:
    """Every (probe key, Python value) pair the probe is compared on."""
    checks: list[tuple[str, Any]] = []
    for cname, struct in STRUCTS.items():
        checks.append((f"sizeof {cname}", ctypes.sizeof(struct)))
        checks += [(f"offsetof {cname}.{p}", off) for p, off in _members(struct)]
    checks += [(f"value {n}", getattr(abi, n)) for n in IOCTLS + CONSTANTS]
    return checks


@pytest.mark.parametrize("cname", list(STRUCTS))
def test_struct_layout_matches_the_header(c_says: dict[str, int], cname: str) -> None:
    struct = STRUCTS[cname]
    assert ctypes.sizeof(struct) == c_says[f"sizeof {cname}"]
    for path, offset in _members(struct):
        assert offset == c_says[f"offsetof {cname}.{path}"], path


@pytest.mark.parametrize("name", IOCTLS)
def test_ioctl_numbers_match_the_header(c_says: dict[str, int], name: str) -> None:
    assert getattr(abi, name) == c_says[f"value {name}"]


@pytest.mark.parametrize("name", CONSTANTS)
def test_constants_match_the_header(c_says: dict[str, int], name: str) -> None:
    assert getattr(abi, name) == c_says[f"value {name}"]


def test_the_probe_checks_everything_it_prints(c_says: dict[str, int]) -> None:
    """No value the header gives goes unchecked (alignments are only used for the
    request slot, below), and the count is what the report quotes."""
    checked = {key for key, _ in _checks()}
    printed = {k for k in c_says if not k.startswith("alignof ")}
    assert checked == printed
    assert len(checked) >= 200


def test_request_slots_tile_one_page(c_says: dict[str, int]) -> None:
    """The 256-byte alignment of ``acrn_io_request`` is what makes 16 slots one page;
    ctypes has no alignment attribute, so the padding stands in for it."""
    assert c_says["alignof acrn_io_request"] == abi.IO_REQUEST_SIZE
    assert ctypes.sizeof(abi.acrn_io_request) * abi.ACRN_IO_REQUEST_MAX == 4096
    assert c_says["sizeof acrn_io_request_buffer"] == 4096


def test_ioctl_name_table_covers_the_header() -> None:
    assert len(abi.IOCTL_NAMES) == len(set(abi.IOCTL_NAMES)) == 27
    assert abi.ioctl_name(abi.ACRN_IOCTL_ATTACH_IOREQ_CLIENT) == "ACRN_IOCTL_ATTACH_IOREQ_CLIENT"
    assert ioctl.ioc_size(abi.ACRN_IOCTL_SET_MEMSEG) == ctypes.sizeof(abi.acrn_vm_memmap)


def test_a_wrong_structure_size_changes_the_ioctl_number() -> None:
    class Shorter(ctypes.Structure):
        _fields_ = [("type", ctypes.c_uint32)]

    assert ioctl.IOW(abi.ACRN_IOCTL_TYPE, 0x41, Shorter) != abi.ACRN_IOCTL_SET_MEMSEG
