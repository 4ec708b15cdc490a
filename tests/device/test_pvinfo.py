"""The PVINFO page (facts 3): byte-exact layout, guest-writable fields, g2v notifications."""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from gvt_core.hw import regs

Guest = Any  # tests/device/conftest.py's Guest
PAGE = 0x78000

# struct vgt_if, coded from the facts table (3.2), little endian:
# magic, version_major, version_minor, vgt_id, vgt_caps, rsv1[11],
# avail_rs {mappable base, size, nonmappable base, size, fence_num}, rsv2[3],
# rsv3[0x200 - 24], rsv4, display_ready, rsv5[4], g2v_notify, rsv6[5],
# cursor_x_hot, cursor_y_hot, pdp[4] {lo, hi}, execlist desc lo, hi, rsv7[0x200 - 24]
VGT_IF = struct.Struct("<QHHII11I5I3I488III4II5III8III488I")
FIELDS = (["magic", "major", "minor", "vgt_id", "caps"] + ["rsv1"] * 11
          + ["m_base", "m_size", "nm_base", "nm_size", "fence_num"] + ["rsv2"] * 3
          + ["rsv3"] * 488 + ["rsv4", "display_ready"] + ["rsv5"] * 4 + ["g2v_notify"]
          + ["rsv6"] * 5 + ["x_hot", "y_hot"] + ["pdp"] * 8 + ["desc_lo", "desc_hi"]
          + ["rsv7"] * 488)


def _read_page(guest: Guest) -> bytes:
    return b"".join(
        guest.r(PAGE + off, 8).to_bytes(8, "little") for off in range(0, 0x1000, 8)
    )


