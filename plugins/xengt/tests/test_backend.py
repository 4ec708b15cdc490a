"""The xengt backend beyond the contract suite: two vCPUs at once, string operations,
emulation errors, domains it opens and loses, what it leaves behind in Xen."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pytest

from gvt_core.errors import (
    BackendError,
    GuestMemoryError,
    GuestNotFoundError,
    HookUnsupportedError,
    InvalidGfnError,
    VgpuStateError,
    VmCreateError,
)
from gvt_core.guest.port import MAX_PENDING_MSIS
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE, SystemMemory
from gvt_core.mpt.loader import register_plugin
from gvt_core.mpt.ops import HostContext
from gvt_core.testing.plugin import VgpuToken
from gvt_core.testing.recording import RecordingOps
from gvt_core.testing.threads import WatchedLock, Worker
from gvt_xengt import XenDomain, XengtBackend, XengtHandle, abi
from gvt_xengt.backend import MAX_GUEST_RAM
from gvt_xengt.dmop import DeviceModelOps
from gvt_xengt.emulated import EmulatedTransport
from gvt_xengt.emulated.domain import LEGACY_IOREQ_GFN
from gvt_xengt.emulated.vcpu import FIRST_LEGAL_VECTOR
from gvt_xengt.port import XenGuestPort
from gvt_xengt.privcmd import Privcmd

BAR = 0xE000_0000


def _xen_domain(backend: XengtBackend, vm: XenDomain) -> Any:
    return backend.xen.lookup(vm.domid)


def test_backend_info_and_options() -> None:
    info = XengtBackend(hypervisor="emulated").backend_info()
    assert info.usable and info.reason == "" and "emulated Xen" in info.detail
    assert info.capabilities.can_create_vm
    if not os.path.exists("/dev/xen/privcmd"):
        native = XengtBackend(hypervisor="xen").backend_info()
        assert not native.usable and "not a Xen dom0" in native.reason
        assert not native.capabilities.can_create_vm
        assert XengtBackend().hypervisor == "emulated"  # auto picks what exists
    assert XengtBackend(hypervisor="emulated").aperture == "map"
    assert XengtBackend(hypervisor="xen").aperture == "trap"  # no machine frames to map
    with pytest.raises(BackendError, match="aperture='both' is invalid"):
        XengtBackend(aperture="both")
    with pytest.raises(BackendError, match="toolstack"):
        XengtBackend(hypervisor="xen", domains="5")
    with pytest.raises(BackendError, match="ID\\[:MEM_MIB"):
        XengtBackend(hypervisor="emulated", domains="five")
    for bad in ("-1", "0", "nan"):
        with pytest.raises(BackendError, match=r"guest_seconds=.* above 0"):
            XengtBackend(hypervisor="emulated", guest_seconds=bad)


def test_create_vm_is_refused_on_native_xen() -> None:
    with pytest.raises(HookUnsupportedError, match="xl create"):
        XengtBackend(hypervisor="xen").create_vm(HostContext(RecordingOps(), SystemMemory()), 1 << 20, "x")


# --- two vCPUs at once -------------------------------------------------------------------------


def test_two_vcpus_issue_ioreqs_at_once(backend: XengtBackend, vm: XenDomain, handle: XengtHandle,
                                        ops: RecordingOps) -> None:
    """Each vCPU has its own slot and channel: concurrent requests arrive whole, in
    each vCPU's own order, for MMIO and for write-tracked pages alike."""
    backend.set_trap_area(handle, BAR, BAR + (16 << 20), True)
    tracked = (vm.mem_size >> PAGE_SHIFT) // 2
    backend.enable_page_track(handle, tracked)
    ops.tracked.add((1, tracked))
    n = 150
    errors: list[BaseException] = []

    def guest(vcpu: int) -> None:
        port = vm.port(vcpu)
        try:
            for i in range(n):
                port.mmio_write(BAR + 0x100 * vcpu, (vcpu << 16) | i, 4)
                port.store((tracked << PAGE_SHIFT) + 8 * vcpu, (vcpu << 16) | i, 8)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guest, args=(v,)) for v in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    for vcpu in (0, 1):
        writes = [c.args for c in ops.of("emulate_mmio_write") if c.args[0] == BAR + 0x100 * vcpu]
        assert writes == [(BAR + 0x100 * vcpu, (vcpu << 16) | i, 4) for i in range(n)]
        stores = [c.args for c in ops.of("page_track_write")
                  if c.args[0] == (tracked << PAGE_SHIFT) + 8 * vcpu]
        assert stores == [((tracked << PAGE_SHIFT) + 8 * vcpu, ((vcpu << 16) | i).to_bytes(8, "little"))
                          for i in range(n)]
    assert vm.thread is not None and vm.thread.errors == 0


