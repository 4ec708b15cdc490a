"""Core ops a backend reaches besides the trapped accesses: the register file's
pages (ACRN's PV MMIO maps them) and reporting an access it could not emulate
(failsafe); and what ``gvt backends`` shows of a usable backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gvt_core.errors import VgpuStateError
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SIZE
from gvt_core.mpt.info import BackendInfo, Capabilities, DmaMode, HypervisorType, PageTrackMode
from gvt_core.mpt.loader import describe_backends
from gvt_core.testing.plugin import VgpuToken
from gvt_core.testing.recording import RecordingOps
from tests.device.conftest import Guest


def test_vreg_pages_are_the_live_register_file(make_guest: Callable[..., Guest]) -> None:
    import ctypes

    g = make_guest()
    pages = g.gvt.vreg_pages(g.vgpu)
    assert len(pages) == regs.MMIO_SIZE and not pages.readonly
    assert ctypes.addressof(ctypes.c_char.from_buffer(pages)) % PAGE_SIZE == 0
    imr = regs.GEN8_GT_ISR_BASE + regs.IRQ_IMR
    g.w(imr, 0x5A5A, 4)
    assert int.from_bytes(pages[imr : imr + 4], "little") == 0x5A5A
    assert pages[regs.VGT_PVINFO_PAGE : regs.VGT_PVINFO_PAGE + 8].tobytes() == \
        regs.VGT_MAGIC.to_bytes(8, "little")
    g.gvt.destroy_vgpu(g.vgpu)
    with pytest.raises(VgpuStateError):
        g.gvt.vreg_pages(g.vgpu)


def test_emulation_failed_puts_only_that_vgpu_into_failsafe(make_guest: Callable[..., Guest]) -> None:
    a, b = make_guest(), make_guest()
    a.gvt.emulation_failed(a.vgpu, "an access the backend could not decode")
    assert a.vgpu.failsafe and "could not decode" in a.vgpu.failsafe_reason
    assert not b.vgpu.failsafe
    a.gvt.destroy_vgpu(a.vgpu)
    a.gvt.emulation_failed(a.vgpu, "after-destroy")  # a destroyed vGPU: nothing happens
    assert "after-destroy" not in a.vgpu.failsafe_reason


def test_recording_ops_offer_a_register_file_and_record_failures() -> None:
    ops = RecordingOps()
    pages = ops.vreg_pages(VgpuToken(3))
    assert len(pages) == regs.MMIO_SIZE and bytes(pages[:4]) == b"\x5a" * 4
    assert ops.vreg_pages(VgpuToken(3)).obj is pages.obj  # one per vGPU
    ops.emulation_failed(VgpuToken(3), "why")
    assert [(c.op, c.vgpu_id, c.args) for c in ops.calls] == [("emulation_failed", 3, ("why",))]


def test_a_usable_backends_detail_is_reported() -> None:
    caps = Capabilities(HypervisorType.SIM, PageTrackMode.WRITE_LANDED, DmaMode.IDENTITY)
    assert BackendInfo("x", "1", True, "", caps).detail == ""
    reports = {r.name: r for r in describe_backends()}
    assert reports["sim"].detail == "" and reports["sim"].as_dict()["detail"] == ""
    for r in reports.values():
        assert r.usable or r.detail == ""  # an unusable backend says why in ``reason``
