"""sim-specific behaviour beyond the MPT contract: memory model, frames, modes, routing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import attrs
import numpy as np
import pytest

from gvt_core.device.memory.page_track import PageTrack
from gvt_core.errors import (
    BackendError,
    DmaMapError,
    HookUnsupportedError,
    InvalidGfnError,
    PageTrackError,
    VgpuStateError,
)
from gvt_core.hw import regs
from gvt_core.hw.gpu import HOST_APERTURE_PA, HOST_BAR0_PA, HostGpu
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE, SystemMemory
from gvt_core.mpt.info import DmaMode, PageTrackMode
from gvt_core.mpt.loader import LoadedBackend, load_backend
from gvt_core.mpt.ops import HostContext, Msi
from gvt_core.testing.recording import RecordingOps
from gvt_sim import SimBackend, SimVm
from gvt_sim.backend import OPREGION_GPA
from gvt_sim.memory import HOST_FRAME_BASE, IOVA_FRAME_BASE

GiB = 1 << 30


@attrs.frozen
class Vgpu:
    id: int


@attrs.define
class Host:
    loaded: LoadedBackend
    ops: RecordingOps
    ctx: HostContext

    @property
    def mpt(self) -> Any:
        return self.loaded.mpt

    def vm(self, mem_size: int = 64 << 20, vgpu_id: int = 1) -> tuple[SimVm, Any]:
        vm = self.mpt.create_vm(self.ctx, mem_size, f"test-vm{vgpu_id}")
        return vm, self.mpt.attach_vgpu(Vgpu(vgpu_id), vm)


@attrs.define(eq=False)
class TrackingOps(RecordingOps):
    """Recording ops that also hand trapped page writes to the core's PageTrack."""

    track: PageTrack | None = None

    def page_track_write(self, vgpu: Any, gpa: int, data: bytes) -> None:
        super().page_track_write(vgpu, gpa, data)
        if self.track is not None:
            self.track.handle_write(gpa, data)


def make_host(**options: Any) -> Host:
    loaded = load_backend("sim", **options)
    ops = TrackingOps()
    ctx = HostContext(ops=ops, sysmem=SystemMemory())
    loaded.mpt.host_init(ctx)
    return Host(loaded, ops, ctx)


@pytest.fixture
def host() -> Iterator[Host]:
    h = make_host()
    yield h
    for vm in h.loaded.plugin.vms:  # type: ignore[attr-defined]
        vm.close()
    h.mpt.host_exit(h.ctx)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


# --- options -----------------------------------------------------------------------------------------


def test_defaults_and_capabilities() -> None:
    caps = load_backend("sim").info.capabilities
    assert caps.page_track is PageTrackMode.WRITE_FORWARDED
    assert caps.dma is DmaMode.IOMMU
    assert caps.needs_trap_area and caps.needs_aperture_map and caps.can_create_vm
    assert caps.max_dma_page == 2 << 20
    caps = load_backend("sim", page_track="landed", dma="identity").info.capabilities
    assert (caps.page_track, caps.dma) == (PageTrackMode.WRITE_LANDED, DmaMode.IDENTITY)


def test_bad_options_are_rejected_by_name() -> None:
    with pytest.raises(BackendError, match=r"page_track='sometimes'.*'landed'"):
        load_backend("sim", page_track="sometimes")
    with pytest.raises(BackendError, match="rejected its options"):
        load_backend("sim", colour="blue")
    assert SimBackend(page_track=PageTrackMode.WRITE_LANDED).page_track_mode is (
        PageTrackMode.WRITE_LANDED
    )


# --- memory model ---------------------------------------------------------------------------------------


def test_a_4gib_guest_costs_only_the_pages_it_touches(host: Host) -> None:
    before = _rss_bytes()
    _, h = host.vm(4 * GiB)
    spots = [i * (256 << 20) + 0x123 for i in range(16)] + [4 * GiB - 8]
    for gpa in spots:
        host.mpt.write_gpa(h, gpa, gpa.to_bytes(8, "little"))
    for gpa in spots:
        assert host.mpt.read_gpa(h, gpa, 8) == gpa.to_bytes(8, "little")
    # untouched memory reads as zeros without being allocated
    assert host.mpt.read_gpa(h, 3 * GiB + (64 << 20), 16 << 20) == bytes(16 << 20)
    assert _rss_bytes() - before < 256 << 20
    assert host.mpt.gfn_to_mfn(h, (4 * GiB >> PAGE_SHIFT) - 1) > 0


