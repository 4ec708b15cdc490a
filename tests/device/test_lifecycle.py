"""vGPU life cycle on the sim backend: create, activate, reset, destroy (facts 2.3)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from gvt_core.device import allocator as alloc_mod
from gvt_core.device.gvt import Gvt
from gvt_core.device.registers.golden import GOLDEN_MMIO, GT_RESET_END
from gvt_core.device.vgpu import Vgpu, VgpuState
from gvt_core.errors import ResourceExhaustedError, UnknownTypeError, VgpuStateError
from gvt_core.guest.driver import GuestDriver
from gvt_core.hw import regs
from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.ops import CoreOps
from gvt_sim.backend import OPREGION_GPA as SIM_OPREGION_GPA

GUEST_MEM = 64 << 20
SMALL = "GVTg_V4_8"


class EventLog:
    """An observer plugin recording the gvt_* events."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def gvt_host_ready(self, host: Any) -> None:
        self.events.append(("host_ready", host))

    @hookimpl
    def gvt_host_exit(self, host: Any) -> None:
        self.events.append(("host_exit", host))

    @hookimpl
    def gvt_vgpu_created(self, vgpu: Any) -> None:
        self.events.append(("created", vgpu.id))

    @hookimpl
    def gvt_vgpu_destroyed(self, vgpu_id: int) -> None:
        self.events.append(("destroyed", vgpu_id))

    @hookimpl
    def gvt_vgpu_reset(self, vgpu: Any, dmlr: bool, engine_mask: int) -> None:
        self.events.append(("reset", (vgpu.id, dmlr, engine_mask)))

    @hookimpl
    def gvt_vgpu_activated(self, vgpu: Any) -> None:
        self.events.append(("activated", vgpu.id))

    @hookimpl
    def gvt_vgpu_deactivated(self, vgpu: Any) -> None:
        self.events.append(("deactivated", vgpu.id))

    @hookimpl
    def gvt_vgpu_failsafe(self, vgpu: Any, reason: str) -> None:
        self.events.append(("failsafe", (vgpu.id, reason)))

    def names(self) -> list[str]:
        return [n for n, _ in self.events]


@pytest.fixture
def gvt() -> Iterator[Gvt]:
    host = Gvt.open("sim")
    yield host
    host.close()


@pytest.fixture
def log(gvt: Gvt) -> EventLog:
    obs = EventLog()
    gvt.backend.add_observer(obs, name="test-events")
    return obs


def host_state(gvt: Gvt) -> tuple[Any, ...]:
    """Everything a vGPU's life may change on the host side."""
    a = gvt.allocator
    return (
        gvt.gpu.sysmem.count(),
        dict(gvt.gpu.sysmem.owners()),
        gvt.gpu.sysmem.window_count,
        gvt.gpu.pages.in_use,
        list(a.low.free_ranges), list(a.high.free_ranges), list(a.free_fences), list(a.free_ids),
        list(gvt.gpu.fences),
        hash(gvt.gpu.ggtt.tobytes()),
        [(t.name, t.available_instances) for t in gvt.types()],
    )


def vgpu_ggtt_is_scratch(gvt: Gvt, vgpu: Vgpu) -> bool:
    r = vgpu.resources
    ggtt = gvt.gpu.ggtt
    low = ggtt[r.low_gm_base >> 12 : r.low_gm_end >> 12]
    high = ggtt[r.high_gm_base >> 12 : r.high_gm_end >> 12]
    return bool(np.all(low == gvt.gpu.scratch_pte) and np.all(high == gvt.gpu.scratch_pte))


# --- host ------------------------------------------------------------------------------


def test_host_is_the_backends_core_ops(gvt: Gvt) -> None:
    assert isinstance(gvt, CoreOps)
    assert gvt.host.ops is gvt
    assert gvt.backend.plugin.host is gvt.host  # host_init ran
    assert gvt.backend.plugin.dom0_is_ready
    assert gvt.idle_vgpu.id == 0
    assert dict(gvt.vgpus) == {}


