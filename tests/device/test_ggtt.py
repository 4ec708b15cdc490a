"""GGTT emulation (facts 4.1, 4.2, 4.6, 4.7, 4.8): guest PTE writes, host shadows, the GPU's view."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gvt_core.errors import DmaFault, DmaMapError
from gvt_core.hw import regs

Guest = Any  # tests/device/conftest.py's Guest
GTT = regs.GTT_START_OFFSET
P = regs.GEN8_PAGE_PRESENT


@pytest.fixture(params=["iommu", "identity"])
def sim_dma(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def guest(make_guest: Callable[..., Guest]) -> Guest:
    return make_guest()


def _entry(gm: int) -> int:
    return GTT + (gm >> 12) * 8


def _scratch(guest: Guest) -> int:
    return guest.gvt.gpu.scratch_pte


def _host(guest: Guest, gm: int) -> int:
    return int(guest.gvt.gpu.ggtt[gm >> 12])


def test_creation_points_the_vgpus_ranges_at_scratch(guest: Guest) -> None:
    res, ggtt = guest.vgpu.resources, guest.gvt.gpu.ggtt
    for base, size in ((res.low_gm_base, res.low_gm_size), (res.high_gm_base, res.high_gm_size)):
        assert (ggtt[base >> 12 : (base + size) >> 12] == _scratch(guest)).all()
    assert guest.vgpu.ggtt.virtual.size == (res.low_gm_size + res.high_gm_size) >> 12


def test_gpu_reads_the_guests_framebuffer_through_the_ggtt(guest: Guest) -> None:
    gm = guest.vgpu.resources.low_gm_base + 0x20_0000
    fb_gpa = 0x30_0000
    pixels = os.urandom(4 * 4096)
    guest.port.mem_write(fb_gpa, pixels)
    for i in range(4):
        guest.ggtt_w(gm + i * 4096, (fb_gpa + i * 4096) | P)
    assert guest.gvt.gpu.gm_read(gm, len(pixels)) == pixels
    assert guest.gvt.gpu.gm_read(gm + 100, 5000) == pixels[100:5100]
    assert guest.ggtt_r(gm + 4096) == (fb_gpa + 4096) | P
    assert guest.vm.held().dma_maps == 4
    assert guest.vgpu.ggtt.mapped == 4
    # a guest write after the mapping is what the GPU reads next
    guest.port.mem_write(fb_gpa, b"\x01\x02\x03\x04")
    assert guest.gvt.gpu.gm_read(gm, 4) == b"\x01\x02\x03\x04"


def test_unmapped_entry_shows_scratch_never_the_old_page(guest: Guest) -> None:
    gm = guest.vgpu.resources.high_gm_base + 0x5000
    secret = b"\xa5" * 4096
    guest.port.mem_write(0x1000, secret)
    guest.ggtt_w(gm, 0x1000 | P)
    assert guest.gvt.gpu.gm_read(gm, 4096) == secret
    guest.ggtt_w(gm, 0x1000)  # not present
    assert _host(guest, gm) == _scratch(guest)
    seen = guest.gvt.gpu.gm_read(gm, 4096)
    assert seen != secret
    scratch_frame = guest.gvt.gpu.scratch_frame
    assert seen == bytes(guest.gvt.gpu.sysmem.page(scratch_frame))
    assert guest.vm.held().dma_maps == 0


def test_rewriting_an_entry_drops_the_previous_mapping(guest: Guest) -> None:
    gm = guest.vgpu.resources.low_gm_base
    guest.port.mem_write(0x2000, b"A" * 4096)
    guest.port.mem_write(0x3000, b"B" * 4096)
    guest.ggtt_w(gm, 0x2000 | P)
    old_pte = _host(guest, gm)
    guest.ggtt_w(gm, 0x3000 | P)
    assert guest.gvt.gpu.gm_read(gm, 4) == b"BBBB"
    assert guest.vm.held().dma_maps == 1
    # the old bus address no longer reaches guest memory (or reaches another page)
    if guest.vm.dma_mode.value == "identity":
        with pytest.raises(DmaFault):
            guest.gvt.gpu.sysmem.read(old_pte & regs.GTT_ADDR_MASK, 4)
    # same page again: mapped once more, the old reference released
    guest.ggtt_w(gm, 0x3000 | P)
    assert guest.vm.held().dma_maps == 1


def test_the_host_entry_is_the_guests_with_the_address_replaced(guest: Guest) -> None:
    gm = guest.vgpu.resources.low_gm_base + 0x1000
    flags = 0xFFE | P | (0x3FF << 52)
    guest.ggtt_w(gm, 0x4000 | flags)
    host = _host(guest, gm)
    assert host & ~regs.GTT_ADDR_MASK == flags  # upstream copies the entry (facts 0.1 #3)
    assert guest.gvt.gpu.gm_read(gm, 8) == guest.port.mem_read(0x4000, 8)  # the guest's page
    assert guest.ggtt_r(gm) == 0x4000 | flags  # the guest's view
    outside = guest.port.mem_size + 0x10_0000  # no guest RAM: scratch, the flags kept
    guest.ggtt_w(gm, outside | flags)
    assert _host(guest, gm) == (_scratch(guest) & regs.GTT_ADDR_MASK) | flags


def test_split_writes_park_until_the_other_half_arrives(guest: Guest) -> None:
    gm = guest.vgpu.resources.low_gm_base + 0x3000
    off = _entry(gm)
    guest.port.mem_write(0x7000, b"C" * 4096)
    guest.ggtt_w(gm, 0x7000 | P)
    guest.port.mem_write(0x9000, b"D" * 4096)
    target = 0x9000 | P
    guest.w(off, target & 0xFFFF_FFFF, 4)  # low half first
    assert _host(guest, gm) == _scratch(guest)  # parked, the old page is gone
    assert guest.r(off, 4) == target & 0xFFFF_FFFF
    assert guest.vm.held().dma_maps == 0
    guest.w(off, target & 0xFFFF_FFFF, 4)  # the same half again: still parked
    assert _host(guest, gm) == _scratch(guest)
    guest.w(off + 4, target >> 32, 4)
    assert guest.gvt.gpu.gm_read(gm, 4) == b"DDDD"
    # high half first works the same way
    guest.w(off + 4, 0, 4)
    assert _host(guest, gm) == _scratch(guest)
    guest.w(off, 0x7000 | P, 4)
    assert guest.gvt.gpu.gm_read(gm, 4) == b"CCCC"
    assert guest.vgpu.ggtt.counters.parked == 3


def test_entries_outside_the_vgpus_ranges_are_dropped(make_guest: Callable[..., Guest]) -> None:
    a, b = make_guest(), make_guest()
    gm_b = b.vgpu.resources.low_gm_base
    b.port.mem_write(0x5000, b"B" * 4096)
    b.ggtt_w(gm_b, 0x5000 | P)
    before = np.array(a.gvt.gpu.ggtt)
    for gm in (0, gm_b, a.vgpu.resources.low_gm_base - 4096, regs.DEFAULT_APERTURE_SIZE,
               a.vgpu.resources.high_gm_base - 4096, b.vgpu.resources.high_gm_base):
        a.ggtt_w(gm, 0x5000 | P)
        assert a.ggtt_r(gm) == 0
    assert (a.gvt.gpu.ggtt == before).all()
    assert a.vgpu.ggtt.counters.outside_writes == 6
    assert b.ggtt_r(gm_b) == 0x5000 | P


def test_invalid_frame_is_shadowed_to_scratch_and_counted(guest: Guest) -> None:
    gm = guest.vgpu.resources.low_gm_base + 0x8000
    beyond_ram = guest.vm.mem_size + 0x1000
    guest.ggtt_w(gm, beyond_ram | P)
    assert _host(guest, gm) == _scratch(guest)
    assert guest.vgpu.stats.ggtt_to_scratch == 1
    assert guest.ggtt_r(gm) == beyond_ram | P
    assert guest.vgpu.ggtt.gma_to_gpa(gm) == beyond_ram  # the guest's own view


def test_map_failure_is_shadowed_to_scratch(guest: Guest, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(handle: Any, gfn: int, size: int) -> int:
        raise DmaMapError("IOMMU full")

    monkeypatch.setattr(guest.vgpu.mpt, "dma_map_guest_page", refuse)
    gm = guest.vgpu.resources.low_gm_base
    guest.ggtt_w(gm, 0x1000 | P)
    assert _host(guest, gm) == _scratch(guest)
    assert guest.vgpu.stats.ggtt_to_scratch == 1


def test_bad_ggtt_accesses(guest: Guest) -> None:
    gm = guest.vgpu.resources.low_gm_base
    off = _entry(gm)
    guest.ggtt_w(gm, 0x1000 | P)
    assert guest.r(off, 2) == 0xFFFF
    assert guest.r(off + 4, 8) == 0xFFFF_FFFF_FFFF_FFFF
    guest.w(off, 0, 2)
    guest.w(off + 4, 0, 8)
    guest.w(off + 1, 0, 1)
    assert guest.ggtt_r(gm) == 0x1000 | P
    assert guest.vgpu.stats.bad_accesses == 5


def test_gma_to_gpa(guest: Guest) -> None:
    res = guest.vgpu.resources
    gm = res.high_gm_base + 0x40_0000
    guest.ggtt_w(gm, 0x12_3000 | P)
    ggtt = guest.vgpu.ggtt
    assert ggtt.gma_to_gpa(gm + 0x456) == 0x12_3456
    assert ggtt.gma_to_gpa(gm + 4096) is None  # never written: not present
    assert ggtt.gma_to_gpa(res.low_gm_base - 1) is None  # not the vGPU's
    assert ggtt.gma_to_gpa(-1) is None and ggtt.gma_to_gpa(regs.GM_TOTAL) is None


def test_reset_and_destroy_drop_everything(make_guest: Callable[..., Guest]) -> None:
    guest = make_guest()
    res = guest.vgpu.resources
    for i in range(8):
        guest.ggtt_w(res.low_gm_base + i * 4096, (i * 4096) | P)
        guest.ggtt_w(res.high_gm_base + i * 4096, (i * 4096) | P)
    guest.w(_entry(res.low_gm_base + 0x10_0000), 0x1000 | P, 4)  # a parked half
    assert guest.vm.held().dma_maps == 8
    guest.vgpu.ggtt.reset()
    assert guest.vm.held().dma_maps == 0 and guest.vgpu.ggtt.mapped == 0
    assert guest.ggtt_r(res.low_gm_base) == 0
    assert _host(guest, res.high_gm_base) == _scratch(guest)
    guest.ggtt_w(res.low_gm_base, 0x1000 | P)
    assert guest.vm.held().dma_maps == 1
    guest.gvt.destroy_vgpu(guest.vgpu)
    assert guest.vm.held().total == 0
    assert _host(guest, res.low_gm_base) == _scratch(guest)


def test_failsafe_ggtt_writes_touch_only_the_virtual_table(guest: Guest) -> None:
    gm = guest.vgpu.resources.low_gm_base
    guest.vgpu.enter_failsafe("test")
    guest.ggtt_w(gm, 0x1000 | P)
    assert guest.ggtt_r(gm) == 0x1000 | P
    assert _host(guest, gm) == _scratch(guest)
    assert guest.vm.held().dma_maps == 0