def test_msis_reach_the_vcpu_they_name(backend: XengtBackend, vm: XenDomain,
                                       handle: XengtHandle) -> None:
    backend.inject_msi(handle, 0xFEE0_1000, 0x61)
    assert vm.port(0).wait_msi(0.05) is None
    assert vm.port(1).wait_msi(1.0) is not None


def test_pending_msis_are_the_vlapics_irr(backend: XengtBackend, vm: XenDomain,
                                          handle: XengtHandle) -> None:
    """The backend queues nothing: Xen's vLAPIC holds one pending message per vector,
    so every vector sent three times leaves 240 pending (fewer than
    MAX_PENDING_MSIS) and the illegal ones dropped, on the vCPU named only."""
    for _ in range(3):
        for vector in range(1, 256):
            backend.inject_msi(handle, 0xFEE0_0000, vector)
    lapic = _xen_domain(backend, vm).vcpus[0].lapic
    legal = list(range(FIRST_LEGAL_VECTOR, 256))
    assert lapic.pending() == legal and len(legal) <= MAX_PENDING_MSIS
    assert lapic.coalesced == 2 * len(legal) and lapic.illegal_vectors == 3 * 15
    assert _xen_domain(backend, vm).vcpus[1].lapic.pending() == []
    port = vm.port(0)
    got = [port.wait_msi(1.0) for _ in legal]
    assert [m.data for m in got if m is not None] == legal[::-1]  # highest vector first
    assert port.wait_msi(0.02) is None and vm.msis_refused == 0


def test_msis_xen_refuses_are_dropped_counted_and_logged_once(
    backend: XengtBackend, vm: XenDomain, handle: XengtHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """A message the guest programmed that Xen does not deliver (vector 0 naming no
    pirq: ERANGE; SMI delivery: EINVAL; lowest priority to a logical destination no
    vCPU has: ESRCH) is lost, as on hardware: no error for the core, one log line."""
    caplog.set_level(logging.WARNING, logger="gvt_xengt")
    for _ in range(2):
        backend.inject_msi(handle, 0xFEE0_0000, 0x100)
        backend.inject_msi(handle, 0xFEE0_0000, 0x241)
        backend.inject_msi(handle, 0xFEE0_F004, 0x141)
    assert vm.msis_refused == 6
    assert vm.port(0).wait_msi(0.02) is None and vm.port(1).wait_msi(0.0) is None
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("gvt_xengt")]
    assert len(lines) == 1 and "msis_refused" in lines[0]
    backend.inject_msi(handle, 0xFEE0_0000, 0x41)  # a good one still arrives
    assert vm.port(0).wait_msi(1.0) is not None


# --- what create_vm can launch ------------------------------------------------------------------


def test_create_vm_refuses_with_the_limit_named(backend: XengtBackend, host: HostContext) -> None:
    with pytest.raises(VmCreateError, match=f"at most {MAX_GUEST_RAM >> 20} MiB"):
        backend.create_vm(host, MAX_GUEST_RAM + PAGE_SIZE, "too-big")
    for size in (0, -PAGE_SIZE, PAGE_SIZE + 1, float(1 << 20)):
        with pytest.raises(VmCreateError, match="positive multiple of 4096"):
            backend.create_vm(host, size, "malformed")  # type: ignore[arg-type]
    many = XengtBackend(hypervisor="emulated", vcpus=17)
    many.host_init(HostContext(ops=RecordingOps(), sysmem=SystemMemory(), name="many-vcpus"))
    try:
        with pytest.raises(VmCreateError, match=r"1\.\.16 vCPUs"):
            many.create_vm(many.host, 1 << 20, "many")  # type: ignore[arg-type]
    finally:
        many.host_exit(many.host)  # type: ignore[arg-type]
    assert backend.domains == [] and backend.xen.domains == {}


