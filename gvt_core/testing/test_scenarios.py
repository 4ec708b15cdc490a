"""The scenario suite: the guest-driver model on a real vGPU, on every backend.

Each scenario builds a :class:`~gvt_core.device.gvt.Gvt` host on the backend
under test, creates vGPUs for guests the backend launches, and drives them
only through the guest's :class:`~gvt_core.guest.port.GuestPort`. What is
checked comes from the device model's and the simulated GPU's state, never
from the backend's internals, so the same scenarios hold every backend to the
same behaviour. Run them on a backend with::

    pytest --pyargs gvt_core.testing --gvt-backend NAME
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from gvt_core.device.gvt import Gvt
from gvt_core.device.interrupt import IrqEvent
from gvt_core.device.vgpu import Vgpu
from gvt_core.guest.driver import MSI_ADDRESS, MSI_VECTOR, GuestDriver
from gvt_core.guest.port import GuestPort, GuestVm
from gvt_core.hw import regs
from gvt_core.mpt.ops import Msi
from gvt_core.testing.guests import guest_host, release_guests

GUEST_MEM = 64 << 20
#: small framebuffers keep backends with real exits (one per GGTT write) quick.
FB_W, FB_H = 128, 64


@attrs.define(eq=False)
class Guest:
    vm: GuestVm
    vgpu: Vgpu
    port: GuestPort
    driver: GuestDriver


@pytest.fixture
def gvt_host(gvt_backend_name: str, gvt_backend_options: dict[str, Any]) -> Iterator[Gvt]:
    with guest_host(gvt_backend_name, gvt_backend_options) as gvt:
        yield gvt


@pytest.fixture
def new_guest(gvt_host: Gvt) -> Iterator[Any]:
    """Factory: a VM with a vGPU of the smallest type (or ``type_name``)."""
    vms: list[GuestVm] = []

    def make(type_name: str | None = None, *, load: bool = True) -> Guest:
        name = type_name or gvt_host.smallest_type
        vm = gvt_host.create_vm(GUEST_MEM, name=f"scenario{len(vms) + 1}")
        vms.append(vm)
        vgpu = gvt_host.create_vgpu(name, vm)
        driver = GuestDriver(vm.port(), fb_width=FB_W, fb_height=FB_H)
        if load:
            driver.load()
        return Guest(vm, vgpu, vm.port(), driver)

    yield make
    release_guests(gvt_host, vms)


def test_guest_driver_loads_and_sees_its_own_resources(new_guest: Any) -> None:
    g: Guest = new_guest()
    rep = g.driver.report
    assert rep is not None
    res = g.vgpu.resources
    assert rep.vgt_id == g.vgpu.id
    assert rep.caps & regs.VGT_CAPS_FULL_PPGTT
    assert (rep.mappable.base, rep.mappable.size) == (res.low_gm_base, res.low_gm_size)
    assert (rep.nonmappable.base, rep.nonmappable.size) == (res.high_gm_base, res.high_gm_size)
    assert rep.fences == len(res.fences)
    assert g.vgpu.pv_notified
    assert g.vgpu.stats.ggtt_to_scratch == 0
    assert g.vgpu.stats.bad_accesses == 0


def test_pvinfo_page_is_byte_exact(new_guest: Any) -> None:
    g: Guest = new_guest()
    page = g.driver.read_pvinfo()
    magic, major, minor, vgt_id, caps = struct.unpack_from("<QHHII", page, 0)
    assert (magic, major, minor, vgt_id) == (regs.VGT_MAGIC, 1, 0, g.vgpu.id)
    assert caps == regs.VGT_CAPS_FULL_PPGTT | regs.VGT_CAPS_HWSP_EMULATION | regs.VGT_CAPS_HUGE_GTT
    res = g.vgpu.resources
    assert struct.unpack_from("<5I", page, 0x40) == (
        res.low_gm_base, res.low_gm_size, res.high_gm_base, res.high_gm_size, len(res.fences)
    )
    assert page[0x14:0x40] == bytes(0x2C)
    assert struct.unpack_from("<I", page, regs.PVINFO_DISPLAY_READY)[0] == 1


def test_gpu_reads_guest_memory_through_the_ggtt(new_guest: Any, gvt_host: Gvt) -> None:
    g: Guest = new_guest()
    rep = g.driver.report
    assert rep is not None
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(3 * regs.GTT_PAGE_SIZE))
    g.port.mem_write(rep.framebuffer_gpa, pattern)
    assert gvt_host.gpu.gm_read(rep.framebuffer_gm, len(pattern)) == pattern
    ring = bytes(range(256)) * 16
    g.port.mem_write(rep.ring_gpa + regs.GTT_PAGE_SIZE, ring)
    assert gvt_host.gpu.gm_read(rep.ring_gm + regs.GTT_PAGE_SIZE, len(ring)) == ring


def test_cpu_reaches_its_own_aperture_slice_through_bar2(new_guest: Any, gvt_host: Gvt) -> None:
    """BAR2 shows the vGPU's slice of the aperture (trapped or mapped, as the backend
    does it) at its graphics addresses, and nothing else: the framebuffer the guest
    mapped through its GGTT is reachable by CPU loads and stores through BAR2."""
    a: Guest = new_guest()
    b: Guest = new_guest()
    ra, rb = a.driver.report, b.driver.report
    assert ra is not None and rb is not None
    word = 0x1122_3344_5566_7788
    fb = ra.bar2 + ra.framebuffer_gm
    a.port.mmio_write(fb + 0x18, word, 8)
    assert gvt_host.gpu.gm_read(ra.framebuffer_gm + 0x18, 8) == word.to_bytes(8, "little")
    assert a.port.mem_read(ra.framebuffer_gpa + 0x18, 8) == word.to_bytes(8, "little")
    a.port.mem_write(ra.framebuffer_gpa + regs.GTT_PAGE_SIZE + 4, b"\xa1\xb2\xc3\xd4")
    assert a.port.mmio_read(fb + regs.GTT_PAGE_SIZE + 4, 4) == 0xD4C3_B2A1
    # the host's part of the aperture and guest B's slice are not A's: nothing there
    for gm in (0x1000, rb.framebuffer_gm):
        before = gvt_host.gpu.gm_read(gm, 4)
        a.port.mmio_write(ra.bar2 + gm, 0x5A5A_5A5A, 4)
        assert a.port.mmio_read(ra.bar2 + gm, 4) == 0xFFFF_FFFF
        assert gvt_host.gpu.gm_read(gm, 4) == before
    # B sees its own framebuffer through its own BAR2, not A's store
    assert b.port.mmio_read(rb.bar2 + rb.framebuffer_gm + 0x18, 8) != word


def test_the_guest_probes_a_bdw_gt2_and_resets_an_engine(new_guest: Any) -> None:
    """What i915 reads while probing: the fuses give a GT2's 24 EUs; an engine reset
    request is answered READY_TO_RESET, then GDRST completes."""
    g: Guest = new_guest()
    rep = g.driver.report
    assert rep is not None
    assert (rep.sseu.slice_mask, rep.sseu.subslice_mask, rep.sseu.eu_total) == (1, 0b111, 24)
    resets = g.vgpu.stats.resets
    g.driver.reset_engine(regs.BLT_RING_BASE)
    assert g.vgpu.stats.resets == resets + 1


def test_msi_reaches_the_guest_as_programmed(new_guest: Any) -> None:
    g: Guest = new_guest()
    assert g.port.wait_msi(0.05) is None
    with g.vgpu.lock:
        g.vgpu.irq.raise_event(IrqEvent.RCS_MI_USER_INTERRUPT)
    assert g.port.wait_msi(5.0) == Msi(MSI_ADDRESS, MSI_VECTOR)
    iir = g.driver.mmio_read(regs.GEN8_GT_ISR_BASE + regs.IRQ_IIR)
    assert iir & 1
    # the guest acknowledges (IIR is write-1-to-clear); then a masked event
    # sets nothing and sends nothing
    g.driver.mmio_write(regs.GEN8_GT_ISR_BASE + regs.IRQ_IIR, iir)
    assert g.driver.mmio_read(regs.GEN8_GT_ISR_BASE + regs.IRQ_IIR) == 0
    with g.vgpu.lock:
        g.vgpu.irq.raise_event(IrqEvent.BCS_MI_USER_INTERRUPT)
    assert g.port.wait_msi(0.05) is None


def test_two_guests_cannot_touch_each_others_ggtt(new_guest: Any, gvt_host: Gvt) -> None:
    a: Guest = new_guest()
    b: Guest = new_guest()
    ra, rb = a.driver.report, b.driver.report
    assert ra is not None and rb is not None
    before = gvt_host.gpu.ggtt.copy()
    # guest B aims a PTE at guest A's framebuffer slot: dropped, reads back 0
    off = regs.GTT_START_OFFSET + (ra.framebuffer_gm >> regs.GTT_PAGE_SHIFT) * regs.GTT_ENTRY_SIZE
    b.driver.mmio_write(off, rb.framebuffer_gpa | regs.GEN8_PAGE_PRESENT, 8)
    assert b.driver.mmio_read(off, 8) == 0
    assert (gvt_host.gpu.ggtt == before).all()
    assert a.driver.mmio_read(off, 8) == ra.framebuffer_gpa | regs.GEN8_PAGE_PRESENT


def test_pte_outside_guest_ram_lands_on_scratch(new_guest: Any, gvt_host: Gvt) -> None:
    g: Guest = new_guest()
    rep = g.driver.report
    assert rep is not None
    gm = rep.framebuffer_gm
    off = regs.GTT_START_OFFSET + (gm >> regs.GTT_PAGE_SHIFT) * regs.GTT_ENTRY_SIZE
    g.driver.mmio_write(off, (1 << 44) | regs.GEN8_PAGE_PRESENT, 8)
    assert int(gvt_host.gpu.ggtt[gm >> regs.GTT_PAGE_SHIFT]) == gvt_host.gpu.scratch_pte
    assert g.vgpu.stats.ggtt_to_scratch >= 1


def test_ppgtt_announcement_reaches_the_ppgtt_owner(new_guest: Any) -> None:
    g: Guest = new_guest()
    counts_before = _g2v_creates(g.vgpu)
    # a 4-level table whose PML4 is an empty, page-aligned guest page
    pml4 = 32 << 20
    g.port.mem_write(pml4, bytes(regs.GTT_PAGE_SIZE))
    g.driver.notify_ppgtt(4, (pml4, 0, 0, 0))
    assert _g2v_creates(g.vgpu) == counts_before + 1
    g.driver.notify_ppgtt(4, (pml4, 0, 0, 0), create=False)


def _g2v_creates(vgpu: Vgpu) -> int:
    return int(vgpu.ppgtt.counts["l4_create"])


def test_destroy_releases_everything_the_backend_held(gvt_host: Gvt, new_guest: Any) -> None:
    frames_before = gvt_host.gpu.sysmem.count()
    g: Guest = new_guest()
    assert g.vm.held().dma_maps > 0
    gvt_host.destroy_vgpu(g.vgpu)
    assert g.vm.held().total == 0
    assert gvt_host.gpu.sysmem.count() == frames_before


def test_dmlr_reset_restores_the_golden_state(new_guest: Any, gvt_host: Gvt) -> None:
    g: Guest = new_guest()
    rep = g.driver.report
    assert rep is not None
    gvt_host.reset_vgpu(g.vgpu, dmlr=True)
    # config space is back to power-on: memory decoding off, BARs unprogrammed
    assert not g.port.cfg_read(regs.PCI_COMMAND, 2) & regs.PCI_COMMAND_MEMORY
    # the guest's GGTT entries are gone from the host GGTT (all scratch)
    first = rep.framebuffer_gm >> regs.GTT_PAGE_SHIFT
    ggtt = gvt_host.gpu.ggtt
    assert all(int(x) == gvt_host.gpu.scratch_pte for x in ggtt[first : first + rep.framebuffer_pages])
    assert g.vm.held().dma_maps == 0
    # and the guest can load its driver again
    again = GuestDriver(g.port, fb_width=FB_W, fb_height=FB_H).load()
    assert again.vgt_id == g.vgpu.id