class RecordingOwner:
    """A PpgttOwner that only records what PVINFO hands it."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.last_roots: tuple[int, int, int, int] | None = None

    def g2v_create(self, levels: int, roots: tuple[int, int, int, int]) -> None:
        self.counts[f"l{levels}_create"] += 1
        self.last_roots = roots

    def g2v_destroy(self, levels: int, roots: tuple[int, int, int, int]) -> None:
        self.counts[f"l{levels}_destroy"] += 1
        self.last_roots = roots

    def invalidate(self) -> None:
        self.counts["invalidate"] += 1

    def release(self) -> None:
        self.counts["release"] += 1


@pytest.fixture
def guest(make_guest: Callable[..., Guest]) -> Guest:
    g = make_guest()
    g.vgpu.ppgtt.release()
    g.vgpu.ppgtt = RecordingOwner()
    return g


def test_layout_constants_match_the_struct() -> None:
    assert VGT_IF.size == 0x1000
    assert len(FIELDS) == len(VGT_IF.unpack(bytes(0x1000)))


def test_page_is_byte_exact(make_guest: Callable[..., Guest]) -> None:
    make_guest()  # the second vGPU gets id 2 and the next slices
    guest = make_guest("GVTg_V4_4")
    res = guest.vgpu.resources
    expect = dict.fromkeys(FIELDS, 0)
    expect.update(
        magic=0x4776544776544776, major=1, minor=0, vgt_id=guest.vgpu.id,
        caps=(1 << 2) | (1 << 3) | (1 << 4),
        m_base=res.low_gm_base, m_size=res.low_gm_size,
        nm_base=res.high_gm_base, nm_size=res.high_gm_size, fence_num=len(res.fences),
        x_hot=0xFFFF_FFFF, y_hot=0xFFFF_FFFF,
    )
    values = [expect[f] for f in FIELDS]
    assert guest.vgpu.id == 2
    assert _read_page(guest) == VGT_IF.pack(*values)
    assert res.low_gm_size == 128 * regs.MiB and res.high_gm_size == 512 * regs.MiB


def test_magic_is_vgtvgtvg_in_ascii(guest: Guest) -> None:
    raw = guest.r(PAGE, 8).to_bytes(8, "little")
    assert raw == b"vGTvGTvG"
    assert guest.r(PAGE + 8, 2) == 1 and guest.r(PAGE + 0xA, 2) == 0


def test_any_read_sets_pv_notified(guest: Guest) -> None:
    assert not guest.vgpu.pv_notified
    guest.r(PAGE + 0x800, 1)
    assert guest.vgpu.pv_notified


def test_a_write_does_not_make_the_guest_pv_aware(guest: Guest) -> None:
    guest.w(PAGE + regs.PVINFO_CURSOR_X_HOT, 3)
    assert not guest.vgpu.pv_notified


def test_host_fields_are_read_only(guest: Guest) -> None:
    before = _read_page(guest)
    for off in (0x0, 0x4, 0x8, 0xC, 0x10, 0x14, 0x40, 0x44, 0x48, 0x4C, 0x50, 0x5C):
        guest.w(PAGE + off, 0x5A5A_5A5A)
    guest.w(PAGE + 0x40, 0, 8)
    assert _read_page(guest) == before
    assert guest.vgpu.mmio.pvinfo.counters.host_field_writes == 14
    assert not guest.vgpu.failsafe


def test_other_reserved_writes_are_dropped_and_counted(guest: Guest) -> None:
    before = _read_page(guest)
    for off in (0x60, 0x7FC, 0x800, 0x81C, 0x82C, 0x860, 0xFFC):
        guest.w(PAGE + off, 0xFFFF_FFFF)
    assert _read_page(guest) == before
    assert guest.vgpu.mmio.pvinfo.counters.reserved_writes == 7
    assert not guest.vgpu.failsafe


@pytest.mark.parametrize("off", [0x808, 0x80C, 0x810, 0x814])
def test_rsv5_write_is_a_resource_shortage(guest: Guest, off: int) -> None:
    guest.w(PAGE + off, 1)
    assert guest.vgpu.failsafe
    assert "insufficient" in guest.vgpu.failsafe_reason


def test_guest_fields_are_stored(guest: Guest) -> None:
    guest.w(PAGE + regs.PVINFO_CURSOR_X_HOT, 7)
    guest.w(PAGE + regs.PVINFO_CURSOR_Y_HOT, 9)
    guest.w(PAGE + regs.PVINFO_EXECLIST_CTX_DESC_LO, 0x1000_0019, 4)
    guest.w(PAGE + regs.PVINFO_EXECLIST_CTX_DESC_HI, 0x42, 4)
    assert guest.r(PAGE + regs.PVINFO_CURSOR_X_HOT, 8) == (9 << 32) | 7
    assert guest.vgpu.mmio.pvinfo.execlist_context_descriptor == 0x42_1000_0019


def test_display_ready_is_stored_and_announced(
    guest: Guest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gvt_core.device.registers.pvinfo")
    guest.w(PAGE + regs.PVINFO_DISPLAY_READY, 1)
    guest.w(PAGE + regs.PVINFO_DISPLAY_READY, 1)
    assert guest.r(PAGE + regs.PVINFO_DISPLAY_READY) == 1
    assert guest.vgpu.mmio.pvinfo.display_ready == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"vGPU {guest.vgpu.id}: GVT_DISPLAY_READY=1"]
    assert guest.vgpu.mmio.pvinfo.counters.display_ready_changes == 1


def _announce(guest: Guest, roots: tuple[int, int, int, int], code: int) -> None:
    for i, root in enumerate(roots):
        guest.w(PAGE + regs.PVINFO_PDP0_LO + 8 * i, root & 0xFFFF_FFFF)
        guest.w(PAGE + regs.PVINFO_PDP0_LO + 8 * i + 4, root >> 32)
    guest.w(PAGE + regs.PVINFO_G2V_NOTIFY, code)


@pytest.mark.parametrize(("code", "kind"), [(2, "l3_create"), (3, "l3_destroy"),
                                            (4, "l4_create"), (5, "l4_destroy")])
def test_g2v_ppgtt_notifications_reach_the_ppgtt_owner(
    guest: Guest, code: int, kind: str
) -> None:
    roots = (0x1_2345_6000, 0x7000, 0x8_0000_8000, 0xFFFF_F000)
    _announce(guest, roots, code)
    owner = guest.vgpu.ppgtt
    assert owner.counts[kind] == 1 and sum(owner.counts.values()) == 1
    assert owner.last_roots == roots
    assert guest.r(PAGE + regs.PVINFO_G2V_NOTIFY) == code


def test_g2v_informational_and_invalid_codes(guest: Guest) -> None:
    for code in (1, 6, 7, 0, 8, 0xFFFF_FFFF):
        guest.w(PAGE + regs.PVINFO_G2V_NOTIFY, code)
    c = guest.vgpu.mmio.pvinfo.counters
    assert (c.g2v_info, c.g2v_invalid, c.g2v_ppgtt) == (3, 3, 0)
    assert sum(guest.vgpu.ppgtt.counts.values()) == 0


def test_g2v_owner_failure_is_counted_not_raised(guest: Guest) -> None:
    from gvt_core.errors import GuestMemoryError

    class Refusing(RecordingOwner):
        def g2v_create(self, levels: int, roots: tuple[int, int, int, int]) -> None:
            raise GuestMemoryError(roots[0], 4096, 0)

    guest.vgpu.ppgtt = Refusing()
    _announce(guest, (0x7FFF_0000_0000, 0, 0, 0), 4)
    assert guest.vgpu.mmio.pvinfo.counters.g2v_failed == 1


def test_vgpu_reset_repopulates_and_forgets_pv_awareness(guest: Guest) -> None:
    before = _read_page(guest)
    guest.w(PAGE + regs.PVINFO_CURSOR_X_HOT, 1)
    guest.w(PAGE + regs.PVINFO_DISPLAY_READY, 1)
    guest.gvt.reset_vgpu(guest.vgpu)  # device-model-level reset
    assert not guest.vgpu.pv_notified
    guest.enable_decoding()
    assert _read_page(guest) == before


def test_two_vgpus_see_their_own_pages(make_guest: Callable[..., Guest]) -> None:
    a, b = make_guest(), make_guest()
    pa, pb = _read_page(a), _read_page(b)
    fa, fb = VGT_IF.unpack(pa), VGT_IF.unpack(pb)
    assert fa[3] == a.vgpu.id != fb[3] == b.vgpu.id
    assert fa[16] == a.vgpu.resources.low_gm_base != fb[16] == b.vgpu.resources.low_gm_base