# --- string operations --------------------------------------------------------------------------


@pytest.mark.parametrize("df", [False, True], ids=["up", "down"])
def test_rep_movs_into_and_out_of_bar0(backend: XengtBackend, vm: XenDomain, handle: XengtHandle,
                                       ops: RecordingOps, df: bool) -> None:
    """``data_is_ptr`` requests: the backend reads each element's value from guest RAM
    (writes) or puts it there (reads), walking down with the direction flag."""
    backend.set_trap_area(handle, BAR, BAR + (16 << 20), True)
    port = vm.port(0)
    assert isinstance(port, XenGuestPort)
    src = 0x10_0000
    values = [0x1111_0000 + i for i in range(6)]
    port.mem_write(src, b"".join(v.to_bytes(4, "little") for v in values))
    first_dst, first_src = (BAR + 0x40 + 20, src + 20) if df else (BAR + 0x40, src)
    port.rep_movs(first_dst, first_src, 4, 6, df=df)
    got = [c.args for c in ops.of("emulate_mmio_write")]
    order = range(5, -1, -1) if df else range(6)
    assert got == [(BAR + 0x40 + 4 * i, values[i], 4) for i in order]
    for i in range(6):
        ops.mmio_answers[BAR + 0x200 + 4 * i] = 0xA0 + i
    dst = 0x20_0000
    port.rep_movs(dst + (20 if df else 0), BAR + 0x200 + (20 if df else 0), 4, 6, df=df)
    assert port.mem_read(dst, 24) == b"".join((0xA0 + i).to_bytes(4, "little") for i in range(6))


def test_rep_movs_into_a_tracked_page_traps_per_element(backend: XengtBackend, vm: XenDomain,
                                                        handle: XengtHandle, ops: RecordingOps) -> None:
    g = 0x300
    backend.enable_page_track(handle, g)
    ops.tracked.add((1, g))
    port = vm.port(0)
    assert isinstance(port, XenGuestPort)
    port.mem_write(0x10_0000, bytes(range(32)))
    # two elements in the tracked page (one request), two in the plain page after it
    port.rep_movs((g << PAGE_SHIFT) + 0xFF0, 0x10_0000, 8, 4)
    traps = [c.args for c in ops.of("page_track_write")]
    assert traps == [((g << PAGE_SHIFT) + 0xFF0, bytes(range(8))),
                     ((g << PAGE_SHIFT) + 0xFF8, bytes(range(8, 16)))]
    assert port.mem_read((g + 1) << PAGE_SHIFT, 16) == bytes(range(16, 32))
    assert port.mem_read((g << PAGE_SHIFT) + 0xFF0, 16) == bytes(16)  # forwarded: not landed


def test_a_store_reaching_into_a_tracked_page_is_that_pages_write(
        backend: XengtBackend, vm: XenDomain, handle: XengtHandle, ops: RecordingOps) -> None:
    """A RAM store (an ioreq Xen sends for an ioreq_server page) that starts in a
    plain page and ends in a tracked one goes to the core whole, never to RAM: the
    core hands each tracked page its own bytes."""
    g = 0x301
    backend.enable_page_track(handle, g)
    ops.tracked.add((1, g))
    thread = vm.thread
    assert thread is not None
    at = (g << PAGE_SHIFT) - 4
    thread.mmio(at, 8, False, 0x1122334455667788)
    assert [c.args for c in ops.of("page_track_write")] == [
        (at, (0x1122334455667788).to_bytes(8, "little"))]
    port = vm.port(0)
    assert port.mem_read(at, 8) == bytes(8)  # forwarded: the core commits it


# --- emulation errors ----------------------------------------------------------------------------


