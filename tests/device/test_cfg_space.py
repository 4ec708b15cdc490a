"""The virtual PCI config space (facts 5.5, 5.6), through the sim guest port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gvt_core.device.gvt import Gvt
from gvt_core.device.registers.cfg_space import golden_cfg_space
from gvt_core.device.vgpu import Vgpu
from gvt_core.errors import AddressSpaceError
from gvt_core.guest.driver import GuestDriver
from gvt_core.hw import regs
from gvt_core.hw.gpu import HOST_APERTURE_PA, HOST_BAR0_PA
from gvt_sim.backend import OPREGION_GPA as SIM_OPREGION_GPA

GUEST_MEM = 64 << 20
BAR0 = 0x1_0000_0000
BAR2 = 0x2_0000_0000


@pytest.fixture(scope="module")
def host() -> Iterator[Gvt]:
    gvt = Gvt.open("sim")
    yield gvt
    gvt.close()


@pytest.fixture
def env(host: Gvt) -> Iterator[tuple[Gvt, Any, Vgpu, Any]]:
    vm = host.create_vm(GUEST_MEM, "cfg")
    vgpu = host.create_vgpu("GVTg_V4_8", vm)
    yield host, vm, vgpu, vm.port()
    host.destroy_vgpu(vgpu)
    vm.close()


def program_bars(port: Any, bar0: int = BAR0, bar2: int = BAR2) -> None:
    port.cfg_write(regs.PCI_BASE_ADDRESS_0, bar0 & 0xFFFF_FFFF, 4)
    port.cfg_write(regs.PCI_BASE_ADDRESS_1, bar0 >> 32, 4)
    port.cfg_write(regs.PCI_BASE_ADDRESS_2, bar2 & 0xFFFF_FFFF, 4)
    port.cfg_write(regs.PCI_BASE_ADDRESS_3, bar2 >> 32, 4)


def aperture_map(vgpu: Vgpu, bar2: int) -> tuple[int, int, int]:
    r = vgpu.resources
    return (bar2 + r.low_gm_base) >> 12, (HOST_APERTURE_PA + r.low_gm_base) >> 12, r.low_gm_size >> 12


def gfn_maps(vm: Any) -> set[tuple[int, int, int]]:
    return {(m.gfn, m.mfn, m.nr) for m in vm.gfn_maps if not m.frames}


# --- initial contents -------------------------------------------------------------------


def test_golden_host_config_space(host: Gvt) -> None:
    g = golden_cfg_space(host.gpu)
    u16 = lambda o: int.from_bytes(g[o : o + 2], "little")  # noqa: E731
    u32 = lambda o: int.from_bytes(g[o : o + 4], "little")  # noqa: E731
    assert u16(regs.PCI_VENDOR_ID) == 0x8086 and u16(regs.PCI_DEVICE_ID) == host.gpu.device_id
    assert g[regs.PCI_CLASS_PROG : regs.PCI_CLASS_PROG + 3] == bytes([0x00, 0x00, 0x03])
    assert u16(regs.PCI_COMMAND) & regs.PCI_COMMAND_MEMORY  # the host decodes its BARs
    assert u32(regs.PCI_BASE_ADDRESS_0) == HOST_BAR0_PA | regs.PCI_BASE_ADDRESS_MEM_TYPE_64
    assert u32(regs.PCI_BASE_ADDRESS_4) & regs.PCI_BASE_ADDRESS_SPACE_IO
    assert (u16(regs.INTEL_GMCH_CTRL) & regs.INTEL_GMCH_GMS_MASK) != 0


def test_vgpu_initial_config_space(env: tuple[Any, ...]) -> None:
    gvt, vm, vgpu, port = env
    assert port.cfg_read(regs.PCI_VENDOR_ID, 2) == regs.INTEL_VENDOR_ID
    assert port.cfg_read(regs.PCI_DEVICE_ID, 2) == gvt.gpu.device_id
    assert port.cfg_read(regs.PCI_REVISION_ID, 1) == gvt.gpu.revision
    assert port.cfg_read(regs.PCI_REVISION_ID, 4) >> 8 == 0x030000  # class: VGA
    assert port.cfg_read(regs.PCI_HEADER_TYPE, 1) == 0
    assert port.cfg_read(regs.PCI_SUBSYSTEM_VENDOR_ID, 2) == regs.SIM_SUBSYSTEM_VENDOR_ID
    cmd = port.cfg_read(regs.PCI_COMMAND, 2)
    assert cmd & (regs.PCI_COMMAND_IO | regs.PCI_COMMAND_MEMORY | regs.PCI_COMMAND_MASTER) == 0
    assert port.cfg_read(regs.PCI_STATUS, 2) & regs.PCI_STATUS_CAP_LIST
    gmch = port.cfg_read(regs.INTEL_GMCH_CTRL, 2)
    assert gmch & regs.INTEL_GMCH_GMS_MASK == 0  # no stolen memory
    assert (gmch >> regs.INTEL_GMCH_GGMS_SHIFT) & regs.INTEL_GMCH_GGMS_MASK == 3  # 8 MiB GTT
    assert port.cfg_read(regs.PCI_BASE_ADDRESS_0, 4) == (HOST_BAR0_PA | 0x4)
    assert port.cfg_read(regs.PCI_BASE_ADDRESS_2, 4) == (HOST_APERTURE_PA | 0xC)
    for off in (regs.PCI_BASE_ADDRESS_1, regs.PCI_BASE_ADDRESS_3, regs.PCI_BASE_ADDRESS_4,
                regs.PCI_BASE_ADDRESS_5, regs.PCI_ROM_ADDRESS):
        assert port.cfg_read(off, 4) == 0, hex(off)
    # capability list: MSI at the IGD's offset, chained to PM, which ends the list
    assert port.cfg_read(regs.PCI_CAPABILITY_LIST, 1) == regs.MSI_CAP_OFFSET
    assert port.cfg_read(regs.MSI_CAP_OFFSET, 1) == regs.PCI_CAP_ID_MSI
    nxt = port.cfg_read(regs.MSI_CAP_OFFSET + 1, 1)
    assert port.cfg_read(nxt, 1) == regs.PCI_CAP_ID_PM and port.cfg_read(nxt + 1, 1) == 0
    # MSI as the host programmed it: upstream copies the host's config space
    msi = vgpu.cfg.msi()
    assert (msi.enabled, msi.address, msi.data) == (True, regs.HOST_MSI_ADDRESS, regs.HOST_MSI_DATA)
    # ASLS: the OpRegion sim placed
    assert port.cfg_read(regs.PCI_ASLS, 4) == SIM_OPREGION_GPA
    assert vm.held().trap_areas == 0 and gfn_maps(vm) == set()


# --- writable / read-only bits -----------------------------------------------------------


RO_FIELDS = [
    (regs.PCI_VENDOR_ID, 4), (regs.PCI_REVISION_ID, 4), (regs.PCI_HEADER_TYPE, 2),
    (regs.PCI_SUBSYSTEM_VENDOR_ID, 4), (regs.PCI_ROM_ADDRESS, 4), (regs.PCI_CAPABILITY_LIST, 4),
    (regs.INTEL_GMCH_CTRL, 4), (regs.PCI_SWSCI, 4),
    (regs.MSI_CAP_OFFSET, 2), (regs.PM_CAP_OFFSET, 4), (0x100, 4), (0xFFC, 4),
]


@pytest.mark.parametrize(("offset", "size"), RO_FIELDS)
def test_read_only_fields_stay(env: tuple[Any, ...], offset: int, size: int) -> None:
    _, _, _vgpu, port = env
    before = port.cfg_read(offset, size)
    for value in (0, (1 << (8 * size)) - 1, 0x5A5A5A5A & ((1 << (8 * size)) - 1)):
        port.cfg_write(offset, value, size)
        assert port.cfg_read(offset, size) == before


def test_command_writable_bits(env: tuple[Any, ...]) -> None:
    _, _, _, port = env
    port.cfg_write(regs.PCI_COMMAND, 0xFFFF, 2)
    assert port.cfg_read(regs.PCI_COMMAND, 2) == 0x07FF
    port.cfg_write(regs.PCI_COMMAND, 0, 2)
    assert port.cfg_read(regs.PCI_COMMAND, 2) == 0
    port.cfg_write(regs.PCI_COMMAND + 1, 0xFF, 1)
    assert port.cfg_read(regs.PCI_COMMAND, 2) == 0x0700


def test_status_high_byte_is_write_one_to_clear(env: tuple[Any, ...]) -> None:
    _, _, vgpu, port = env
    status = port.cfg_read(regs.PCI_STATUS, 2)
    port.cfg_write(regs.PCI_STATUS, 0xFFFF, 2)  # ones cannot set RW1C bits
    assert port.cfg_read(regs.PCI_STATUS, 2) == status
    # the device model raising error bits (e.g. a master abort) and the guest clearing some
    vgpu.cfg._data[regs.PCI_STATUS + 1] = 0xF9
    port.cfg_write(regs.PCI_STATUS, 0x0900, 2)  # clear bits 8 and 11
    assert port.cfg_read(regs.PCI_STATUS + 1, 1) == 0xF9 & ~0x09
    port.cfg_write(regs.PCI_STATUS, 0, 2)  # zeros change nothing
    assert port.cfg_read(regs.PCI_STATUS + 1, 1) == 0xF0
    assert port.cfg_read(regs.PCI_STATUS, 1) == status & 0xFF


def test_interrupt_line_and_cache_line_are_writable(env: tuple[Any, ...]) -> None:
    _, _, _, port = env
    port.cfg_write(regs.PCI_INTERRUPT_LINE, 0x0B, 1)
    port.cfg_write(regs.PCI_CACHE_LINE_SIZE, 0x10, 1)
    assert port.cfg_read(regs.PCI_INTERRUPT_LINE, 1) == 0x0B
    assert port.cfg_read(regs.PCI_CACHE_LINE_SIZE, 1) == 0x10
    assert port.cfg_read(regs.PCI_INTERRUPT_PIN, 1) == 1


# --- BARs ------------------------------------------------------------------------------------


def test_bar_sizing_protocol(env: tuple[Any, ...], host: Gvt) -> None:
    _, _, vgpu, port = env
    program_bars(port)
    expect = {
        regs.PCI_BASE_ADDRESS_0: (regs.BAR0_SIZE, 0x4),
        regs.PCI_BASE_ADDRESS_2: (host.gpu.aperture_size, 0xC),
    }
    for off, (size, flags) in expect.items():
        lo, hi = port.cfg_read(off, 4), port.cfg_read(off + 4, 4)
        port.cfg_write(off, 0xFFFF_FFFF, 4)
        assert port.cfg_read(off, 4) == (~(size - 1) & 0xFFFF_FFFF) | flags
        port.cfg_write(off + 4, 0xFFFF_FFFF, 4)
        assert port.cfg_read(off + 4, 4) == 0xFFFF_FFFF  # size < 4 GiB: all upper bits settable
        port.cfg_write(off, lo, 4)
        port.cfg_write(off + 4, hi, 4)
        assert (port.cfg_read(off, 4), port.cfg_read(off + 4, 4)) == (lo, hi)
    assert vgpu.cfg.bar0_base == BAR0 and vgpu.cfg.bar2_base == BAR2
    # the guest driver model sizes and programs both BARs the same way
    report = GuestDriver(port, fb_width=64, fb_height=64).load()
    assert report.bar0_size == regs.BAR0_SIZE and report.bar2_size == host.gpu.aperture_size


def test_bar_base_is_size_aligned_and_type_bits_are_read_only(env: tuple[Any, ...]) -> None:
    _, _, vgpu, port = env
    port.cfg_write(regs.PCI_BASE_ADDRESS_0, 0x1234_5678, 4)
    assert port.cfg_read(regs.PCI_BASE_ADDRESS_0, 4) == 0x1200_0004
    port.cfg_write(regs.PCI_BASE_ADDRESS_0 + 3, 0xAB, 1)  # a byte write merges into the dword
    assert port.cfg_read(regs.PCI_BASE_ADDRESS_0, 4) == 0xAB00_0004
    assert vgpu.cfg.bar0_base == 0xAB00_0000


def test_bar_moves_trap_and_map_only_while_decoding(env: tuple[Any, ...]) -> None:
    _, vm, vgpu, port = env
    program_bars(port)
    assert vm.trap_areas == [] and gfn_maps(vm) == set()  # decoding is off: nothing set up
    port.cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY, 2)
    assert vm.trap_areas == [(BAR0, BAR0 + regs.BAR0_SIZE)]
    assert gfn_maps(vm) == {aperture_map(vgpu, BAR2)}
    # re-program while decoding: the old range goes, the new one comes
    new0, new2 = BAR0 + 0x4000_0000, BAR2 + 0x4000_0000
    program_bars(port, new0, new2)
    assert vm.trap_areas == [(new0, new0 + regs.BAR0_SIZE)]
    assert gfn_maps(vm) == {aperture_map(vgpu, new2)}
    # a sizing probe while decoding: the BAR holds no address, nothing is trapped
    port.cfg_write(regs.PCI_BASE_ADDRESS_0, 0xFFFF_FFFF, 4)
    assert vm.trap_areas == []
    port.cfg_write(regs.PCI_BASE_ADDRESS_0, new0 & 0xFFFF_FFFF, 4)
    assert vm.trap_areas == [(new0, new0 + regs.BAR0_SIZE)]
    port.cfg_write(regs.PCI_BASE_ADDRESS_3, 0xFFFF_FFFF, 4)
    assert gfn_maps(vm) == set()
    port.cfg_write(regs.PCI_BASE_ADDRESS_3, new2 >> 32, 4)
    assert gfn_maps(vm) == {aperture_map(vgpu, new2)}
    # decoding off: untrap and unmap
    port.cfg_write(regs.PCI_COMMAND, 0, 2)
    assert vm.trap_areas == [] and gfn_maps(vm) == set()
    assert vgpu.stats.bar_map_errors == 0
    # and the BAR0 range is served by the vGPU only while trapped
    port.cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY, 2)
    assert port.mmio_read(new0 + regs.VGT_PVINFO_PAGE + regs.PVINFO_VGT_ID, 4) == vgpu.id


def test_aperture_slice_reaches_guest_memory_through_the_ggtt(env: tuple[Any, ...]) -> None:
    _, _vm, vgpu, port = env
    drv = GuestDriver(port, fb_width=64, fb_height=64)
    report = drv.load()
    # a CPU store through BAR2 at the framebuffer's GM address lands in the guest page the
    # guest's GGTT entry names (aperture map -> host aperture -> host GGTT -> DMA map)
    port.mmio_write(report.bar2 + report.framebuffer_gm + 8, 0xC0FFEE, 4)
    assert port.mem_read(report.framebuffer_gpa + 8, 4) == (0xC0FFEE).to_bytes(4, "little")
    # outside the vGPU's slice nothing is mapped: loads read all ones
    assert port.mmio_read(report.bar2 + vgpu.resources.low_gm_end, 4) == 0xFFFF_FFFF


def test_backend_refusing_a_map_is_counted_not_raised(
    env: tuple[Any, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, vm, vgpu, port = env

    def refuse(handle: Any, gfn: int, mfn: int, nr_pages: int, map: bool) -> None:
        raise AddressSpaceError(f"guest frames at {gfn:#x} overlap another mapping")

    monkeypatch.setattr(vgpu.mpt, "map_gfn_to_mfn", refuse)
    program_bars(port)
    port.cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY, 2)
    assert vgpu.stats.bar_map_errors == 1 and vgpu.cfg.mapped is None
    assert vm.trap_areas == [(BAR0, BAR0 + regs.BAR0_SIZE)]  # BAR0 still works
    assert port.mmio_read(BAR0 + regs.VGT_PVINFO_PAGE + regs.PVINFO_VGT_ID, 4) == vgpu.id
    monkeypatch.undo()
    port.cfg_write(regs.PCI_COMMAND, 0, 2)
    port.cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY, 2)  # retried on the next enable
    assert gfn_maps(vm) == {aperture_map(vgpu, BAR2)}


def test_bar4_and_bar5_store_what_the_guest_writes_but_size_to_nothing(
    env: tuple[Any, ...]
) -> None:
    """Upstream's unimplemented BARs: a value sticks (BAR4 keeps its type bits), all
    ones reads back 0, so a sizing guest finds no BAR there."""
    _, _, _vgpu, port = env
    port.cfg_write(regs.PCI_BASE_ADDRESS_4, 0x1234_567F, 4)
    assert port.cfg_read(regs.PCI_BASE_ADDRESS_4, 4) == 0x1234_5670
    port.cfg_write(regs.PCI_BASE_ADDRESS_5, 0x8765_4321, 4)
    assert port.cfg_read(regs.PCI_BASE_ADDRESS_5, 4) == 0x8765_4321
    for bar in (regs.PCI_BASE_ADDRESS_4, regs.PCI_BASE_ADDRESS_5):
        port.cfg_write(bar, 0xFFFF_FFFF, 4)
        assert port.cfg_read(bar, 4) == 0


# --- MSI -----------------------------------------------------------------------------------------


def test_msi_capability(env: tuple[Any, ...]) -> None:
    _, _, vgpu, port = env
    cap = regs.MSI_CAP_OFFSET
    port.cfg_write(cap + regs.PCI_MSI_ADDRESS_LO, 0xFEE0_1003, 4)  # low 2 bits are reserved
    port.cfg_write(cap + regs.PCI_MSI_DATA_32, 0x4041, 2)
    port.cfg_write(cap + regs.PCI_MSI_FLAGS, 0xFFFF, 2)  # only the enable bit sticks
    msi = vgpu.cfg.msi()
    assert (msi.enabled, msi.address, msi.data, msi.control) == (True, 0xFEE0_1000, 0x4041, 1)
    assert port.cfg_read(cap + regs.PCI_MSI_FLAGS, 2) & regs.PCI_MSI_FLAGS_64BIT == 0
    port.cfg_write(cap + regs.PCI_MSI_FLAGS, 0, 2)
    assert vgpu.cfg.msi().enabled is False
    # the MMIO helper's interrupt path delivers through this decode
    port.cfg_write(cap + regs.PCI_MSI_FLAGS, regs.PCI_MSI_FLAGS_ENABLE, 2)
    vgpu.irq.inject_msi()
    got = port.wait_msi(0)
    assert got is not None and (got.address, got.data) == (0xFEE0_1000, 0x4041)


# --- reset -------------------------------------------------------------------------------------


def test_reset_restores_the_initial_image_and_untraps(env: tuple[Any, ...]) -> None:
    _, vm, vgpu, port = env
    initial = vgpu.cfg.snapshot()
    program_bars(port)
    port.cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY | regs.PCI_COMMAND_MASTER, 2)
    port.cfg_write(regs.MSI_CAP_OFFSET + regs.PCI_MSI_FLAGS, 1, 2)
    port.cfg_write(regs.PCI_ASLS, 0x1000, 4)
    assert vm.trap_areas
    vgpu.cfg.reset()
    assert vgpu.cfg.snapshot() == initial
    assert vm.trap_areas == [] and gfn_maps(vm) == set()
    assert vgpu.cfg.bar0_base == HOST_BAR0_PA
    assert port.cfg_read(regs.PCI_ASLS, 4) == SIM_OPREGION_GPA


# --- hostile guests ---------------------------------------------------------------------------


def test_bad_accesses_read_all_ones_and_drop_writes(env: tuple[Any, ...]) -> None:
    _, _, vgpu, _port = env
    before = vgpu.cfg.snapshot()
    bad = vgpu.stats.bad_accesses
    assert vgpu.cfg.read(4095, 2) == 0xFFFF  # crosses the end
    assert vgpu.cfg.read(0x02, 4) == 0xFFFF_FFFF  # misaligned
    assert vgpu.cfg.read(0x00, 3) == 0xFF_FFFF  # size 3
    assert vgpu.cfg.read(0x00, 8) == (1 << 64) - 1
    assert vgpu.cfg.read(-4, 4) == 0xFFFF_FFFF
    assert vgpu.cfg.read(4096, 1) == 0xFF
    vgpu.cfg.write(0x05, 0xFFFF, 2)
    vgpu.cfg.write(4094, 0xFFFF_FFFF, 4)
    vgpu.cfg.write(0x10, 0, 8)
    assert vgpu.stats.bad_accesses == bad + 9
    assert vgpu.cfg.snapshot() == before


_OFFSETS = st.one_of(st.integers(-8, 4200), st.sampled_from(
    [regs.PCI_COMMAND, regs.PCI_BASE_ADDRESS_0, regs.PCI_BASE_ADDRESS_1, regs.PCI_BASE_ADDRESS_2,
     regs.PCI_BASE_ADDRESS_3, regs.PCI_SWSCI, regs.PCI_ASLS, regs.MSI_CAP_OFFSET + 2]))
_SIZES = st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 8, 16])
_VALUES = st.one_of(st.integers(0, (1 << 32) - 1), st.integers(-(1 << 40), 1 << 70))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(accesses=st.lists(st.tuples(st.booleans(), _OFFSETS, _SIZES, _VALUES), max_size=40))
def test_any_access_sequence_never_raises(env: tuple[Any, ...], accesses: list[Any]) -> None:
    gvt, vm, vgpu, _port = env
    ro = [(regs.PCI_VENDOR_ID, 4), (regs.PCI_REVISION_ID, 4), (regs.PCI_HEADER_TYPE, 1),
          (regs.PCI_CAPABILITY_LIST, 1), (regs.MSI_CAP_OFFSET, 2), (regs.PM_CAP_OFFSET, 2),
          (regs.INTEL_GMCH_CTRL, 2), (regs.PCI_SWSCI, 2)]
    fixed = [vgpu.cfg.read(o, s) for o, s in ro]
    for is_write, offset, size, value in accesses:
        bad = not (size in (1, 2, 4) and offset >= 0 and offset + size <= 4096
                   and offset % size == 0)
        count = vgpu.stats.bad_accesses
        if is_write:
            gvt.emulate_cfg_write(vgpu, offset, value, size)
        else:
            got = gvt.emulate_cfg_read(vgpu, offset, size)
            assert 0 <= got < 1 << 64
            if bad:
                assert got == ((1 << (8 * size)) - 1 if 0 <= size <= 8 else 0xFFFF_FFFF)
        assert vgpu.stats.bad_accesses == count + bad
        lo, hi = vgpu.cfg.read(regs.PCI_BASE_ADDRESS_0, 4), vgpu.cfg.read(regs.PCI_BASE_ADDRESS_2, 4)
        assert lo & 0xF == 0x4 and hi & 0xF == 0xC  # BAR type bits never change
    assert [vgpu.cfg.read(o, s) for o, s in ro] == fixed
    # whatever happened, the backend's view matches the config space
    trapped = vgpu.cfg.trapped
    assert vm.trap_areas == ([trapped] if trapped else [])
    vgpu.cfg.reset()
    assert vm.trap_areas == []


def test_no_aperture_slice_at_its_power_on_address_crosses_the_opregion() -> None:
    """Guests that turn decoding on without moving BAR2 (still the host's aperture
    address) get their whole slice mapped, however far up the aperture it lies; sim's
    OpRegion sits below that window (it used to sit at ACRN's 0xDFFFD000, inside it,
    and a V4_4 after four V4_8s could not map its slice)."""
    with Gvt.open("sim") as gvt:
        vms, vgpus = [], []
        for type_name in ["GVTg_V4_8"] * 4 + ["GVTg_V4_4"] * 2:
            vm = gvt.create_vm(64 << 20, f"g{len(vms)}")
            vms.append(vm)
            vgpu = gvt.create_vgpu(type_name, vm)
            vgpus.append(vgpu)
            vm.port().cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY, 2)
        slices = [(HOST_APERTURE_PA + v.resources.low_gm_base,
                   HOST_APERTURE_PA + v.resources.low_gm_base + v.resources.low_gm_size)
                  for v in vgpus]
        assert any(lo <= regs.ACRN_GUEST_OPREGION_GPA < hi for lo, hi in slices)
        for vm, vgpu in zip(vms, vgpus, strict=True):
            assert vgpu.stats.bar_map_errors == 0 and vgpu.cfg.mapped is not None
            port = vm.port()
            asls = port.cfg_read(regs.PCI_ASLS, 4)
            assert asls == SIM_OPREGION_GPA
            assert port.mmio_read(asls, 8) == int.from_bytes(regs.OPREGION_SIGNATURE[:8],
                                                             "little")
        for vgpu in vgpus:
            gvt.destroy_vgpu(vgpu)
            assert vgpu.stats.bar_map_errors == 0
        for vm in vms:
            vm.close()
