"""Everything a guest can grow is bounded (docs/architecture.md, "Limits").

Each test drives a guest past one bound through its port and checks the
documented behaviour at the bound, and that the host memory held stays in
proportion to what is live, not to what the guest did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gvt_core.device import limits
from gvt_core.device.gvt import Gvt
from gvt_core.device.memory.ppgtt_entry import TableKind
from gvt_core.errors import DmaMapError
from gvt_core.guest.port import MAX_PENDING_MSIS
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SHIFT
from gvt_core.mpt.loader import register_plugin
from gvt_core.mpt.ops import Msi
from gvt_sim import SimBackend
from tests.ppgtt.guest_tables import P, open_stack

Guest = Any  # tests/device/conftest.py's Guest


def test_untracked_offsets_logged_are_bounded(
    make_guest: Callable[..., Guest], caplog: pytest.LogCaptureFixture
) -> None:
    g = make_guest()
    caplog.set_level(logging.INFO, logger="gvt_core.device.registers.mmio")
    untracked = [off for off in range(0x1_0000, regs.MMIO_SIZE, 4)
                 if g.vgpu.mmio.info(off) is None][: limits.MAX_LOGGED_OFFSETS + 500]
    for off in untracked:
        g.w(off, 1)
    mmio = g.vgpu.mmio
    assert len(mmio.unknown_offsets) == limits.MAX_LOGGED_OFFSETS
    assert g.vgpu.stats.unknown_mmio == len(untracked)
    assert len(caplog.records) == limits.MAX_LOGGED_OFFSETS + 1  # and one "further ones" line
    assert g.r(untracked[-1]) == 1  # still served from the vreg


def test_parked_ggtt_halves_cost_one_byte_per_entry(make_guest: Callable[..., Guest]) -> None:
    """A guest parking every GGTT entry it owns (low halves only) holds no dict of
    them: the side array is sized by its ranges at creation."""
    g = make_guest()
    ggtt = g.vgpu.ggtt
    side = ggtt._partial
    assert side.dtype == np.uint8 and side.size == ggtt.low_count + ggtt.high_count
    res = g.vgpu.resources
    for i in range(res.low_gm_size >> PAGE_SHIFT):
        g.w(regs.GTT_START_OFFSET + ((res.low_gm_base >> PAGE_SHIFT) + i) * 8, 0x1000 | 1, 4)
    assert ggtt._partial is side and int(np.count_nonzero(side)) == res.low_gm_size >> PAGE_SHIFT
    assert ggtt.counters.parked == res.low_gm_size >> PAGE_SHIFT


def test_msis_coalesce_in_the_guest(make_guest: Callable[..., Guest]) -> None:
    """Sim's guest-side queue: the same message many times is one; distinct messages
    beyond MAX_PENDING_MSIS are dropped and counted."""
    g = make_guest()
    mpt, h = g.gvt.mpt, g.vgpu.handle
    for _ in range(10_000):
        mpt.inject_msi(h, 0xFEE0_0000, 0x41)
    assert g.vm.pending_msis == 1 and g.vm.msis_coalesced == 9_999
    for data in range(2 * MAX_PENDING_MSIS):
        mpt.inject_msi(h, 0xFEE0_0000, 0x100 + data)
    assert g.vm.pending_msis == MAX_PENDING_MSIS
    assert g.vm.msis_dropped == MAX_PENDING_MSIS + 1
    assert g.port.wait_msi(0) == Msi(0xFEE0_0000, 0x41)  # oldest first


def test_master_irq_storm_holds_one_msi(make_guest: Callable[..., Guest]) -> None:
    """The review's trigger (it used 200,000): rewrites of GEN8_MASTER_IRQ with an event
    pending hold one MSI, however many."""
    from gvt_core.device.interrupt import IrqEvent

    g = make_guest()
    g.enable_msi()
    g.w(regs.GEN8_GT_ISR_BASE + regs.IRQ_IER, 0xFFFF_FFFF)
    g.w(regs.GEN8_GT_ISR_BASE + regs.IRQ_IMR, 0)
    with g.vgpu.lock:
        g.vgpu.irq.raise_event(IrqEvent.RCS_MI_USER_INTERRUPT)
    write = g.port.mmio_write
    gpa = g.bar0 + regs.GEN8_MASTER_IRQ
    for _ in range(50_000):
        write(gpa, regs.GEN8_MASTER_IRQ_CONTROL, 4)
    assert g.vm.pending_msis == 1


def test_ppgtt_leaf_side_arrays_are_owned_by_each_shadow() -> None:
    """Bulk shadowing fills 512 PTs from one batch; dropping 511 of them must free
    their side arrays (no surviving shadow may keep the batch matrix alive)."""
    st = open_stack("forwarded", "iommu", mem=16 * regs.MiB)
    try:
        pml4, pdp, pd, first_pt, data = 16, 17, 18, 32, 2048
        for gfn in (pml4, pdp, pd):
            st.zero_page(gfn)
        ents = np.zeros(512, dtype=np.uint64)
        for i in range(512):
            pt = first_pt + i
            st.port.mem_write(pt << 12, ((np.arange(4, dtype=np.uint64) + np.uint64(data + i))
                                         << np.uint64(12) | np.uint64(P)).astype("<u8").tobytes())
            ents[i] = (pt << 12) | P
        st.port.mem_write(pd << 12, ents.astype("<u8").tobytes())
        st.set_entry(pml4, 0, (pdp << 12) | P)
        st.set_entry(pdp, 0, (pd << 12) | P)
        st.g2v(True, 4, (pml4 << 12, 0, 0, 0))
        pts = [sp for sp in st.mgr.shadow_pages() if sp.kind is TableKind.PT]
        assert len(pts) == 512
        for sp in pts:
            assert sp.dma is not None and sp.mapped is not None
            assert sp.dma.base is None and sp.mapped.base is None, "a view of a batch matrix"
        # the guest clears every PD entry but the first: 511 PTs die
        st.port.mem_write((pd << 12) + 8, bytes(8 * 511))
        st.mgr.sync()
        live = [sp for sp in st.mgr.shadow_pages() if sp.kind is TableKind.PT]
        assert len(live) == 1 and live[0].dma.base is None
        st.g2v(False, 4, (pml4 << 12, 0, 0, 0))
    finally:
        st.close()


def test_refused_maps_are_visible_to_the_guest_that_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from gvt_core.guest.driver import GuestDriver
    from gvt_core.mpt.hookspecs import hookimpl

    class Refusing(SimBackend):
        @hookimpl
        def dma_map_guest_page(self, handle: Any, gfn: int, size: int) -> int:
            vm = self._vm(handle)
            if vm.dma.maps >= 32:
                raise DmaMapError(f"guest {vm.vm_id} is out of its 32-page quota")
            return vm.dma.map(gfn, size)

    gvt = Gvt(register_plugin(Refusing(), "sim"))
    try:
        hostile_vm = gvt.create_vm(64 << 20, "hostile")
        victim_vm = gvt.create_vm(64 << 20, "victim")
        caplog.set_level(logging.WARNING, logger="gvt_core")
        hostile = gvt.create_vgpu(gvt.smallest_type, hostile_vm)
        drv = GuestDriver(hostile_vm.port(), fb_width=64, fb_height=64)
        rep = drv.load()
        maps_after_load = hostile_vm.held().dma_maps
        for i in range(100):
            off = regs.GTT_START_OFFSET + ((rep.nonmappable.base >> 12) + 16 + i) * 8
            drv.mmio_write(off, ((4096 + i) << 12) | regs.GEN8_PAGE_PRESENT, 8)
        assert hostile_vm.held().dma_maps == 32
        assert hostile.stats.dma_map_failures == 100 - (32 - maps_after_load)
        logged = [r for r in caplog.records if "cannot be mapped" in r.getMessage()]
        assert len(logged) == 1 and f"vGPU {hostile.id}" in logged[0].getMessage()
        victim = gvt.create_vgpu(gvt.smallest_type, victim_vm)
        GuestDriver(victim_vm.port(), fb_width=64, fb_height=64).load()
        assert victim.stats.dma_map_failures == 0
    finally:
        gvt.close()
        for vm in (hostile_vm, victim_vm):
            vm.close()


def test_guest_triggered_log_lines_are_bounded(
    make_guest: Callable[..., Guest], caplog: pytest.LogCaptureFixture
) -> None:
    """A guest toggling PVINFO's display_ready in a loop (each change is logged, as
    the kernel's uevent) gets MAX_LOG_REPEATS lines, not one per write; a new vGPU
    with the same id is heard again."""
    g = make_guest()
    caplog.set_level(logging.INFO, logger="gvt_core")
    ready = regs.VGT_PVINFO_PAGE + regs.PVINFO_DISPLAY_READY
    for i in range(400):
        g.w(ready, i & 1)
    lines = [r for r in caplog.records if "DISPLAY_READY" in r.getMessage()]
    assert len(lines) == limits.MAX_LOG_REPEATS
    assert "not logged" in lines[-1].getMessage()
    assert g.vgpu.mmio.pvinfo.counters.display_ready_changes >= 399  # counted, every one
    vgpu_id = g.vgpu.id
    g.gvt.destroy_vgpu(g.vgpu)
    g.vm.close()
    again = make_guest()
    assert again.vgpu.id == vgpu_id
    caplog.clear()
    again.w(ready, 1)
    assert [r for r in caplog.records if "DISPLAY_READY" in r.getMessage()]


def test_one_guest_cannot_take_every_out_of_sync_slot(
    sim_gvt: Gvt, make_guest: Callable[..., Guest]
) -> None:
    """The out-of-sync pool is the host's; each vGPU holds at most its share."""
    from gvt_core.device.memory.oos import OOS_SHARES, OosPool
    from gvt_core.device.memory.ppgtt import host_config
    from gvt_core.guest.driver import notify_ppgtt

    host_config(sim_gvt).oos_pool = OosPool(capacity=2 * OOS_SHARES)  # a share of 2
    a, b = make_guest(), make_guest()

    def go_oos(g: Guest, pts: int) -> Any:
        pml4, pdp, pd, first_pt = 64, 65, 66, 80
        for gfn in (pml4, pdp, pd, *range(first_pt, first_pt + pts)):
            g.port.mem_write(gfn << 12, bytes(4096))
        g.port.store(pml4 << 12, (pdp << 12) | P, 8)
        g.port.store(pdp << 12, (pd << 12) | P, 8)
        for i in range(pts):
            g.port.store((pd << 12) + 8 * i, ((first_pt + i) << 12) | P, 8)
        notify_ppgtt(g.port, g.bar0, 4, (pml4 << 12, 0, 0, 0), True)
        for i in range(pts):  # two trapped stores each: the PT goes out of sync
            g.port.store((first_pt + i) << 12, (4096 << 12) | P, 8)
            g.port.store(((first_pt + i) << 12) + 8, (4097 << 12) | P, 8)
        return g.vgpu.ppgtt

    mgr_a = go_oos(a, 6)
    assert mgr_a.out_of_sync_count <= 2 and mgr_a.stats.oos_entered >= 6
    assert mgr_a.stats.oos_reclaimed >= 4  # it recycled its own slots
    mgr_b = go_oos(b, 2)
    assert mgr_b.out_of_sync_count == 2 and mgr_b.stats.oos_pool_empty == 0