class FailingOps(RecordingOps):
    """Core ops whose MMIO write at ``bad`` raises (a bug in the device model)."""

    bad = BAR + 0x666

    def emulate_mmio_write(self, vgpu: Any, gpa: int, value: int, size: int) -> None:
        if gpa == self.bad:
            raise RuntimeError("device model bug")
        super().emulate_mmio_write(vgpu, gpa, value, size)

    def mmio_accessors(self, vgpu: Any) -> Any:
        def read(gpa: int, size: int) -> int:
            return self.emulate_mmio_read(vgpu, gpa, size)

        def write(gpa: int, value: int, size: int) -> None:
            self.emulate_mmio_write(vgpu, gpa, value, size)

        return read, write


def test_an_emulation_error_pauses_that_domain_only() -> None:
    backend = XengtBackend(hypervisor="emulated")
    ops = FailingOps()
    host = HostContext(ops=ops, sysmem=SystemMemory(), name="failing")
    backend.host_init(host)
    try:
        a = backend.create_vm(host, 16 << 20, "a")
        b = backend.create_vm(host, 16 << 20, "b")
        ha = backend.attach_vgpu(VgpuToken(id=1), a)
        hb = backend.attach_vgpu(VgpuToken(id=2), b)
        for h in (ha, hb):
            backend.set_trap_area(h, BAR, BAR + (16 << 20), True)
        a.port().mmio_write(FailingOps.bad, 1, 4)  # completes; the domain is paused
        assert a.paused_by_error and "device model bug" in a.failures[0]
        assert backend.xen.lookup(a.domid).paused
        with pytest.raises(VgpuStateError, match="paused"):
            a.port().mmio_write(BAR, 2, 4)
        b.port().mmio_write(BAR + 4, 3, 4)
        assert not b.paused_by_error and not backend.xen.lookup(b.domid).paused
        assert ops.of("emulate_mmio_write")[-1].args == (BAR + 4, 3, 4)
        backend.unpause_domain(ha)
        a.port().mmio_write(BAR, 5, 4)  # the host decides when it runs again
        for h in (ha, hb):
            backend.detach_vgpu(h)
        a.close()
        b.close()
    finally:
        backend.host_exit(host)


# --- a detached vGPU is served no more --------------------------------------------------------------


def test_an_aperture_access_blocked_across_detach_touches_nothing() -> None:
    """With ``aperture=trap`` the backend itself writes the host's aperture frames. An
    access that found the slice before the vGPU was detached, and waited meanwhile,
    must not write them afterwards: they may be another vGPU's next."""
    sysmem = SystemMemory()
    backend = XengtBackend(hypervisor="emulated", aperture="trap")
    host = HostContext(ops=RecordingOps(), sysmem=sysmem, name="aperture-trap")
    backend.host_init(host)
    frame, page = 0x8_0000, memoryview(bytearray(PAGE_SIZE))
    sysmem.register(frame, page, "aperture")
    gpa = 0xC000_0000
    vm = backend.create_vm(host, 16 << 20, "aperture-race")
    try:
        h = backend.attach_vgpu(VgpuToken(id=1), vm)
        backend.map_gfn_to_mfn(h, gpa >> PAGE_SHIFT, frame, 1, True)
        port = vm.port(0)
        port.mmio_write(gpa, 0x1111, 4)
        assert bytes(page[:4]) == (0x1111).to_bytes(4, "little")
        lock = h.attachment.lock = WatchedLock()  # type: ignore[assignment]
        with lock:
            worker = Worker(lambda: port.mmio_write(gpa, 0xBAD, 4), name="vcpu0").start()
            assert lock.wait_for_waiters(1), "the aperture access never reached the lock"
            backend.detach_vgpu(h)
        worker.join()
        assert bytes(page[:4]) == (0x1111).to_bytes(4, "little")
        assert port.mmio_read(gpa, 4) == 0xFFFF_FFFF  # the slice is unclaimed now
    finally:
        vm.close()
        backend.host_exit(host)