def test_close_destroys_vgpus_and_exits_the_backend() -> None:
    host = Gvt.open("sim")
    log = EventLog()
    host.backend.add_observer(log)
    vm = host.create_vm(GUEST_MEM, "a")
    host.create_vgpu(SMALL, vm)
    host.close()
    assert log.names() == ["created", "destroyed", "host_exit"]
    assert host.backend.plugin.host is None
    assert vm.held().total == 0
    host.close()  # idempotent
    with pytest.raises(VgpuStateError, match="closed"):
        host.create_vgpu(SMALL, vm)


def test_unknown_type(gvt: Gvt) -> None:
    vm = gvt.create_vm(GUEST_MEM, "a")
    with pytest.raises(UnknownTypeError, match="GVTg_V4_8"):
        gvt.create_vgpu("GVTg_V9_9", vm)


# --- creation -------------------------------------------------------------------------


def test_create_builds_every_part(gvt: Gvt, log: EventLog) -> None:
    vm = gvt.create_vm(GUEST_MEM, "a")
    vgpu = gvt.create_vgpu(SMALL, vm)
    assert vgpu.id == 1 and gvt.vgpus[1] is vgpu
    assert vgpu.state is VgpuState.INACTIVE
    assert vgpu.handle is vm.handle and vgpu.handle.vgpu is vgpu
    assert vgpu.page_track.handle is vgpu.handle
    assert vgpu.mmio is not None and vgpu.ggtt is not None and vgpu.irq is not None
    # PVINFO was populated from the resources
    pv = regs.VGT_PVINFO_PAGE
    assert vgpu.mmio.read(pv + regs.PVINFO_MAGIC, 8) == regs.VGT_MAGIC
    assert vgpu.mmio.read(pv + regs.PVINFO_VGT_ID, 4) == vgpu.id
    assert vgpu.mmio.read(pv + regs.PVINFO_AVAIL_RS_MAPPABLE_BASE, 4) == vgpu.resources.low_gm_base
    assert vgpu.mmio.read(pv + regs.PVINFO_AVAIL_RS_FENCE_NUM, 4) == 4
    # GTT init: the vGPU's host GGTT entries sit on the scratch page
    assert vgpu_ggtt_is_scratch(gvt, vgpu)
    # OpRegion in two host pages, placed by sim, published in ASLS; EDID on port B
    assert len(vgpu.opregion.frames) == 2
    assert gvt.gpu.sysmem.count("vgpu1-opregion") == 2
    assert vgpu.opregion.placed_gpa == SIM_OPREGION_GPA
    assert vgpu.cfg.read(regs.PCI_ASLS, 4) == SIM_OPREGION_GPA
    assert vgpu.handle.edid_ports == {regs.PORT_B}
    assert log.names() == ["created"]
    assert next((t.name, t.available_instances) for t in gvt.types()) == (SMALL, 6)


def test_failed_creation_leaves_nothing_behind(gvt: Gvt, monkeypatch: pytest.MonkeyPatch) -> None:
    vm = gvt.create_vm(GUEST_MEM, "a")
    before = host_state(gvt)

    def broken_set_edid(handle: Any, port: int) -> None:
        raise RuntimeError("backend exploded in set_edid")

    monkeypatch.setattr(gvt.mpt, "set_edid", broken_set_edid)
    with pytest.raises(RuntimeError, match="set_edid"):
        gvt.create_vgpu(SMALL, vm)
    assert host_state(gvt) == before
    assert vm.held().total == 0 and vm.handle is None
    assert dict(gvt.vgpus) == {}
    monkeypatch.undo()
    assert gvt.create_vgpu(SMALL, vm).id == 1


# --- activate / deactivate / release ----------------------------------------------------


