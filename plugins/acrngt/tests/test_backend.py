"""The acrngt backend on the emulated ACRN: options, hooks the suites do not reach,
two vCPUs at once, PV MMIO on and off, failsafe, hostile BAR programming."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from gvt_acrngt import abi
from gvt_acrngt.backend import MAX_EMULATED_GUEST_RAM, AcrngtBackend
from gvt_acrngt.router import EmulationError
from gvt_core.device.gvt import Gvt
from gvt_core.errors import (
    AddressSpaceError,
    BackendError,
    GuestNotFoundError,
    HookUnsupportedError,
    VmCreateError,
)
from gvt_core.guest.driver import GuestDriver
from gvt_core.hw import regs
from gvt_core.mpt.ops import HostContext
from gvt_core.testing.plugin import VgpuToken

MEM = 64 << 20
FB = {"fb_width": 128, "fb_height": 64}


def _guest(gvt: Gvt, mem: int = MEM) -> tuple[Any, Any, GuestDriver]:
    vm = gvt.create_vm(mem, "test")
    vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
    driver = GuestDriver(vm.port(), **FB)
    driver.load()
    return vm, vgpu, driver


# --- options and identity ------------------------------------------------------------------------


def test_options_are_checked() -> None:
    with pytest.raises(BackendError, match="hypervisor='xen'"):
        AcrngtBackend(hypervisor="xen")
    with pytest.raises(BackendError, match="vcpus=9"):
        AcrngtBackend(hypervisor="emulated", vcpus=9)
    with pytest.raises(BackendError, match="not a number"):
        AcrngtBackend(hypervisor="emulated", launch="many")
    for name in ("guest_seconds", "request_timeout"):
        for bad in ("-1", "0", "nan"):
            with pytest.raises(BackendError, match=rf"{name}=.* above 0"):
                AcrngtBackend(hypervisor="emulated", **{name: bad})
    assert AcrngtBackend(hypervisor="emulated", vcpus="2").vcpus == 2


def test_the_real_acrn_says_why_it_is_not_usable_here() -> None:
    b = AcrngtBackend(hypervisor="acrn")
    info = b.backend_info()
    if b.device_reason:
        assert not info.usable and "/dev/acrn_hsm" in info.reason
        assert not info.capabilities.can_create_vm
    else:  # an ACRN Service VM
        assert info.usable and "Service VM" in info.detail
    emulated = AcrngtBackend(hypervisor="emulated").backend_info()
    assert emulated.usable and emulated.reason == "" and "emulated ACRN" in emulated.detail
    assert emulated.capabilities.can_create_vm


def test_a_real_acrn_does_not_create_vms(host: HostContext) -> None:
    b = AcrngtBackend(hypervisor="acrn")
    with pytest.raises(HookUnsupportedError, match="launcher"):
        b.create_vm(host, MEM, "x")
    with pytest.raises(BackendError, match="launch="):
        AcrngtBackend(hypervisor="acrn", launch=1)


def test_create_vm_says_which_limit_it_ran_into(backend: AcrngtBackend, host: HostContext) -> None:
    with pytest.raises(VmCreateError, match="MAX_EMULATED_GUEST_RAM"):
        backend.create_vm(host, MAX_EMULATED_GUEST_RAM + 4096, "huge")
    with pytest.raises(VmCreateError, match="vCPUs"):
        backend.create_vm_with(host, 4 << 20, "wide", 4)
    for size in (0, -4096, 4097, 4096.0):
        with pytest.raises(VmCreateError, match="multiple of 4096"):
            backend.create_vm(host, size, "odd")  # type: ignore[arg-type]
    assert backend.machine is not None
    hv = backend.machine.hv
    vms = [backend.create_vm(host, 1 << 20, f"vm{i}") for i in range(hv.max_vms)]
    try:
        with pytest.raises(VmCreateError, match=f"{hv.max_vms} User VM configurations"):
            backend.create_vm(host, 1 << 20, "one-too-many")
        vms.pop().close()
        vms.append(backend.create_vm(host, 1 << 20, "fits-again"))
    finally:
        for vm in vms:
            vm.close()
    assert backend.vms == {} and hv.vms == {}


def test_open_vm_of_a_vm_nobody_offers(backend: AcrngtBackend, host: HostContext) -> None:
    with pytest.raises(GuestNotFoundError, match="no launcher offers User VM 5"):
        backend.open_vm(host, 5)
    with pytest.raises(GuestNotFoundError, match=r"1\.\.65534"):
        backend.open_vm(host, 0)


def test_attach_refuses_foreign_vms_and_a_second_vgpu(backend: AcrngtBackend,
                                                      host: HostContext) -> None:
    vm = backend.create_vm(host, 4 << 20, "one")
    try:
        with pytest.raises(HookUnsupportedError):
            backend.attach_vgpu(VgpuToken(1), object())
        h = backend.attach_vgpu(VgpuToken(1), vm)
        with pytest.raises(Exception, match="one vGPU"):
            backend.attach_vgpu(VgpuToken(2), vm)
        backend.detach_vgpu(h)
        backend.detach_vgpu(h)  # a released handle is released
    finally:
        vm.close()


# --- two vCPUs --------------------------------------------------------------------------------------


def test_two_vcpus_issue_requests_at_once(gvt_factory: Callable[..., Gvt]) -> None:
    gvt = gvt_factory(vcpus=2)
    vm, vgpu, driver = _guest(gvt)
    assert vm.vcpu_num == 2
    report = driver.report
    assert report is not None
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(vcpu: int) -> None:
        port = vm.port(vcpu)
        try:
            start.wait()
            for i in range(150):
                gtt = regs.GTT_START_OFFSET + (((report.framebuffer_gm >> 12) + vcpu) * 8)
                pte = (report.framebuffer_gpa + (vcpu << 12)) | regs.GEN8_PAGE_PRESENT
                port.mmio_write(report.bar0 + gtt, pte, 8)
                assert port.mmio_read(report.bar0 + gtt, 8) == pte
                got = port.mmio_read(report.bar0 + regs.VGT_PVINFO_PAGE + regs.PVINFO_VGT_ID, 4)
                assert got == vgpu.id, (vcpu, i, got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(v,)) for v in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert vm.loop.served >= 2 * 150 * 3
    assert gvt.backend.plugin.machine.violations == []  # type: ignore[attr-defined]


def test_both_request_slots_in_flight_at_once(make_vm: Callable[..., Any],
                                              client: Callable[..., Any]) -> None:
    """Two vCPUs each wait on their own slot while the client holds both requests."""
    vm = make_vm(vcpus=2)
    assert vm.vcpu_num == 2
    tc = client(vm, answer=lambda address: address >> 12)
    tc.go.clear()
    results: dict[int, int] = {}

    def read(vcpu: int) -> None:
        results[vcpu] = vm.port(vcpu).mmio_read(0xC000_0000 + (vcpu << 12), 4)

    threads = [threading.Thread(target=read, args=(v,)) for v in (0, 1)]
    for t in threads:
        t.start()
    import time

    deadline = time.monotonic() + 5
    while any(vm.slots[v].processed != abi.ACRN_IOREQ_STATE_PROCESSING for v in (0, 1)):
        assert time.monotonic() < deadline, [vm.slots[v].processed for v in (0, 1)]
        time.sleep(0.005)
    tc.go.set()
    for t in threads:
        t.join(5)
    assert results == {0: 0xC0000, 1: 0xC0001}
    assert sorted(a for _, _, a, _ in tc.seen) == [0xC000_0000, 0xC000_1000]


# --- PV MMIO ----------------------------------------------------------------------------------------


def test_pv_mmio_on_and_off(gvt_factory: Callable[..., Gvt]) -> None:
    gvt = gvt_factory()
    vm, vgpu, driver = _guest(gvt)
    port, bar0, stats = vm.port(), driver.bar0, vm.router.stats
    imr = bar0 + regs.GEN8_GT_ISR_BASE + regs.IRQ_IMR
    pvinfo_id = bar0 + regs.VGT_PVINFO_PAGE + regs.PVINFO_VGT_ID
    value = port.mmio_read(imr, 4)
    ept = gvt.backend.plugin.machine.user_vm(vm.vm_id).ept  # type: ignore[attr-defined]
    assert ept.lookup(bar0 >> 12) is None  # off: BAR0 is a hole, every access exits

    gvt.mpt.set_pvmmio(vgpu.handle, bar0, bar0 + regs.MMIO_SIZE, True)
    assert vm.held().pvmmio_maps == 1
    page = ept.lookup(bar0 >> 12)
    assert page is not None and page.attr == abi.ACRN_MEM_TYPE_UC | abi.ACRN_MEM_ACCESS_READ \
        | abi.ACRN_MEM_ACCESS_EXEC
    assert ept.lookup((bar0 + regs.VGT_PVINFO_PAGE) >> 12) is None  # PVINFO stays trapped
    served = stats.mmio
    assert port.mmio_read(imr, 4) == value  # straight from the register page, no exit
    assert stats.mmio == served
    port.mmio_write(imr, 0x1234, 4)  # a store exits (WP) into the core's MMIO write
    assert stats.mmio == served + 1
    assert port.mmio_read(imr, 4) == 0x1234 == vgpu.mmio.get32(regs.GEN8_GT_ISR_BASE + regs.IRQ_IMR)
    assert stats.mmio == served + 1
    assert port.mmio_read(pvinfo_id, 4) == vgpu.id  # PVINFO: an exit, emulated
    assert stats.mmio == served + 2

    gvt.mpt.set_pvmmio(vgpu.handle, bar0, bar0 + regs.MMIO_SIZE, False)
    assert vm.held().pvmmio_maps == 0 and ept.lookup(bar0 >> 12) is None
    assert port.mmio_read(imr, 4) == 0x1234
    assert stats.mmio == served + 3
    with pytest.raises(AddressSpaceError):
        gvt.mpt.set_pvmmio(vgpu.handle, bar0, bar0 + regs.MMIO_SIZE, False)
    with pytest.raises(AddressSpaceError):
        gvt.mpt.set_pvmmio(vgpu.handle, 0, regs.MMIO_SIZE, True)  # over guest RAM


def test_pv_mmio_pages_go_away_with_the_vgpu(gvt_factory: Callable[..., Gvt]) -> None:
    gvt = gvt_factory()
    vm, vgpu, driver = _guest(gvt)
    gvt.mpt.set_pvmmio(vgpu.handle, driver.bar0, driver.bar0 + regs.MMIO_SIZE, True)
    ept = gvt.backend.plugin.machine.user_vm(vm.vm_id).ept  # type: ignore[attr-defined]
    gvt.destroy_vgpu(vgpu)
    assert vm.held().total == 0
    assert ept.lookup(driver.bar0 >> 12) is None


# --- failsafe and hostile guests ----------------------------------------------------------------------


def test_an_emulation_error_puts_only_that_vgpu_into_failsafe(
    gvt_factory: Callable[..., Gvt], monkeypatch: pytest.MonkeyPatch
) -> None:
    gvt = gvt_factory()
    vm, vgpu, driver = _guest(gvt)
    other_vm, other, other_driver = _guest(gvt)
    poisoned = driver.bar0 + 0x2030
    serve = vm.router.handle

    def broken(slot: Any) -> None:
        if slot.type == abi.ACRN_IOREQ_TYPE_MMIO and slot.reqs.mmio_request.address == poisoned:
            raise EmulationError("a request no instruction makes (injected by the test)")
        serve(slot)

    monkeypatch.setattr(vm.router, "handle", broken)
    assert vm.port().mmio_read(poisoned, 4) == 0xFFFF_FFFF
    assert vgpu.failsafe and "could not emulate" in vgpu.failsafe_reason
    assert not other.failsafe
    assert vm.port().cfg_read(regs.PCI_VENDOR_ID, 2) == regs.INTEL_VENDOR_ID  # still served
    assert other_vm.port().mmio_read(
        other_driver.bar0 + regs.VGT_PVINFO_PAGE + regs.PVINFO_VGT_ID, 4) == other.id
    assert vm.failures and "injected by the test" in vm.failures[0]


def test_a_bar_over_guest_ram_is_refused_and_ram_survives(gvt_factory: Callable[..., Gvt]) -> None:
    gvt = gvt_factory()
    vm, vgpu, _ = _guest(gvt, mem=512 << 20)
    port = vm.port()
    slice_gpa = vgpu.resources.low_gm_base  # where the aperture slice lands with BAR2 at 0
    assert slice_gpa < vm.mem_size
    port.mem_write(slice_gpa, b"guest RAM")
    errors = vgpu.stats.bar_map_errors
    # move the aperture BAR to 0, memory decoding on: its slice would cover RAM; refused
    port.cfg_write(regs.PCI_BASE_ADDRESS_2, 0, 4)
    port.cfg_write(regs.PCI_BASE_ADDRESS_2 + 4, 0, 4)
    assert vgpu.stats.bar_map_errors > errors
    assert port.mem_read(slice_gpa, 9) == b"guest RAM"
    ept = gvt.backend.plugin.machine.user_vm(vm.vm_id).ept  # type: ignore[attr-defined]
    assert ept.lookup(slice_gpa >> 12).attr & abi.ACRN_MEM_TYPE_WB  # still the RAM segment
    port.mem_write(0x1000, b"guest RAM")
    # BAR0 over RAM too: the trap area is refused, RAM stays RAM
    errors = vgpu.stats.bar_map_errors
    port.cfg_write(regs.PCI_BASE_ADDRESS_0, 0, 4)
    port.cfg_write(regs.PCI_BASE_ADDRESS_0 + 4, 0, 4)
    assert vgpu.stats.bar_map_errors > errors
    assert port.mem_read(0x1000, 9) == b"guest RAM"


def test_tracked_pages_stay_uncached_after_untracking(gvt_factory: Callable[..., Gvt]) -> None:
    """What the upstream HSM allows: a write-protected page comes back as an MMIO
    segment (uncached) of its own frame; the bytes and the frame are unchanged."""
    gvt = gvt_factory()
    vm, vgpu, _ = _guest(gvt)
    ept = gvt.backend.plugin.machine.user_vm(vm.vm_id).ept  # type: ignore[attr-defined]
    gfn = (MEM >> 12) - 7
    before = ept.lookup(gfn)
    assert before is not None and before.attr & abi.ACRN_MEM_TYPE_WB
    frame = before.frame + (gfn - before.gfn)
    gvt.mpt.enable_page_track(vgpu.handle, gfn)
    tracked = ept.lookup(gfn)
    assert tracked.attr == abi.ACRN_MEM_TYPE_UC | abi.ACRN_MEM_ACCESS_READ | abi.ACRN_MEM_ACCESS_EXEC
    assert tracked.frame == frame
    gvt.mpt.disable_page_track(vgpu.handle, gfn)
    after = ept.lookup(gfn)
    assert after.attr == abi.ACRN_MEM_TYPE_UC | abi.ACRN_MEM_ACCESS_RWX and after.frame == frame