def test_release_hooks_on_a_closed_domain_are_quiet(backend: XengtBackend, host: HostContext,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The core releases a vGPU whose domain was closed first: every unmap and untrap
    it asks for was done by the close, so each returns quietly; a map is refused."""
    vm = backend.create_vm(host, 16 << 20, "closed-first")
    h = backend.attach_vgpu(VgpuToken(id=3), vm)
    backend.set_trap_area(h, BAR, BAR + (16 << 20), True)
    backend.map_gfn_to_mfn(h, 0xC0000, 0x4000, 16, True)
    backend.enable_page_track(h, 0x200)
    vm.close()
    caplog.set_level(logging.INFO)
    backend.set_trap_area(h, BAR, BAR + (16 << 20), False)
    backend.map_gfn_to_mfn(h, 0xC0000, 0x4000, 16, False)
    backend.disable_page_track(h, 0x200)
    backend.detach_vgpu(h)
    assert caplog.records == [] and vm.held().total == 0
    with pytest.raises(VgpuStateError, match="detached"):
        backend.set_trap_area(h, BAR, BAR + (16 << 20), True)
    with pytest.raises(VgpuStateError, match="detached"):
        backend.map_gfn_to_mfn(h, 0xC0000, 0x4000, 16, True)


# --- domains it opens and loses -------------------------------------------------------------------


def test_open_vm_serves_a_toolstack_domain_and_leaves_it_running(backend: XengtBackend,
                                                                 host: HostContext) -> None:
    dom = backend.toolstack.create(8 << 20, 1, "toolstack-made")
    with pytest.raises(GuestNotFoundError, match="no such domain"):
        backend.open_vm(host, 0x7777)
    with pytest.raises(GuestNotFoundError, match="0 is dom0"):
        backend.open_vm(host, 0)
    vm = backend.open_vm(host, dom.domid)
    with pytest.raises(GuestNotFoundError, match="already serves"):
        backend.open_vm(host, dom.domid)
    assert vm.mem_size == 8 << 20 and not vm.wait_ended(0.01)
    vm.close()
    assert backend.xen.lookup(dom.domid) is dom and not dom.servers[0]
    assert dom.ioreq_owner is None


def test_a_domain_that_dies_ends_its_guest_vm(backend: XengtBackend, vm: XenDomain,
                                              handle: XengtHandle) -> None:
    backend.enable_page_track(handle, 0x200)
    backend.xen.destroy_domain(vm.domid)
    assert vm.wait_ended(5.0)
    backend.detach_vgpu(handle)  # nothing left to undo in Xen; no error
    assert vm.held().total == 0


def test_detach_leaves_nothing_in_xen(backend: XengtBackend, vm: XenDomain, handle: XengtHandle,
                                      host: HostContext) -> None:
    d = _xen_domain(backend, vm)
    backend.enable_page_tracks(handle, [0x200, 0x201, 0x203])
    backend.set_trap_area(handle, BAR, BAR + (16 << 20), True)
    backend.map_gfn_to_mfn(handle, 0xC0000, 0x4000, 100, True)
    server = d.server(vm.server)
    assert d.ioreq_entries == 3 and len(d.mmio) == 100 and server.ranges[abi.XEN_DMOP_IO_RANGE_PCI].ranges
    backend.detach_vgpu(handle)
    assert d.ioreq_entries == 0 and not (d.p2m == abi.HVMMEM_ioreq_server).any()
    assert not d.mmio and d.iomem.ranges == []
    assert all(not r.ranges for r in server.ranges)
    vm.close()
    assert backend.xen.lookup(vm.domid) is None  # it made the domain: it destroys it


def test_ram_holes_and_special_frames_are_not_guest_ram(backend: XengtBackend,
                                                        host: HostContext) -> None:
    """How RAM is found on a real domain: its map reaches up to a special page near
    4 GiB; frames Xen refuses below 1 MiB are holes, the first refused frame above
    1 MiB ends RAM."""
    dom = backend.xen.create_domain(4 << 20, holes=((0xA0, 0x20),))
    legacy = Privcmd(EmulatedTransport(backend.xen))
    DeviceModelOps(legacy, dom.domid).get_ioreq_server_info(
        DeviceModelOps(legacy, dom.domid).create_ioreq_server(), no_gfns=False
    )
    assert dom.max_gpfn == LEGACY_IOREQ_GFN
    vm = backend.open_vm(host, dom.domid)
    try:
        assert vm.mem_size == 4 << 20
        h = backend.attach_vgpu(VgpuToken(id=1), vm)
        assert not backend.is_valid_gfn(h, 0xA5) and backend.is_valid_gfn(h, 0x9F)
        with pytest.raises(InvalidGfnError):
            backend.gfn_to_mfn(h, 0xA5)
        with pytest.raises(InvalidGfnError):
            backend.dma_map_guest_page(h, 0xA5, PAGE_SIZE)
        backend.write_gpa(h, 0x9F000, b"below")
        assert backend.read_gpa(h, 0x9F000, 5) == b"below"
        with pytest.raises(GuestMemoryError):
            backend.read_gpa(h, 0x9F000, 0x2000)  # runs into the hole
        backend.detach_vgpu(h)
    finally:
        vm.close()
        legacy.close()


def test_handles_outlive_nothing(backend: XengtBackend, vm: XenDomain, handle: XengtHandle) -> None:
    a = backend.dma_map_guest_page(handle, 5, PAGE_SIZE)
    backend.detach_vgpu(handle)
    backend.dma_unmap_guest_page(handle, a)  # released with the vGPU: quietly nothing
    backend.disable_page_track(handle, 5)
    with pytest.raises(VgpuStateError, match="detached"):
        backend.read_gpa(handle, 0, 4)
    with pytest.raises(BackendError, match="not one its attach_vgpu returned"):
        backend.detach_vgpu(object())
    loaded = register_plugin(backend, "xengt")
    assert loaded.mpt.has("open_vm") and not loaded.mpt.has("set_pvmmio")


def test_closed_domains_leave_no_thread_behind(backend: XengtBackend, host: HostContext) -> None:
    before = threading.active_count()
    vms = [backend.create_vm(host, 4 << 20, f"short-lived{i}") for i in range(3)]
    assert threading.active_count() == before + 3  # one emulation thread each
    for vm in vms:
        vm.close()
    assert backend.domains == [] and threading.active_count() == before


def test_closing_a_domain_with_its_vgpu_attached_releases_everything(
    backend: XengtBackend, host: HostContext
) -> None:
    vm = backend.create_vm(host, 8 << 20, "closed-attached")
    h = backend.attach_vgpu(VgpuToken(id=4), vm)
    backend.enable_page_track(h, 0x100)
    backend.set_trap_area(h, BAR, BAR + (16 << 20), True)
    vm.port().mmio_write(BAR, 1, 4)
    d = _xen_domain(backend, vm)
    vm.close()
    assert not h.live and vm.held().total == 0 and vm.wait_ended(0)
    assert d.dying and backend.domains == []
    with pytest.raises(VgpuStateError):
        vm.port()


@pytest.mark.parametrize("write", [True, False], ids=["store", "load"])
def test_an_access_straddling_the_end_of_an_aperture_slice_reaches_no_other_frame(
        write: bool) -> None:
    """With ``aperture=trap`` the backend serves the slice from the host's frames. A
    request that starts in the slice but ends past it (an unaligned ``rep movs``
    element at the end of a page, with another range of the same server right
    after the slice) must not touch the host frame after the slice's last one: it
    may be another vGPU's aperture."""
    sysmem = SystemMemory()
    backend = XengtBackend(hypervisor="emulated", aperture="trap")
    host = HostContext(ops=RecordingOps(), sysmem=sysmem, name="aperture-straddle")
    backend.host_init(host)
    frame = 0x8_0000
    mine, victim = memoryview(bytearray(PAGE_SIZE)), memoryview(bytearray(b"\x5a" * PAGE_SIZE))
    sysmem.register(frame, mine, "aperture")
    sysmem.register(frame + 1, victim, "another vGPU's aperture")
    gpa = 0xC000_0000
    vm = backend.create_vm(host, 16 << 20, "aperture-straddle")
    try:
        h = backend.attach_vgpu(VgpuToken(id=1), vm)
        backend.map_gfn_to_mfn(h, gpa >> PAGE_SHIFT, frame, 1, True)
        backend.set_trap_area(h, gpa + PAGE_SIZE, gpa + 2 * PAGE_SIZE, True)  # right after it
        port = vm.port(0)
        assert isinstance(port, XenGuestPort)
        ram = 0x10_0000
        port.mem_write(ram, b"\xee" * 8)
        if write:
            port.rep_movs(gpa + PAGE_SIZE - 4, ram, 8, 1)
        else:
            port.rep_movs(ram, gpa + PAGE_SIZE - 4, 8, 1)
            assert port.mem_read(ram + 4, 4) != b"\x5a" * 4
        assert bytes(victim) == b"\x5a" * PAGE_SIZE
        assert not vm.paused_by_error
        assert vm.thread is not None and vm.thread.straddling == 1
        backend.detach_vgpu(h)
    finally:
        vm.close()
        backend.host_exit(host)


# --- requests as Xen fills them, and requests Xen never sends -------------------------------------

#: the end of the ``vm`` fixture's RAM (conftest's MEM).
GUEST_RAM_END = 16 << 20


def test_xens_map_cache_invalidation_is_acknowledged(backend: XengtBackend, vm: XenDomain,
                                                     handle: XengtHandle) -> None:
    """Xen broadcasts IOREQ_TYPE_INVALIDATE with a count of 0 whenever a guest gives
    memory back (a balloon driver does): a request Xen sends is not an emulation
    error, the domain keeps running."""
    backend.set_trap_area(handle, BAR, BAR + (16 << 20), True)
    _xen_domain(backend, vm).vcpus[0].mapcache_invalidate()
    assert not vm.paused_by_error and vm.failures == []
    port = vm.port(0)
    port.mmio_write(BAR + 4, 7, 4)  # still served


@pytest.mark.parametrize(
    ("type_", "size", "count", "ptr", "data"),
    [
        (abi.IOREQ_TYPE_COPY, 0, 1, False, 0),
        (abi.IOREQ_TYPE_COPY, 3, 1, False, 0),
        (abi.IOREQ_TYPE_COPY, 16, 1, False, 0),
        (abi.IOREQ_TYPE_COPY, 4, 0, False, 0),
        (abi.IOREQ_TYPE_COPY, 4, (1 << 32) - 1, False, 0),
        (abi.IOREQ_TYPE_COPY, 4, 2, True, 1 << 40),  # data_is_ptr outside guest RAM
        (abi.IOREQ_TYPE_COPY, 4, 4, True, GUEST_RAM_END - 8),  # ... running off its end
        (abi.IOREQ_TYPE_PCI_CONFIG, 3, 1, False, 0),
        (abi.IOREQ_TYPE_PIO, 16, 1, False, 0),
        (0x42, 4, 1, False, 0),  # an unknown type
    ],
    ids=["size0", "size3", "size16", "count0", "count-huge", "ptr-outside", "ptr-off-end",
         "cfg-size3", "pio-size16", "unknown-type"])
def test_a_request_xen_never_sends_pauses_that_domain_only(
        backend: XengtBackend, host: HostContext, vm: XenDomain, handle: XengtHandle,
        ops: RecordingOps, type_: int, size: int, count: int, ptr: bool, data: int) -> None:
    """A malformed request (as a broken or hostile hypervisor side would post it) is
    completed (a read answers all ones), counted as an emulation error and pauses
    that domain; nothing of it reaches the core, and another domain runs on."""
    backend.set_trap_area(handle, BAR, BAR + (16 << 20), True)
    other = backend.create_vm(host, 16 << 20, "bystander")
    try:
        oh = backend.attach_vgpu(VgpuToken(id=2), other)
        backend.set_trap_area(oh, BAR, BAR + (16 << 20), True)
        writes = len(ops.of("emulate_mmio_write"))
        d = _xen_domain(backend, vm)
        vcpu = d.vcpus[0]
        server = next(s for s in d.servers if s is not None)
        with vcpu.lock:
            with d.xen.lock:
                ticket = vcpu._post(server, type_, BAR + 0x40 if type_ != abi.IOREQ_TYPE_PCI_CONFIG
                                    else 0x10, size, count, abi.IOREQ_WRITE, ptr, False, data)
            vcpu._wait(server, ticket)
        assert vm.paused_by_error and vm.failures
        assert len(ops.of("emulate_mmio_write")) == writes
        other.port().mmio_write(BAR + 8, 9, 4)
        assert not other.paused_by_error
        assert ops.of("emulate_mmio_write")[-1].args == (BAR + 8, 9, 4)
        backend.detach_vgpu(oh)
    finally:
        other.close()
