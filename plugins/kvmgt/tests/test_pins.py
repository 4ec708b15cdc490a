"""Pinned guest memory on kvmgt: accounted per VM, released on the last unmap,
refused visibly.

A hostile guest points many GGTT entries at its own RAM, each a page the
backend pins (``mlock``) for the GPU. Its VM's pin quota stops it; the next
guest's framebuffer and ring still map; destroying the hostile vGPU unpins
everything (``VmLck`` of the process goes back down). The last test runs the
same story in a child process without CAP_IPC_LOCK, where the 8 MiB
RLIMIT_MEMLOCK is real and the default quota is a share of it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from gvt_core.device.gvt import Gvt
from gvt_core.errors import DmaMapError
from gvt_core.guest.driver import GuestDriver
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE
from gvt_kvmgt import hostmem
from gvt_kvmgt.dma import PinAccount

MEM = 16 << 20
#: the hostile guest's GGTT entries point at RAM from here (clear of the driver's pages).
HOSTILE_FIRST_GFN = (8 << 20) >> PAGE_SHIFT


def _hostile_entries(gvt: Gvt, vm: object, vgpu: object, count: int) -> GuestDriver:
    """Load the driver, then point ``count`` GGTT entries at distinct RAM pages."""
    driver = GuestDriver(vm.port(), fb_width=64, fb_height=64)  # type: ignore[attr-defined]
    rep = driver.load()
    base = rep.nonmappable.base + rep.ring_pages * PAGE_SIZE
    for i in range(count):
        off = regs.GTT_START_OFFSET + ((base >> PAGE_SHIFT) + i) * regs.GTT_ENTRY_SIZE
        gpa = (HOSTILE_FIRST_GFN + i % ((MEM >> PAGE_SHIFT) - HOSTILE_FIRST_GFN)) << PAGE_SHIFT
        driver.mmio_write(off, gpa | regs.GEN8_PAGE_PRESENT, 8)
    return driver


@pytest.fixture
def quota_gvt(kvm: None) -> Iterator[Gvt]:
    gvt = Gvt.open("kvmgt", pin_quota=256 * PAGE_SIZE)
    yield gvt
    gvt.close()


def test_quota_stops_the_hostile_guest_not_the_next(
    quota_gvt: Gvt, caplog: pytest.LogCaptureFixture
) -> None:
    gvt = quota_gvt
    assert gvt.mpt.caps.pin_quota == 256 * PAGE_SIZE
    hostile_vm = gvt.create_vm(MEM, "hostile")
    victim_vm = gvt.create_vm(MEM, "victim")
    try:
        caplog.set_level(logging.WARNING, logger="gvt_core")
        hostile = gvt.create_vgpu(gvt.smallest_type, hostile_vm)
        _hostile_entries(gvt, hostile_vm, hostile, 600)
        assert hostile_vm.held().pinned_pages == 256  # its quota, not more
        assert hostile.stats.dma_map_failures > 0
        warned = [r for r in caplog.records if "cannot be mapped" in r.getMessage()]
        assert len(warned) == 1  # visible, once
        assert hostile_vm.pins.refused == hostile.stats.dma_map_failures

        victim = gvt.create_vgpu(gvt.smallest_type, victim_vm)
        rep = GuestDriver(victim_vm.port(), fb_width=128, fb_height=64).load()
        assert victim.stats.dma_map_failures == 0 and victim.stats.ggtt_to_scratch == 0
        victim_vm.port().mem_write(rep.framebuffer_gpa, b"victim frame")
        assert gvt.gpu.gm_read(rep.framebuffer_gm, 12) == b"victim frame"

        # the hostile vGPU goes: its pins go with it, the VM can pin again
        locked = hostmem.locked_bytes()
        gvt.destroy_vgpu(hostile)
        assert hostile_vm.held().total == 0 and hostile_vm.pins.pinned == 0
        assert hostmem.locked_bytes() <= locked - 200 * PAGE_SIZE
        again = gvt.create_vgpu(gvt.smallest_type, hostile_vm)
        GuestDriver(hostile_vm.port(), fb_width=64, fb_height=64).load()
        assert again.stats.dma_map_failures == 0
    finally:
        for vgpu in list(gvt.vgpus.values()):
            gvt.destroy_vgpu(vgpu)
        hostile_vm.close()
        victim_vm.close()


def test_pages_are_unpinned_on_the_last_unmap(kvm: None) -> None:
    """4K and 2M mappings over the same pages: a page stays pinned while any mapping
    covers it, and is unpinned (munlock) with the last one."""
    with Gvt.open("kvmgt", max_dma_page=2 << 20) as gvt:
        vm = gvt.create_vm(MEM, "pins")
        try:
            vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
            mpt, h = gvt.mpt, vgpu.handle
            base = hostmem.locked_bytes()
            a = mpt.dma_map_guest_page(h, 512 + 3, PAGE_SIZE)
            assert vm.held().pinned_pages == 1
            try:
                big = mpt.dma_map_guest_page(h, 512, 2 << 20)
            except DmaMapError:
                big = None  # no transparent huge page here: 4K only
            if big is not None:
                assert vm.held().pinned_pages == 512
                mpt.dma_unmap_guest_page(h, a)
                assert vm.held().pinned_pages == 512  # still covered by the 2M map
                mpt.dma_unmap_guest_page(h, big)
            else:
                mpt.dma_unmap_guest_page(h, a)
            assert vm.held().pinned_pages == 0 and vm.pins.pinned == 0
            assert hostmem.locked_bytes() <= base
            gvt.destroy_vgpu(vgpu)
        finally:
            vm.close()


def test_refused_pin_leaves_nothing_behind(kvm: None) -> None:
    """A map the quota refuses pins nothing and registers nothing."""
    with Gvt.open("kvmgt", pin_quota=2 * PAGE_SIZE) as gvt:
        vm = gvt.create_vm(MEM, "tiny-quota")
        try:
            vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
            mpt, h = gvt.mpt, vgpu.handle
            frames = gvt.gpu.sysmem.count()
            mpt.dma_map_guest_page(h, 100, PAGE_SIZE)
            mpt.dma_map_guest_page(h, 101, PAGE_SIZE)
            with pytest.raises(DmaMapError, match="pin quota"):
                mpt.dma_map_guest_page(h, 102, PAGE_SIZE)
            with pytest.raises(DmaMapError):
                mpt.dma_map_guest_pages(h, [100, 103], PAGE_SIZE)
            assert vm.held().pinned_pages == 2 and gvt.gpu.sysmem.count() == frames + 2
            assert mpt.dma_map_guest_page(h, 100, PAGE_SIZE) > 0  # more refs cost nothing
            gvt.destroy_vgpu(vgpu)
            assert vm.held().total == 0
        finally:
            vm.close()


def test_pin_account_alone() -> None:
    acct = PinAccount("vm", limit=3)
    acct.reserve(2)
    with pytest.raises(DmaMapError, match="2 of its 3"):
        acct.reserve(2)
    assert acct.refused == 1 and acct.pinned == 2
    acct.give_back(2)
    acct.reserve(3)
    assert acct.pinned == 3


# --- without CAP_IPC_LOCK -------------------------------------------------------------------

_CHILD = textwrap.dedent('''
    import ctypes, json, resource, sys

    # drop CAP_IPC_LOCK (effective and permitted): RLIMIT_MEMLOCK now binds mlock
    libc = ctypes.CDLL(None, use_errno=True)
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]
    header, data = Header(0x20080522, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        sys.exit("capget failed")
    data[0].effective &= ~(1 << 14)
    data[0].permitted &= ~(1 << 14)
    if libc.capset(ctypes.byref(header), data) != 0:
        sys.exit("capset failed")
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (8 << 20, 8 << 20))

    from gvt_core.device.gvt import Gvt
    from gvt_core.guest.driver import GuestDriver
    from gvt_core.hw import regs
    from gvt_kvmgt import hostmem

    MEM = 16 << 20
    out = {"limit": hostmem.memlock_limit()}
    with Gvt.open("kvmgt") as gvt:
        out["quota"] = gvt.mpt.caps.pin_quota
        hostile_vm = gvt.create_vm(MEM, "hostile")
        victim_vm = gvt.create_vm(MEM, "victim")
        hostile = gvt.create_vgpu(gvt.smallest_type, hostile_vm)
        drv = GuestDriver(hostile_vm.port(), fb_width=64, fb_height=64)
        rep = drv.load()
        base = rep.nonmappable.base + rep.ring_pages * 4096
        for i in range(3000):  # 12 MiB of its own RAM: more than the process may pin
            off = regs.GTT_START_OFFSET + ((base >> 12) + i) * 8
            drv.mmio_write(off, ((2048 + i % 2048) << 12) | 1, 8)
        out["hostile_pinned"] = hostile_vm.held().pinned_pages
        out["hostile_failures"] = hostile.stats.dma_map_failures
        victim = gvt.create_vgpu(gvt.smallest_type, victim_vm)
        vrep = GuestDriver(victim_vm.port(), fb_width=256, fb_height=128).load()
        victim_vm.port().mem_write(vrep.framebuffer_gpa, b"victim")
        out["victim_failures"] = victim.stats.dma_map_failures
        out["victim_scratch"] = victim.stats.ggtt_to_scratch
        out["victim_reads"] = gvt.gpu.gm_read(vrep.framebuffer_gm, 6).decode()
        before = hostmem.locked_bytes()
        gvt.destroy_vgpu(hostile)
        out["unpinned"] = before - hostmem.locked_bytes()
        # now fill the process limit from outside any quota: the victim's next map
        # fails, and says so
        import mmap
        hog = mmap.mmap(-1, 8 << 20)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(hog))
        got = 0
        while hostmem.mlock(addr + got, 4096) == 0:
            got += 4096
        off = regs.GTT_START_OFFSET + ((vrep.nonmappable.base >> 12) + 100) * 8
        victim_vm.port().mmio_write(vrep.bar0 + off, (3000 << 12) | 1, 8)
        out["victim_failures_after_hog"] = victim.stats.dma_map_failures
        out["pin_failures"] = victim_vm.pins.pin_failures
        hostmem.munlock(addr, got)
        gvt.destroy_vgpu(victim)
        hostile_vm.close()
        victim_vm.close()
    print(json.dumps(out))
''')


def test_without_cap_ipc_lock_one_guest_cannot_starve_another(kvm: None) -> None:
    proc = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode and "capset failed" in proc.stderr:
        pytest.skip("this process may not drop CAP_IPC_LOCK for the child")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["limit"] == 8 << 20
    quota_pages = out["quota"] >> PAGE_SHIFT
    assert out["quota"] == (8 << 20) // 8
    assert out["hostile_pinned"] <= quota_pages and out["hostile_failures"] > 0
    assert out["victim_failures"] == 0 and out["victim_scratch"] == 0
    assert out["victim_reads"] == "victim"
    assert out["unpinned"] >= out["hostile_pinned"] * PAGE_SIZE
    # a failure the quota did not cause is still never silent for the guest it hits
    assert out["victim_failures_after_hog"] == 1 and out["pin_failures"] == 1


def test_contract_suite_holds_kvmgt_to_its_pin_quota(kvm: None) -> None:
    """The backend-facing pin-quota property of the contract suite, on kvmgt loaded
    with a quota small enough to exhaust (the default here is unlimited)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "--pyargs", "gvt_core.testing.test_contract", "--gvt-backend", "kvmgt",
         "--gvt-backend-option", f"pin_quota={256 * PAGE_SIZE}", "-k", "pin_quota"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 passed" in proc.stdout