def test_state_machine(gvt: Gvt, log: EventLog) -> None:
    vm = gvt.create_vm(GUEST_MEM, "a")
    vgpu = gvt.create_vgpu(SMALL, vm)
    with pytest.raises(VgpuStateError, match="not active"):
        gvt.deactivate_vgpu(vgpu)
    gvt.activate_vgpu(vgpu)
    assert vgpu.active
    with pytest.raises(VgpuStateError, match="already active"):
        gvt.activate_vgpu(vgpu)
    gvt.deactivate_vgpu(vgpu)
    gvt.activate_vgpu(vgpu)
    gvt.release_vgpu(vgpu)  # deactivates; the vGPU stays
    assert vgpu.state is VgpuState.INACTIVE and gvt.vgpus[vgpu.id] is vgpu
    gvt.release_vgpu(vgpu)  # releasing an inactive vGPU is harmless
    gvt.activate_vgpu(vgpu)
    gvt.destroy_vgpu(vgpu)  # destroy deactivates first
    assert vgpu.state is VgpuState.DESTROYED
    assert log.names() == ["created", "activated", "deactivated", "activated", "deactivated",
                           "activated", "deactivated", "destroyed"]
    for op in (gvt.activate_vgpu, gvt.deactivate_vgpu, gvt.release_vgpu, gvt.reset_vgpu,
               gvt.destroy_vgpu):
        with pytest.raises(VgpuStateError, match="not a live vGPU"):
            op(vgpu)


# --- destroy --------------------------------------------------------------------------------


def test_destroy_releases_every_backend_resource(gvt: Gvt, log: EventLog) -> None:
    before = host_state(gvt)
    vm = gvt.create_vm(GUEST_MEM, "a")
    vgpu = gvt.create_vgpu(SMALL, vm)
    drv = GuestDriver(vm.port())
    report = drv.load()
    held = vm.held()
    # the guest's work made the backend hold things for the vGPU
    assert held.trap_areas == 1 and held.gfn_maps == 2  # BAR0 trap; aperture + OpRegion
    assert held.dma_maps == report.framebuffer_pages + report.ring_pages
    assert not vgpu_ggtt_is_scratch(gvt, vgpu)
    gvt.gpu.write_fence(vgpu.resources.fences[0], 0x1234_5000_0000_1001)  # as a guest fence write
    handle = vgpu.handle
    gvt.destroy_vgpu(vgpu)
    assert vm.held().total == 0
    assert not handle.live
    assert vgpu.ppgtt.counts["release"] == 1
    assert host_state(gvt) == before
    assert log.names() == ["created", "destroyed"]
    assert log.events[-1] == ("destroyed", 1)


def test_destroy_all_returns_every_resource_in_any_order(gvt: Gvt) -> None:
    before = host_state(gvt)
    vms = [gvt.create_vm(GUEST_MEM, f"vm{i}") for i in range(4)]
    names = ["GVTg_V4_8", "GVTg_V4_4", "GVTg_V4_8", "GVTg_V4_2"]
    vgpus = [gvt.create_vgpu(n, vm) for n, vm in zip(names, vms, strict=True)]
    avail = {t.name: t.available_instances for t in gvt.types()}
    # low: 896 - 64 - 128 - 64 - 256 = 384; high: 2688 - 384 - 512 - 384 - 1024 = 384; fences 12
    assert avail == {"GVTg_V4_8": 1, "GVTg_V4_4": 0, "GVTg_V4_2": 0, "GVTg_V4_1": 0}
    for v in (vgpus[2], vgpus[0], vgpus[3], vgpus[1]):
        gvt.destroy_vgpu(v)
    assert host_state(gvt) == before


# --- reset ------------------------------------------------------------------------------------


@pytest.fixture
def loaded(gvt: Gvt) -> tuple[Gvt, Any, Vgpu, GuestDriver, bytes, bytes]:
    vm = gvt.create_vm(GUEST_MEM, "a")
    vgpu = gvt.create_vgpu(SMALL, vm)
    created_vreg = bytes(vgpu.mmio.vreg)
    created_cfg = vgpu.cfg.snapshot()
    drv = GuestDriver(vm.port(), fb_width=64, fb_height=64)
    drv.load()
    return gvt, vm, vgpu, drv, created_vreg, created_cfg


