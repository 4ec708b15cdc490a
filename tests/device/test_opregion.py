"""The virtual OpRegion (facts 9.6) and its SWSCI emulation."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest

from gvt_core.device.display.opregion import OpRegion, answer_swsci, build_opregion, build_vbt
from gvt_core.device.gvt import Gvt
from gvt_core.device.vgpu import Vgpu
from gvt_core.hw import regs
from gvt_core.hw.sysmem import HostPagePool, SystemMemory

GUEST_MEM = 64 << 20
GBDA, SBCB = regs.SWSCI_GBDA, regs.SWSCI_SBCB


def scic(func: int, sub: int) -> int:
    return (sub << 8) | (func << 1) | regs.SWSCI_SCIC_INDICATOR


def exit_status(value: int) -> int:
    return (value & regs.SWSCI_SCIC_EXIT_STATUS_MASK) >> regs.SWSCI_SCIC_EXIT_STATUS_SHIFT


# --- contents ---------------------------------------------------------------------------


def test_header() -> None:
    op = build_opregion()
    assert len(op) == 8192
    assert op[:16] == b"IntelGraphicsMem"
    u32 = lambda o: struct.unpack_from("<I", op, o)[0]  # noqa: E731
    assert u32(regs.OPREGION_HEADER_SIZE) == 8
    assert u32(regs.OPREGION_HEADER_VERSION) == 0x0200_0000
    assert u32(regs.OPREGION_HEADER_MBOX) == 1 << 3  # MBOX_VBT only
    assert u32(0x1AC) == 0x3  # CLID: lid open
    assert u32(0x200) == 0 and u32(0x204) == 0  # SWSCI mailbox idle


def test_vbt() -> None:
    op = build_opregion()
    vbt = build_vbt()
    assert op[0x400 : 0x400 + len(vbt)] == vbt
    sig, version, header_size, vbt_size, _csum, _, bdb_offset = struct.unpack_from("<20sHHHBBI", vbt)
    assert sig.rstrip(b"\0") == b"$VBT" and version == 155
    assert vbt_size == len(vbt) and header_size == bdb_offset == 48
    assert sum(vbt) % 256 == 0
    bsig, bversion, bheader, bsize = struct.unpack_from("<16sHHH", vbt, bdb_offset)
    assert bsig.rstrip(b"\0") == b"BIOS_DATA_BLOCK" and bversion == 186
    assert bdb_offset + bsize == len(vbt)
    # walk the BDB blocks
    pos, blocks = bdb_offset + bheader, {}
    while pos < len(vbt):
        block_id, size = struct.unpack_from("<BH", vbt, pos)
        blocks[block_id] = vbt[pos + 3 : pos + 3 + size]
        pos += 3 + size
    assert pos == len(vbt)
    assert set(blocks) == {regs.BDB_GENERAL_FEATURES, regs.BDB_GENERAL_DEFINITIONS, 12}  # + driver features
    defs = blocks[regs.BDB_GENERAL_DEFINITIONS]
    child_size = defs[4]
    assert child_size == 33
    children = [defs[5 + i * 33 : 5 + (i + 1) * 33] for i in range((len(defs) - 5) // 33)]
    assert len(children) == 4 and len(defs) == 5 + 4 * 33
    for i, child in enumerate(children):
        handle, dtype = struct.unpack_from("<HH", child)
        assert dtype == regs.DEVICE_TYPE_DP
        assert handle == regs.DEVICE_HANDLE_EFP[i]
        assert child[16] == regs.DVO_PORT_DP[i]  # DP on ports A..D
        assert child[25] == regs.DP_AUX_CHANNEL[i]


# --- SWSCI answers -------------------------------------------------------------------------


@pytest.mark.parametrize(("func", "sub"), [(GBDA, 0), (GBDA, 1), (SBCB, 0)])
def test_capability_queries_answer_scic_0_parm_0(func: int, sub: int) -> None:
    a = answer_swsci(scic(func, sub) | (regs.SWSCI_SCIC_EXIT_STATUS_SUCCESS << 5))
    assert a.supported and a.scic == 0 and a.parm == 0  # upstream (facts 0.1 #9)
    assert (a.function, a.subfunction) == (func, sub)


@pytest.mark.parametrize(("func", "sub"), [(GBDA, 4), (SBCB, 1), (SBCB, 7), (1, 0), (0, 0)])
def test_other_functions_clear_only_the_exit_status(func: int, sub: int) -> None:
    request = scic(func, sub) | (0x7 << regs.SWSCI_SCIC_EXIT_STATUS_SHIFT)
    a = answer_swsci(request)
    assert not a.supported and a.parm is None
    assert exit_status(a.scic) == regs.SWSCI_SCIC_EXIT_STATUS_FAILURE
    assert a.scic == request & ~regs.SWSCI_SCIC_EXIT_STATUS_MASK  # indicator stays set


# --- host pages -------------------------------------------------------------------------------


def test_opregion_lives_in_registered_host_pages() -> None:
    sysmem = SystemMemory()
    frames = iter(range(0x1000, 0x2000))
    pool = HostPagePool(sysmem, lambda vaddr: next(frames))
    op = OpRegion.create(pool, owner="vgpu9-opregion")
    assert sysmem.count("vgpu9-opregion") == 2
    image = b"".join(sysmem.read(f << 12, 4096) for f in op.frames)
    assert image == build_opregion()
    assert op.read(0x1FFC, 8 - 4) == image[0x1FFC:0x2000]
    op.write(0xFFE, b"\x01\x02\x03\x04")  # across the page boundary
    assert op.read(0xFFE, 4) == b"\x01\x02\x03\x04"
    with pytest.raises(ValueError, match="out of range"):
        op.read(0x1FFF, 2)
    op.free()
    assert sysmem.count("vgpu9-opregion") == 0 and op.frames == ()


# --- through a vGPU on sim -----------------------------------------------------------------------


@pytest.fixture
def env() -> Iterator[tuple[Gvt, Any, Vgpu, Any]]:
    gvt = Gvt.open("sim")
    vm = gvt.create_vm(GUEST_MEM, "op")
    vgpu = gvt.create_vgpu("GVTg_V4_8", vm)
    yield gvt, vm, vgpu, vm.port()
    gvt.close()


def trigger(port: Any) -> None:
    """What the guest i915's swsci() does after filling the mailbox."""
    value = port.cfg_read(regs.PCI_SWSCI, 2)
    port.cfg_write(regs.PCI_SWSCI, value | regs.SWSCI_SCI_SELECT | regs.SWSCI_SCI_TRIGGER, 2)