def test_guest_ram_frames_avoid_the_host_mmio_hole(host: Host) -> None:
    _, ha = host.vm(64 << 20, 1)
    _, hb = host.vm(64 << 20, 2)
    frames_a = {host.mpt.gfn_to_mfn(ha, g) for g in range(0, 16384, 97)}
    frames_b = {host.mpt.gfn_to_mfn(hb, g) for g in range(0, 16384, 97)}
    core = {host.mpt.from_virt_to_mfn(0x7F00_0000_0000 + i * PAGE_SIZE) for i in range(64)}
    assert not frames_a & frames_b and not frames_a & core and not frames_b & core
    hole = range(HOST_APERTURE_PA >> PAGE_SHIFT, HOST_FRAME_BASE)
    assert (HOST_BAR0_PA >> PAGE_SHIFT) in hole
    for f in frames_a | frames_b | core:
        assert HOST_FRAME_BASE <= f < IOVA_FRAME_BASE
    with pytest.raises(ValueError):
        host.mpt.from_virt_to_mfn(0x7F00_0000_0010)


def test_guest_ram_is_host_contiguous_per_2mib(host: Host) -> None:
    _, h = host.vm(8 << 20)
    first = host.mpt.gfn_to_mfn(h, 512)
    assert first % 512 == 0
    assert [host.mpt.gfn_to_mfn(h, 512 + i) for i in range(512)] == list(range(first, first + 512))


def test_cpu_access_sizes_are_checked(host: Host) -> None:
    vm, _ = host.vm()
    port = vm.port()
    with pytest.raises(ValueError):
        port.store(0x1000, 1, 3)
    with pytest.raises(ValueError):
        port.store(0x1000, 0x1_0000, 2)
    with pytest.raises(ValueError):
        port.mmio_write(0x1000, 1, 16)


def test_unaligned_guest_write_to_a_tracked_page_uses_natural_stores(host: Host) -> None:
    vm, h = host.vm()
    host.mpt.enable_page_track(h, 3)
    vm.port().mem_write(0x3001, b"abcdefg")
    traps = [c.args for c in host.ops.of("page_track_write")]
    assert traps == [(0x3001, b"a"), (0x3002, b"bc"), (0x3004, b"defg")]


def test_a_store_across_two_tracked_pages_traps_once_per_page(host: Host) -> None:
    vm, h = host.vm()
    host.mpt.enable_page_track(h, 3)
    host.mpt.enable_page_track(h, 4)
    vm.port().store(0x4000 - 2, 0x44332211, 4)
    assert [c.args for c in host.ops.of("page_track_write")] == [
        (0x3FFE, b"\x11\x22"), (0x4000, b"\x33\x44")
    ]


@pytest.mark.parametrize("mode", ["forwarded", "landed"])
def test_core_page_track_table_sees_the_page_after_the_write(mode: str) -> None:
    """With the core's PageTrack, both modes look like KVM to the handler."""
    h = make_host(page_track=mode)
    vm, handle = h.vm()
    track = PageTrack(h.mpt, handle)
    seen: list[bytes] = []
    track.register(5, lambda gpa, data: seen.append(h.mpt.read_gpa(handle, gpa, len(data))))
    track.enable(5)
    h.ops.track = track  # type: ignore[attr-defined]
    vm.port().store(0x5010, 0xDEADBEEF, 4)
    assert seen == [(0xDEADBEEF).to_bytes(4, "little")]
    assert h.mpt.read_gpa(handle, 0x5010, 4) == (0xDEADBEEF).to_bytes(4, "little")
    track.release_all()
    assert vm.held().page_tracks == 0
    vm.close()


# --- DMA ------------------------------------------------------------------------------------------------


