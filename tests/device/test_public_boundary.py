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


def test_guest_mapped_host_pages_outlive_the_guest_mapping() -> None:
    """The OpRegion pages are mapped into the guest until the backend detaches: the
    host's pool gets them back only after that (else the guest could write into a
    page the pool hands to another vGPU meanwhile)."""
    from typing import Any

    from gvt_core.mpt.hookspecs import hookimpl
    from gvt_core.mpt.loader import register_plugin
    from gvt_sim import SimBackend

    seen: list[bool] = []

    class Watching(SimBackend):
        @hookimpl
        def detach_vgpu(self, handle: Any) -> None:
            frames = handle.vgpu.opregion.frames if handle.vgpu.opregion else ()
            sysmem = self.host.sysmem if self.host else None
            seen.append(bool(frames) and sysmem is not None and all(f in sysmem for f in frames))
            super().detach_vgpu(handle)

    with Gvt(register_plugin(Watching(), "sim")) as gvt:
        vm = gvt.create_vm(16 << 20, "opregion")
        vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
        frames = vgpu.opregion.frames
        gvt.destroy_vgpu(vgpu)
        assert seen == [True]
        assert not any(f in gvt.gpu.sysmem for f in frames)
        vm.close()


def test_the_host_page_pool_never_hands_a_page_to_two_owners() -> None:
    """vGPUs allocate shadow pages from one pool on their own threads."""
    import sys
    import threading

    from gvt_core.hw.sysmem import HostPagePool, SystemMemory

    frames = iter(range(1 << 20, 1 << 30))
    lock = threading.Lock()

    def frame_of(_vaddr: int) -> int:
        with lock:
            return next(frames)

    pool = HostPagePool(SystemMemory(), frame_of, chunk_pages=16)
    errors: list[BaseException] = []

    def churn(owner: str) -> None:
        try:
            for _ in range(200):
                pages = pool.alloc_many(7, owner=owner)
                one = pool.alloc(owner=owner)
                for frame, page in [*pages, one]:
                    assert pool.sysmem.owner(frame) == owner
                    pool.free(frame, page)
        except BaseException as exc:
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=churn, args=(f"vgpu{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and pool.in_use == 0