def test_guest_sees_the_opregion_sim_placed_and_calls_swsci(env: tuple[Any, ...]) -> None:
    _gvt, _vm, vgpu, port = env
    asls = port.cfg_read(regs.PCI_ASLS, 4)
    assert asls == vgpu.opregion.placed_gpa
    assert port.mmio_read(asls, 8) == int.from_bytes(b"IntelGra", "little")
    port.mmio_write(asls + regs.OPREGION_PARM, 0xDEAD, 4)
    port.mmio_write(asls + regs.OPREGION_SCIC, scic(GBDA, 0), 4)
    trigger(port)
    assert port.mmio_read(asls + regs.OPREGION_SCIC, 4) == 0
    assert port.mmio_read(asls + regs.OPREGION_PARM, 4) == 0
    assert port.cfg_read(regs.PCI_SWSCI, 2) == 0  # SWSCI writes are not stored
    port.mmio_write(asls + regs.OPREGION_SCIC, scic(GBDA, 4), 4)
    port.mmio_write(asls + regs.OPREGION_PARM, 0xBEEF, 4)
    trigger(port)
    assert port.mmio_read(asls + regs.OPREGION_SCIC, 4) == scic(GBDA, 4)  # status 0, indicator
    assert port.mmio_read(asls + regs.OPREGION_PARM, 4) == 0xBEEF
    assert vgpu.stats.swsci_requests == 2
    port.cfg_write(regs.PCI_SWSCI, regs.SWSCI_SCI_SELECT, 2)  # no trigger: nothing to do
    assert vgpu.stats.swsci_requests == 2


def test_swsci_on_a_guest_copy_in_ram(env: tuple[Any, ...]) -> None:
    """The KVMGT way: the guest copied the OpRegion into its RAM and wrote ASLS."""
    _gvt, _vm, vgpu, port = env
    copy = 0x20_0000
    port.mem_write(copy, vgpu.opregion.read(0, regs.OPREGION_SIZE))
    port.cfg_write(regs.PCI_ASLS, copy, 4)
    port.store(copy + regs.OPREGION_SCIC, scic(SBCB, 0), 4)
    trigger(port)
    assert port.mem_read(copy + regs.OPREGION_SCIC, 4) == bytes(4)
    assert vgpu.opregion.last_swsci is not None and vgpu.opregion.last_swsci.supported
    # the host copy was not the one used
    assert vgpu.opregion.read(regs.OPREGION_SCIC, 4) == bytes(4)


@pytest.mark.parametrize("asls", [0, GUEST_MEM + 0x1000, 0xFFFF_F000])
def test_swsci_without_a_reachable_mailbox_is_ignored(env: tuple[Any, ...], asls: int) -> None:
    _gvt, _vm, vgpu, port = env
    port.cfg_write(regs.PCI_ASLS, asls, 4)
    trigger(port)
    assert vgpu.opregion.last_swsci is None
    assert port.cfg_read(regs.PCI_SWSCI, 2) == 0
    assert vgpu.stats.swsci_requests == 1


def test_smi_requests_are_not_emulated(env: tuple[Any, ...]) -> None:
    _gvt, _vm, _vgpu, port = env
    asls = port.cfg_read(regs.PCI_ASLS, 4)
    port.mmio_write(asls + regs.OPREGION_SCIC, scic(GBDA, 0), 4)
    port.cfg_write(regs.PCI_SWSCI, regs.SWSCI_SCI_TRIGGER, 2)  # SCI select clear: SMI
    assert port.mmio_read(asls + regs.OPREGION_SCIC, 4) == scic(GBDA, 0)  # untouched
    assert port.cfg_read(regs.PCI_SWSCI, 2) == 0
    assert _vgpu.stats.swsci_requests == 0


def test_destroy_frees_the_opregion(env: tuple[Any, ...]) -> None:
    gvt, vm, vgpu, _port = env
    assert gvt.gpu.sysmem.count("vgpu1-opregion") == 2
    gvt.destroy_vgpu(vgpu)
    assert gvt.gpu.sysmem.count("vgpu1-opregion") == 0
    assert vgpu.opregion is None
    assert vm.held().gfn_maps == 0