def test_identity_dma_addresses_are_host_physical() -> None:
    h = make_host(dma="identity")
    vm, handle = h.vm()
    a = h.mpt.dma_map_guest_page(handle, 7, PAGE_SIZE)
    assert a == h.mpt.gfn_to_mfn(handle, 7) << PAGE_SHIFT
    a2m = h.mpt.dma_map_guest_page(handle, 512, 2 << 20)
    assert a2m == h.mpt.gfn_to_mfn(handle, 512) << PAGE_SHIFT and a2m % (2 << 20) == 0
    # the same bus address starts a 4 KiB and a 2 MiB mapping: the 4 KiB one goes first
    a4k = h.mpt.dma_map_guest_page(handle, 512, PAGE_SIZE)
    assert a4k == a2m
    h.mpt.dma_unmap_guest_page(handle, a4k)
    assert vm.held().dma_maps == 2
    h.mpt.dma_unmap_guest_page(handle, a2m)
    assert vm.held().dma_maps == 1
    vm.close()


def test_iommu_addresses_are_unrelated_to_host_frames_and_reused(host: Host) -> None:
    _, h = host.vm()
    a = host.mpt.dma_map_guest_page(h, 7, PAGE_SIZE)
    assert a >> PAGE_SHIFT >= IOVA_FRAME_BASE
    assert a != host.mpt.gfn_to_mfn(h, 7) << PAGE_SHIFT
    host.mpt.write_gpa(h, 8 << PAGE_SHIFT, b"page eight")
    host.mpt.dma_unmap_guest_page(h, a)
    # a freed IOVA slot is reused: a stale address now reaches another page
    b = host.mpt.dma_map_guest_page(h, 8, PAGE_SIZE)
    assert b == a
    assert host.ctx.sysmem.read(a, 10) == b"page eight"


def test_bulk_map_of_262144_pages(host: Host) -> None:
    vm, h = host.vm(2 * GiB)
    gfns = np.arange(262_144, dtype=np.int64) * 2
    addrs = host.mpt.dma_map_guest_pages(h, gfns, PAGE_SIZE)
    # a 4 KiB bulk map answers with an array: no 262,144 Python ints
    assert isinstance(addrs, np.ndarray) and addrs.dtype == np.uint64
    assert len(addrs) == np.unique(addrs).size == 262_144
    assert vm.held().dma_maps == 262_144
    for i in (0, 1, 99_999, 262_143):
        gpa = int(gfns[i]) << PAGE_SHIFT
        host.mpt.write_gpa(h, gpa + 4, b"seen")
        assert host.ctx.sysmem.read(addrs[i] + 4, 4) == b"seen"
    again = host.mpt.dma_map_guest_pages(h, gfns[:1000].tolist(), PAGE_SIZE)
    assert np.array_equal(again, addrs[:1000])
    host.mpt.dma_unmap_guest_pages(h, again)
    host.mpt.dma_unmap_guest_pages(h, addrs[::2])
    assert vm.held().dma_maps == 131_072
    assert host.ctx.sysmem.read(int(addrs[1]) + 4, 4) == b"seen"
    host.mpt.detach_vgpu(h)
    assert vm.held().total == 0 and host.ctx.sysmem.window_count == 0


def test_gpu_sees_a_mapped_page_through_the_host_ggtt(host: Host) -> None:
    """A host GGTT entry holding a DMA address reaches the guest page; the aperture
    window of the host GPU, mapped into the guest with map_gfn_to_mfn, reaches it too."""
    gpu = HostGpu(frame_of=host.mpt.from_virt_to_mfn, sysmem=host.ctx.sysmem)
    vm, h = host.vm()
    host.mpt.write_gpa(h, 0x9000, b"framebuffer")
    gm_page = 100  # a page of graphics memory in the aperture
    dma = host.mpt.dma_map_guest_page(h, 9, PAGE_SIZE)
    gpu.set_pte(gm_page, dma | regs.GEN8_PAGE_PRESENT)
    assert gpu.gm_read(gm_page << PAGE_SHIFT, 11) == b"framebuffer"
    # the vGPU's aperture slice shown in the guest's BAR2
    bar2_gfn = (8 * GiB) >> PAGE_SHIFT
    host.mpt.map_gfn_to_mfn(h, bar2_gfn, (HOST_APERTURE_PA >> PAGE_SHIFT) + gm_page, 1, True)
    port = vm.port()
    assert port.mmio_read(bar2_gfn << PAGE_SHIFT, 8) == int.from_bytes(b"framebuf", "little")
    port.mmio_write((bar2_gfn << PAGE_SHIFT) + 16, 0x2A, 1)
    assert host.mpt.read_gpa(h, 0x9010, 1) == b"\x2a"
    # the GGTT entry moves: the same guest address now shows another page
    gpu.set_pte(gm_page, gpu.scratch_pte)
    assert port.mmio_read(bar2_gfn << PAGE_SHIFT, 8) == 0