def test_dmlr_restores_the_state_at_creation(loaded: tuple[Any, ...], log: EventLog) -> None:
    gvt, vm, vgpu, drv, created_vreg, created_cfg = loaded
    fence = regs.FENCE_REG_GEN6_LO
    start = vgpu.resources.low_gm_base
    drv.mmio_write(fence + 4, start + 0xF000)  # fence 0 end page
    drv.mmio_write(fence, start | regs.FENCE_VALID)  # fence 0 start + valid
    assert gvt.gpu.fences[vgpu.resources.fences[0]] != 0
    vgpu.enter_failsafe("test")
    vgpu.pv_notified = True
    assert bytes(vgpu.mmio.vreg) != created_vreg and vgpu.cfg.snapshot() != created_cfg
    gvt.reset_vgpu(vgpu)  # default: DMLR
    assert bytes(vgpu.mmio.vreg) == created_vreg
    assert vgpu.cfg.snapshot() == created_cfg
    assert vgpu.ggtt.mapped == 0 and vgpu_ggtt_is_scratch(gvt, vgpu)
    assert gvt.gpu.fences[vgpu.resources.fences[0]] == 0
    assert not vgpu.failsafe and not vgpu.page_track.failsafe and not vgpu.pv_notified
    assert vgpu.ppgtt.counts["invalidate"] == 1
    # memory decoding is off again: the BAR0 trap and aperture map are gone, the OpRegion stays
    assert vm.held().trap_areas == 0 and vm.held().gfn_maps == 1 and vm.held().dma_maps == 0
    assert ("reset", (vgpu.id, True, regs.ALL_ENGINES_MASK)) in log.events
    assert vgpu.stats.resets == 1
    # the guest can load again after the reset
    GuestDriver(vm.port(), fb_width=64, fb_height=64).load()


def test_gt_reset_restores_only_render_registers(loaded: tuple[Any, ...]) -> None:
    gvt, vm, vgpu, drv, _created_vreg, _created_cfg = loaded
    tail = regs.BLT_RING_BASE + regs.RING_TAIL  # below 0x44200: GT range
    imr = regs.GEN8_GT_ISR_BASE + regs.IRQ_IMR  # above: kept
    drv.mmio_write(tail, 0x40)
    imr_value = drv.mmio_read(imr)
    assert imr_value != int.from_bytes(GOLDEN_MMIO[imr : imr + 4], "little")  # the driver unmasked
    held = vm.held()
    cfg = vgpu.cfg.snapshot()
    gvt.reset_vgpu(vgpu, dmlr=False, engine_mask=regs.ALL_ENGINES_MASK)
    assert bytes(vgpu.mmio.vreg[:GT_RESET_END]) == GOLDEN_MMIO[:GT_RESET_END]
    assert drv.mmio_read(imr) == imr_value
    assert drv.mmio_read(regs.VGT_PVINFO_PAGE + regs.PVINFO_MAGIC, 8) == regs.VGT_MAGIC
    assert vgpu.ppgtt.counts["invalidate"] == 1
    assert vm.held() == held  # GGTT mappings and traps untouched
    assert vgpu.cfg.snapshot() == cfg


def test_engine_reset_touches_no_register_state(loaded: tuple[Any, ...], log: EventLog) -> None:
    gvt, _vm, vgpu, drv, _created_vreg, _created_cfg = loaded
    tail = regs.BLT_RING_BASE + regs.RING_TAIL
    drv.mmio_write(tail, 0x40)
    vreg = bytes(vgpu.mmio.vreg)
    gvt.reset_vgpu(vgpu, dmlr=False, engine_mask=1 << regs.ENGINE_BCS)
    assert bytes(vgpu.mmio.vreg) == vreg
    assert vgpu.ppgtt.counts["invalidate"] == 0
    assert log.events[-1] == ("reset", (vgpu.id, False, 1 << regs.ENGINE_BCS))


def test_failsafe_is_entered_once_and_emitted(gvt: Gvt, log: EventLog) -> None:
    vm = gvt.create_vm(GUEST_MEM, "a")
    vgpu = gvt.create_vgpu(SMALL, vm)
    vgpu.enter_failsafe("out-of-range fence")
    vgpu.enter_failsafe("again")
    assert vgpu.failsafe and vgpu.page_track.failsafe
    assert vgpu.failsafe_reason == "out-of-range fence"
    assert [e for e in log.events if e[0] == "failsafe"] == [("failsafe", (1, "out-of-range fence"))]


# --- the hot paths --------------------------------------------------------------------------


