"""The host's public API refuses what it cannot do, in one clear error."""

from __future__ import annotations

import resource

import pytest

from gvt_core.device.gvt import Gvt
from gvt_core.errors import VgpuStateError, VmCreateError


def test_a_closed_host_launches_nothing() -> None:
    gvt = Gvt.open("sim")
    vm = gvt.create_vm(16 << 20, "before")
    gvt.close()
    for call in (lambda: gvt.create_vm(16 << 20, "after"),
                 lambda: gvt.create_vgpu(gvt.smallest_type, vm),
                 lambda: gvt.open_vm(1)):
        with pytest.raises(VgpuStateError, match="closed"):
            call()
    vm.close()
    assert "closed" in repr(gvt) and "\n" not in repr(gvt)


def test_a_large_sim_guest_is_sparse_and_a_larger_one_named_refused() -> None:
    with Gvt.open("sim") as gvt:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        vm = gvt.create_vm(64 << 30, "big")
        try:
            vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
            vm.port().store((60 << 30) + 8, 0x55, 1)
            assert vm.port().mem_read((60 << 30) + 8, 1) == b"\x55"
            gvt.destroy_vgpu(vgpu)
        finally:
            vm.close()
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        assert grown_kib < 256 << 10, f"a 64 GiB sparse guest cost {grown_kib} KiB"
        with pytest.raises(VmCreateError, match="at most 64 GiB"):
            gvt.create_vm(65 << 30, "too-big")
        with pytest.raises(VmCreateError, match="multiple of 4096"):
            gvt.create_vm((1 << 20) + 1, "odd")


def test_vgpu_and_host_reprs_are_one_line(make_guest: object) -> None:
    g = make_guest()  # type: ignore[operator]
    for obj in (g.vgpu, g.gvt, g.vm):
        text = repr(obj)
        assert "\n" not in text and len(text) < 200, text