# --- routing -----------------------------------------------------------------------------------------------


def test_opregion_overlays_ram_below_the_aperture_window(host: Host) -> None:
    vm, h = host.vm(4 * GiB)
    gpu = HostGpu(frame_of=host.mpt.from_virt_to_mfn, sysmem=host.ctx.sysmem)
    frame, page = gpu.pages.alloc(owner="opregion")
    page[:16] = regs.OPREGION_SIGNATURE
    gpa = host.mpt.set_opregion(h, [frame])
    assert gpa == OPREGION_GPA == 0xBFFF_E000 == HOST_APERTURE_PA - regs.OPREGION_SIZE
    port = vm.port()
    assert port.mmio_read(gpa, 8) == int.from_bytes(regs.OPREGION_SIGNATURE[:8], "little")
    assert host.mpt.read_gpa(h, gpa, 8) == bytes(8)  # guest RAM underneath is untouched
    assert vm.held().gfn_maps == 1


def test_pvmmio_loads_and_stores_reach_the_core(host: Host) -> None:
    vm, h = host.vm()
    start = 4 * GiB
    host.mpt.set_pvmmio(h, start, start + (2 << 20), True)
    host.ops.mmio_answers[start + 0x44] = 0x1234
    port = vm.port()
    assert port.mmio_read(start + 0x44, 4) == 0x1234
    port.mmio_write(start + 0x48, 5, 4)
    assert [(c.op, c.args) for c in host.ops.calls] == [
        ("emulate_mmio_read", (start + 0x44, 4)),
        ("emulate_mmio_write", (start + 0x48, 5, 4)),
    ]


def test_second_trap_area_is_routed_too(host: Host) -> None:
    vm, h = host.vm()
    host.mpt.set_trap_area(h, 4 * GiB, 4 * GiB + PAGE_SIZE, True)
    host.mpt.set_trap_area(h, 5 * GiB, 5 * GiB + PAGE_SIZE, True)
    vm.port().mmio_write(5 * GiB + 8, 9, 4)
    assert host.ops.of("emulate_mmio_write")[0].args == (5 * GiB + 8, 9, 4)


def test_config_space_is_unassigned_without_a_vgpu(host: Host) -> None:
    vm, h = host.vm()
    port = vm.port()
    host.mpt.detach_vgpu(h)
    assert port.cfg_read(0, 4) == 0xFFFF_FFFF
    port.cfg_write(4, 7, 2)
    assert host.ops.calls == []
    with pytest.raises(VgpuStateError):
        vm.port()


# --- life cycle ------------------------------------------------------------------------------------------------


def test_pause_refuses_guest_accesses_until_unpaused(host: Host) -> None:
    vm, h = host.vm()
    port = vm.port()
    host.mpt.set_trap_area(h, 4 * GiB, 4 * GiB + PAGE_SIZE, True)
    host.mpt.pause_domain(h)
    host.mpt.pause_domain(h)  # pausing a paused guest changes nothing
    for access in (
        lambda: port.mmio_write(4 * GiB, 1, 4), lambda: port.mmio_read(0, 4),
        lambda: port.cfg_read(0, 2), lambda: port.store(0, 1, 1),
        lambda: port.mem_read(0, 1), lambda: port.wait_msi(0),
    ):
        with pytest.raises(VgpuStateError, match="paused"):
            access()
    # the core may still reshape the address map of a paused guest
    host.mpt.set_trap_area(h, 5 * GiB, 5 * GiB + PAGE_SIZE, True)
    with pytest.raises(VgpuStateError):
        port.mmio_write(4 * GiB, 1, 4)
    host.mpt.unpause_domain(h)
    port.mmio_write(4 * GiB, 1, 4)
    assert len(host.ops.of("emulate_mmio_write")) == 1
    with pytest.raises(VgpuStateError, match="not paused"):
        host.mpt.unpause_domain(h)