def test_mmio_outside_bar0_reads_all_ones(gvt: Gvt) -> None:
    vm = gvt.create_vm(GUEST_MEM, "a")
    vgpu = gvt.create_vgpu(SMALL, vm)
    base = vgpu.cfg.bar0_base
    assert gvt.emulate_mmio_read(vgpu, base + regs.VGT_PVINFO_PAGE, 4) == regs.VGT_MAGIC & 0xFFFF_FFFF
    bad = vgpu.stats.bad_accesses
    assert gvt.emulate_mmio_read(vgpu, base - 4, 4) == 0xFFFF_FFFF
    assert gvt.emulate_mmio_read(vgpu, base + regs.BAR0_SIZE - 4, 8) == (1 << 64) - 1
    assert gvt.emulate_mmio_read(vgpu, base, 0) == 0
    assert gvt.emulate_mmio_read(vgpu, base, 16) == (1 << 64) - 1
    gvt.emulate_mmio_write(vgpu, base + regs.BAR0_SIZE, 1, 4)
    assert vgpu.stats.bad_accesses == bad + 5
    assert vgpu.stats.mmio_reads == 1  # only the good access reached the register file


def test_page_track_entry_points(gvt: Gvt) -> None:
    vm = gvt.create_vm(GUEST_MEM, "a")
    vgpu = gvt.create_vgpu(SMALL, vm)
    seen: list[tuple[int, bytes]] = []
    vgpu.page_track.register(0x100, lambda gpa, data: seen.append((gpa, data)))
    assert not gvt.is_page_tracked(vgpu, 0x100)
    vgpu.page_track.enable(0x100)
    assert gvt.is_page_tracked(vgpu, 0x100)
    vm.port().store(0x100_008, 0xAB, 1)  # a real guest store trapping through sim
    assert seen == [(0x100_008, b"\xab")]
    assert vm.port().mem_read(0x100_008, 1) == b"\xab"  # committed to guest RAM
    gvt.destroy_vgpu(vgpu)
    assert vm.held().page_tracks == 0


# --- the whole host -----------------------------------------------------------------------------


def test_seven_vgpus_then_exhaustion_then_everything_back(gvt: Gvt) -> None:
    before = host_state(gvt)
    vms = [gvt.create_vm(GUEST_MEM, f"vm{i}") for i in range(8)]
    vgpus = [gvt.create_vgpu(SMALL, vm) for vm in vms[:7]]
    assert sorted(gvt.vgpus) == [1, 2, 3, 4, 5, 6, 7]
    assert {t.name: t.available_instances for t in gvt.types()}[SMALL] == 0
    for vm, vgpu in zip(vms, vgpus, strict=False):
        port = vm.port()
        assert port.cfg_read(regs.PCI_VENDOR_ID, 2) == regs.INTEL_VENDOR_ID
        bar0 = 0x1_0000_0000 + vgpu.id * regs.BAR0_SIZE
        port.cfg_write(regs.PCI_BASE_ADDRESS_0, bar0 & 0xFFFF_FFFF, 4)
        port.cfg_write(regs.PCI_BASE_ADDRESS_1, bar0 >> 32, 4)
        bar2 = 0x2_0000_0000 + vgpu.id * regs.GiB
        port.cfg_write(regs.PCI_BASE_ADDRESS_2, bar2 & 0xFFFF_FFFF, 4)
        port.cfg_write(regs.PCI_BASE_ADDRESS_3, bar2 >> 32, 4)
        port.cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY, 2)
        assert port.mmio_read(bar0 + regs.VGT_PVINFO_PAGE + regs.PVINFO_VGT_ID, 4) == vgpu.id
        base = port.mmio_read(bar0 + regs.VGT_PVINFO_PAGE + regs.PVINFO_AVAIL_RS_MAPPABLE_BASE, 4)
        assert base == vgpu.resources.low_gm_base
        assert vm.held().trap_areas == 1 and vm.held().gfn_maps == 2
        assert vgpu.stats.bar_map_errors == 0 and vgpu.stats.bad_accesses == 0
    with pytest.raises(ResourceExhaustedError) as exc:
        gvt.create_vgpu(SMALL, vms[7])
    assert exc.value.resource == alloc_mod.IDS
    assert "vGPU ids" in str(exc.value)
    assert vms[7].held().total == 0 and vms[7].handle is None
    for vgpu in vgpus:
        gvt.destroy_vgpu(vgpu)
    assert all(vm.held().total == 0 for vm in vms)
    assert host_state(gvt) == before