def test_msis_from_many_threads_all_arrive(host: Host) -> None:
    vm, h = host.vm()
    port = vm.port()

    # 4 x 60 distinct messages: fewer than MAX_PENDING_MSIS even if none is taken yet
    def send(t: int) -> None:
        for i in range(60):
            host.mpt.inject_msi(h, 0xFEE0_0000 + t, i)

    threads = [threading.Thread(target=send, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    got = [port.wait_msi(5.0) for _ in range(240)]
    for t in threads:
        t.join()
    assert port.wait_msi(0) is None
    for t in range(4):
        assert [m.data for m in got if m is not None and m.address == 0xFEE0_0000 + t] == list(
            range(60)
        )
    with pytest.raises(ValueError):
        host.mpt.inject_msi(h, 1 << 32, 0)
    assert Msi(1, 2) == Msi(1, 2)


def test_one_vgpu_per_guest_and_only_own_guests(host: Host) -> None:
    vm, _ = host.vm()
    with pytest.raises(VgpuStateError, match="already has vGPU 1"):
        host.mpt.attach_vgpu(Vgpu(2), vm)
    other = make_host()
    foreign = other.mpt.create_vm(other.ctx, 1 << 20, "foreign")
    with pytest.raises(HookUnsupportedError):
        host.mpt.attach_vgpu(Vgpu(3), foreign)
    foreign.close()


def test_closing_a_guest_releases_its_vgpu(host: Host) -> None:
    vm, h = host.vm()
    host.mpt.enable_page_track(h, 1)
    a = host.mpt.dma_map_guest_page(h, 2, PAGE_SIZE)
    port = vm.port()
    vm.close()
    assert vm.held().total == 0
    assert host.ctx.sysmem.window_count == 0
    with pytest.raises(VgpuStateError, match="closed"):
        port.mem_read(0, 1)
    # the core destroying the vGPU afterwards releases what the close released
    # already: quietly (one warning per page would flood the log)
    host.mpt.dma_unmap_guest_page(h, a)
    host.mpt.disable_page_track(h, 1)
    with pytest.raises(VgpuStateError, match="detached"):
        host.mpt.dma_map_guest_page(h, 2, PAGE_SIZE)
    host.mpt.detach_vgpu(h)
    vm.close()


def test_host_exit_with_an_attached_vgpu_is_refused(host: Host) -> None:
    _, h = host.vm()
    with pytest.raises(VgpuStateError, match="destroy the vGPUs first"):
        host.mpt.host_exit(host.ctx)
    host.mpt.detach_vgpu(h)


def test_handles_are_checked(host: Host) -> None:
    with pytest.raises(BackendError, match="not one its attach_vgpu returned"):
        host.mpt.read_gpa(object(), 0, 1)


def test_edid_and_dom0_ready_are_recorded(host: Host) -> None:
    _, h = host.vm()
    host.mpt.set_edid(h, regs.PORT_B)
    host.mpt.dom0_ready()
    assert h.edid_ports == {regs.PORT_B}
    assert host.loaded.plugin.dom0_is_ready is True  # type: ignore[attr-defined]


_BULK_HOOKS = frozenset({"dma_map_guest_pages", "dma_unmap_guest_pages", "enable_page_tracks"})


def test_core_defaults_of_the_bulk_hooks(host: Host) -> None:
    """With sim's bulk hooks hidden, the facade's per-page defaults do the same work:
    maps undone on failure, tracks undone on failure, unmaps one by one."""
    mpt = host.mpt
    vm, h = host.vm()
    mpt.implemented = mpt.implemented - _BULK_HOOKS
    pages = vm.mem_size >> PAGE_SHIFT
    addrs = mpt.dma_map_guest_pages(h, np.array([5, 6, 5], dtype=np.uint64), PAGE_SIZE)
    assert isinstance(addrs, list) and addrs[0] == addrs[2] and vm.held().dma_maps == 2
    with pytest.raises(InvalidGfnError):
        mpt.dma_map_guest_pages(h, [7, 8, pages], PAGE_SIZE)
    assert vm.held().dma_maps == 2
    mpt.dma_unmap_guest_pages(h, np.array(addrs, dtype=np.uint64))
    assert vm.held().dma_maps == 0
    mpt.enable_page_tracks(h, np.array([3, 4], dtype=np.uint64))
    assert vm.tracked == {3, 4}
    with pytest.raises(PageTrackError):
        mpt.enable_page_tracks(h, [9, 10, 4])
    assert vm.tracked == {3, 4}
    with pytest.raises(DmaMapError):
        mpt.dma_unmap_guest_pages(h, [addrs[0]])
