"""Hostile guests against a real device model, on every backend.

The security properties every backend is held to, checked on a
:class:`~gvt_core.device.gvt.Gvt` host over the backend under test, with the
guests acting only through their :class:`~gvt_core.guest.port.GuestPort`
(real vCPU instructions on kvmgt):

1. a destroyed vGPU is dead everywhere: an access that was blocked on the
   vGPU's lock while it was destroyed, a bound accessor, the GGTT object, the
   page-track path and a thread of the device model act for it no more;
   checked against a second vGPU created in the freed ranges;
2. no channel between guests through host-owned pages: what one guest stores
   through its aperture, its GGTT or (as an engine would) through its PPGTT
   scratch never shows in another guest's graphics memory;
3. what a guest can grow is bounded: an MSI per write to the master interrupt
   register while an event is pending coalesces to one;
4. a guest closed before its vGPU is destroyed is released quietly;
5. the GuestPort refuses malformed calls the same way on every backend.

Run on one backend with::

    pytest --pyargs gvt_core.testing --gvt-backend NAME -k hostile
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import numpy as np
import pytest

from gvt_core.device.display.edid import Edid
from gvt_core.device.gvt import Gvt
from gvt_core.device.interrupt import IrqEvent
from gvt_core.device.vgpu import Vgpu
from gvt_core.errors import EdidError, VgpuStateError
from gvt_core.guest.display import GuestDisplay
from gvt_core.guest.driver import MSI_ADDRESS, MSI_VECTOR, GuestDriver
from gvt_core.guest.port import GuestPort, GuestVm
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE
from gvt_core.mpt.ops import Msi
from gvt_core.testing.guests import guest_host, release_guests
from gvt_core.testing.threads import WatchedLock, Worker, deadlock_watchdog, wait_until

GUEST_MEM = 64 << 20
FB_W, FB_H = 128, 64
P = regs.GEN8_PAGE_PRESENT
#: a guest RAM page the hostile guest points its entries at (clear of the driver's).
HOSTILE_GPA = 40 << 20
#: where the guest keeps a PPGTT root table.
PPGTT_ROOT = 44 << 20
#: destroy/create cycles of the storm test.
STORM_CYCLES = 4
#: a destroy racing a blocked vCPU that has not finished by then is a deadlock.
DEADLOCK_TIMEOUT_S = 120


@attrs.define(eq=False)
class Guest:
    vm: GuestVm
    vgpu: Vgpu
    port: GuestPort
    driver: GuestDriver

    @property
    def bar0(self) -> int:
        return self.driver.bar0

    @property
    def report(self) -> Any:
        assert self.driver.report is not None
        return self.driver.report

    def ggtt_offset(self, gm: int) -> int:
        """BAR0 offset of the GGTT entry of graphics address ``gm``."""
        return regs.GTT_START_OFFSET + (gm >> regs.GTT_PAGE_SHIFT) * regs.GTT_ENTRY_SIZE


@pytest.fixture
def host(gvt_backend_name: str, gvt_backend_options: dict[str, Any]) -> Iterator[Gvt]:
    with guest_host(gvt_backend_name, gvt_backend_options) as gvt:
        yield gvt


@pytest.fixture
def guests(host: Gvt) -> Iterator[Callable[..., Guest]]:
    """``guests(watch=False)``: a VM, a vGPU of the smallest type, its driver loaded.
    With ``watch``, the vGPU's lock is a :class:`WatchedLock` (installed before any
    accessor is bound, i.e. before the guest turns memory decoding on)."""
    vms: list[GuestVm] = []

    def make(watch: bool = False) -> Guest:
        vm = host.create_vm(GUEST_MEM, name=f"hostile{len(vms) + 1}")
        vms.append(vm)
        vgpu = host.create_vgpu(host.smallest_type, vm)
        if watch:
            vgpu.lock = WatchedLock(vgpu.lock)  # type: ignore[assignment]
        driver = GuestDriver(vm.port(), fb_width=FB_W, fb_height=FB_H)
        driver.load()
        return Guest(vm, vgpu, vm.port(), driver)

    yield make
    release_guests(host, vms)


def _host_state(host: Gvt, vgpu: Vgpu) -> tuple[np.ndarray, list[int]]:
    """The host GGTT entries of ``vgpu``'s ranges and its host fences."""
    res = vgpu.resources
    ggtt = host.gpu.ggtt
    entries = np.concatenate([
        ggtt[res.low_gm_base >> PAGE_SHIFT : res.low_gm_end >> PAGE_SHIFT],
        ggtt[res.high_gm_base >> PAGE_SHIFT : res.high_gm_end >> PAGE_SHIFT],
    ]).copy()
    return entries, [host.gpu.fences[i] for i in res.fences]


def _assert_host_state_is_own(host: Gvt, g: Guest) -> None:
    """Every host GGTT entry of ``g``'s ranges is scratch or the shadow of ``g``'s own
    entry, and its host fences are all clear (these guests never program fences)."""
    entries, fences = _host_state(host, g.vgpu)
    dma = g.vgpu.ggtt.dma
    scratch = entries == np.uint64(host.gpu.scratch_pte)
    assert (scratch == (dma < 0)).all()
    own = dma >= 0
    addr = np.uint64(regs.GTT_ADDR_MASK)
    assert ((entries[own] & addr) == (dma[own].astype(np.uint64) & addr)).all()
    assert fences == [0] * len(fences)


def _fence(res: Any) -> int:
    """A valid fence over the first 16 pages of ``res``'s low graphics memory."""
    start = res.low_gm_base
    end = start + 15 * PAGE_SIZE
    return (end << 32) | start | regs.FENCE_VALID


# --- 1. a destroyed vGPU is dead everywhere ------------------------------------------------


def _late_access(a: Guest, kind: str) -> Callable[[], Any]:
    """One guest access of ``kind`` on A's vCPU, aimed at state B will own."""
    res = a.vgpu.resources
    if kind == "fence":
        return lambda: a.port.mmio_write(a.bar0 + regs.FENCE_REG_GEN6_LO, _fence(res), 8)
    if kind == "ggtt":
        off = a.ggtt_offset(a.report.framebuffer_gm)
        return lambda: a.port.mmio_write(a.bar0 + off, HOSTILE_GPA | P, 8)
    if kind == "ggtt-half":
        off = a.ggtt_offset(a.report.framebuffer_gm)
        return lambda: a.port.mmio_write(a.bar0 + off, HOSTILE_GPA | P, 4)
    if kind == "read":
        return lambda: a.port.mmio_read(a.bar0 + regs.FENCE_REG_GEN6_LO, 8)
    if kind == "cfg":
        return lambda: a.port.cfg_write(regs.PCI_COMMAND, 0, 2)
    if kind == "after-bar-write":  # a VMM re-reads BAR0 before serving this one
        return lambda: a.port.mmio_read(a.bar0 + regs.VGT_PVINFO_PAGE, 4)
    if kind == "page-track":  # a store to a page table the vGPU shadows
        return lambda: a.port.store(PPGTT_ROOT, HOSTILE_GPA | 3, 8)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["fence", "ggtt", "ggtt-half", "read", "cfg",
                                  "after-bar-write", "page-track"])
def test_access_blocked_across_destroy_touches_nothing(
    host: Gvt, guests: Callable[..., Guest], kind: str
) -> None:
    """A vCPU mid-access, blocked on A's lock while the host destroys A and builds B
    in A's freed ranges, must not write B's GGTT entries or fences (nor deadlock
    the destroy, whatever the backend holds while it calls the core)."""
    a = guests(watch=True)
    lock = a.vgpu.lock
    assert isinstance(lock, WatchedLock)
    res_a = a.vgpu.resources
    access = _late_access(a, kind)
    if kind == "after-bar-write":  # rewrite COMMAND unchanged: BAR0 is to be re-read
        a.port.cfg_write(regs.PCI_COMMAND, a.port.cfg_read(regs.PCI_COMMAND, 2), 2)
    if kind == "page-track":  # an empty 4-level PPGTT: its PML4 page is write-tracked
        a.port.mem_write(PPGTT_ROOT, bytes(PAGE_SIZE))
        a.driver.notify_ppgtt(4, (PPGTT_ROOT, 0, 0, 0))
        assert host.is_page_tracked(a.vgpu, PPGTT_ROOT >> PAGE_SHIFT)
    with lock, deadlock_watchdog(DEADLOCK_TIMEOUT_S):
        worker = Worker(access, name=f"vcpu-{kind}").start()
        assert lock.wait_for_waiters(1), "the guest access never reached the vGPU lock"
        host.destroy_vgpu(a.vgpu)  # this thread holds A's lock: re-entered, not waited for
        b = guests()
        assert b.vgpu.resources == res_a  # B lives exactly where A did
        b.port.mem_write(b.report.framebuffer_gpa, b"B's frame" * 100)
        before = _host_state(host, b.vgpu)
    worker.join()
    after = _host_state(host, b.vgpu)
    assert (after[0] == before[0]).all() and after[1] == before[1]
    _assert_host_state_is_own(host, b)
    assert a.vgpu.stats.dead_accesses >= 1
    assert host.gpu.gm_read(b.report.framebuffer_gm, 9) == b"B's frame"
    if kind == "read":
        assert worker.result == (1 << 64) - 1


def test_destroyed_vgpu_objects_touch_nothing(host: Gvt, guests: Callable[..., Guest]) -> None:
    """Whatever a caller kept of a destroyed vGPU (bound accessors, its GGTT and MMIO
    objects, the core entry points, a device-model thread) acts for it no more."""
    a = guests()
    res_a = a.vgpu.resources
    read, write = host.mmio_accessors(a.vgpu)
    vgpu, bar0 = a.vgpu, a.bar0
    fb_off = a.ggtt_offset(a.report.framebuffer_gm)
    host.destroy_vgpu(vgpu)
    b = guests()
    assert b.vgpu.resources == res_a
    before = _host_state(host, b.vgpu)
    dead = vgpu.stats.dead_accesses

    write(bar0 + regs.FENCE_REG_GEN6_LO, _fence(res_a), 8)
    write(bar0 + fb_off, HOSTILE_GPA | P, 8)
    assert read(bar0 + fb_off, 8) == (1 << 64) - 1
    vgpu.mmio.write(regs.FENCE_REG_GEN6_LO, _fence(res_a), 8)
    vgpu.mmio.write(fb_off, HOSTILE_GPA | P, 8)
    vgpu.ggtt.write(fb_off - regs.GTT_START_OFFSET, HOSTILE_GPA | P, 8)
    vgpu.ggtt.write(fb_off - regs.GTT_START_OFFSET, 0, 4)
    host.emulate_mmio_write(vgpu, bar0 + regs.FENCE_REG_GEN6_LO, _fence(res_a), 8)
    assert host.emulate_mmio_read(vgpu, bar0 + fb_off, 8) == (1 << 64) - 1
    host.emulate_cfg_write(vgpu, regs.PCI_COMMAND, 0, 2)
    assert host.emulate_cfg_read(vgpu, regs.PCI_VENDOR_ID, 2) == 0xFFFF
    host.page_track_write(vgpu, HOSTILE_GPA, bytes(8))
    assert host.is_page_tracked(vgpu, HOSTILE_GPA >> PAGE_SHIFT) is False
    vgpu.mmio.handlers.w_fence(regs.FENCE_REG_GEN6_LO, _fence(res_a) & 0xFFFF_FFFF)
    vgpu.clear_host_fences()
    vgpu.ggtt.reset()
    assert vgpu.resources.fences == () and vgpu.freed_resources == res_a
    with vgpu.alive_locked() as alive:
        assert not alive
    with pytest.raises(VgpuStateError):
        host.mmio_accessors(vgpu)
    with pytest.raises(VgpuStateError):
        host.reset_vgpu(vgpu)

    after = _host_state(host, b.vgpu)
    assert (after[0] == before[0]).all() and after[1] == before[1]
    _assert_host_state_is_own(host, b)
    assert vgpu.stats.dead_accesses > dead
    assert b.driver.read_pvinfo()[:8] == regs.VGT_MAGIC.to_bytes(8, "little")


def test_destroy_under_a_storm_of_guest_accesses(
    host: Gvt, guests: Callable[..., Guest]
) -> None:
    """A guest thread hammers its fences and GGTT while the host destroys its vGPU
    and builds another in the same ranges, a few times; the new vGPU's state holds.
    (Threads switch often here so accesses land inside the destroy.)"""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for cycle in range(STORM_CYCLES):
            _storm_cycle(host, guests, cycle)
    finally:
        sys.setswitchinterval(interval)


def _storm_cycle(host: Gvt, guests: Callable[..., Guest], cycle: int) -> None:
    """One destroy under a storm; the vGPU built in the freed ranges stays its own."""
    a = guests()
    res_a = a.vgpu.resources
    fence, ggtt = _late_access(a, "fence"), _late_access(a, "ggtt")
    done = [0]
    stop = [False]

    def storm(fence: Callable[[], Any] = fence, ggtt: Callable[[], Any] = ggtt,
              done: list[int] = done, stop: list[bool] = stop) -> None:
        while not stop[0]:
            fence()
            ggtt()
            done[0] += 1

    worker = Worker(storm, name=f"storm{cycle}").start()
    assert wait_until(lambda done=done: done[0] >= 20)
    host.destroy_vgpu(a.vgpu)
    b = guests()
    assert b.vgpu.resources == res_a
    _assert_host_state_is_own(host, b)
    before = _host_state(host, b.vgpu)
    seen = done[0]
    assert wait_until(lambda done=done, seen=seen: done[0] >= seen + 20)
    stop[0] = True
    worker.join()
    after = _host_state(host, b.vgpu)
    assert (after[0] == before[0]).all() and after[1] == before[1]
    _assert_host_state_is_own(host, b)
    host.destroy_vgpu(b.vgpu)


def test_thread_of_the_device_model_stops_acting_after_destroy(
    host: Gvt, guests: Callable[..., Guest]
) -> None:
    """A timer (say, vblank) acts through ``alive_locked``: after destroy it runs no more."""
    a = guests()
    vgpu = a.vgpu
    fired: list[bool] = []

    def tick() -> None:
        with vgpu.alive_locked() as alive:
            if alive:
                vgpu.irq.raise_event(IrqEvent.PIPE_A_VBLANK)
            fired.append(alive)

    tick()
    host.destroy_vgpu(vgpu)
    events = vgpu.irq.counters.events
    Worker(tick).start().join()
    assert fired == [True, False]
    assert vgpu.irq.counters.events == events


# --- 2. no channel between guests through host-owned pages ---------------------------------


def _pattern(tag: int) -> bytes:
    return bytes((tag * 31 + i * 7) & 0xFF or 1 for i in range(PAGE_SIZE))


def _unmapped_gm(g: Guest, pages_in: int) -> int:
    """A graphics address of ``g``'s aperture range that its driver never mapped."""
    rep = g.report
    return rep.framebuffer_gm + (rep.framebuffer_pages + pages_in) * PAGE_SIZE


def _aperture_gpa(g: Guest, gm: int) -> int:
    return g.report.bar2 + gm


def test_no_channel_between_guests_through_scratch(
    host: Gvt, guests: Callable[..., Guest]
) -> None:
    """Guest A stores through every host-owned page it can reach that is not its own
    RAM: unmapped aperture pages, GGTT entries on scratch (invalid frame, half
    written), and (as an engine would) its GGTT and PPGTT through the GPU. Guest B
    must never see A's bytes, through its aperture or in its graphics memory."""
    a, b = guests(), guests()
    gpu = host.gpu
    pat = _pattern(0xA)
    # A: an unmapped entry, an entry naming a frame beyond RAM, a half-written entry
    gm_unmapped = _unmapped_gm(a, 0)
    gm_invalid = _unmapped_gm(a, 1)
    gm_half = _unmapped_gm(a, 2)
    a.driver.mmio_write(a.ggtt_offset(gm_invalid), (1 << 40) | P, 8)
    a.driver.mmio_write(a.ggtt_offset(gm_half), HOSTILE_GPA | P, 4)
    for gm in (gm_unmapped, gm_invalid, gm_half):
        for off in range(0, PAGE_SIZE, 8):
            a.port.mmio_write(_aperture_gpa(a, gm) + off, int.from_bytes(pat[off : off + 8],
                                                                         "little"), 8)
        gpu.gm_write(gm, pat)  # an engine writing A's graphics memory
    # A's PPGTT: an empty 4-level table; a GPU store through it lands on A's scratch
    pml4 = 48 << 20
    a.port.mem_write(pml4, bytes(PAGE_SIZE))
    a.driver.notify_ppgtt(4, (pml4, 0, 0, 0))
    mm_a = a.vgpu.ppgtt.find(4, (pml4, 0, 0, 0))
    assert mm_a is not None
    for gma in (0, 0x1234_5000, (1 << 47) - PAGE_SIZE):
        gpu.sysmem.write(a.vgpu.ppgtt.gma_to_dma(mm_a, gma), pat)

    # B: what it reads through its own unmapped aperture pages and graphics memory
    gm_b = [_unmapped_gm(b, i) for i in range(3)]
    b.driver.mmio_write(b.ggtt_offset(gm_b[1]), (1 << 40) | P, 8)
    b.driver.mmio_write(b.ggtt_offset(gm_b[2]), HOSTILE_GPA | P, 4)
    for gm in gm_b:
        seen = b"".join(
            b.port.mmio_read(_aperture_gpa(b, gm) + off, 8).to_bytes(8, "little")
            for off in range(0, 64, 8)
        )
        assert seen != pat[:64]
        assert gpu.gm_read(gm, PAGE_SIZE) != pat
    pml4_b = 52 << 20
    b.port.mem_write(pml4_b, bytes(PAGE_SIZE))
    b.driver.notify_ppgtt(4, (pml4_b, 0, 0, 0))
    mm_b = b.vgpu.ppgtt.find(4, (pml4_b, 0, 0, 0))
    assert mm_b is not None
    for gma in (0, 0x1234_5000):
        assert gpu.sysmem.read(b.vgpu.ppgtt.gma_to_dma(mm_b, gma), PAGE_SIZE) != pat
    # and A itself reads nothing back from host-owned pages either (they are not its)
    assert gpu.gm_read(gm_unmapped, PAGE_SIZE) != pat
    a.driver.notify_ppgtt(4, (pml4, 0, 0, 0), create=False)
    b.driver.notify_ppgtt(4, (pml4_b, 0, 0, 0), create=False)


def _reachable_frames(host: Gvt, g: Guest) -> set[int]:
    """Every frame the GPU reaches for ``g``: its host GGTT entries and the pages its
    shadow PPGTTs lead to (tables, data pages and scratch)."""
    entries, _ = _host_state(host, g.vgpu)
    frames = {int(e) >> PAGE_SHIFT for e in np.unique(entries & np.uint64(regs.GTT_ADDR_MASK))}
    mgr = g.vgpu.ppgtt
    frames |= set(mgr.scratch.frames)
    for sp in mgr.shadow_pages():
        frames.add(sp.frame)
        frames |= {int(e) >> PAGE_SHIFT for e in np.unique(sp.ents & np.uint64(regs.ADDR_MASK_4K))}
    return frames


def test_guests_share_no_writable_page(host: Gvt, guests: Callable[..., Guest]) -> None:
    """Structurally: the frames the GPU reaches for two guests (GGTT, PPGTT shadows,
    scratch) overlap only in pages nothing can write."""
    a, b = guests(), guests()
    for g, pml4 in ((a, 48 << 20), (b, 52 << 20)):
        pt = pml4 + PAGE_SIZE
        g.port.mem_write(pml4, bytes(PAGE_SIZE))
        g.port.mem_write(pt, bytes(PAGE_SIZE))
        g.port.store(pml4, (pml4 + 2 * PAGE_SIZE) | 3, 8)  # a PDP
        g.port.mem_write(pml4 + 2 * PAGE_SIZE, bytes(PAGE_SIZE))
        g.driver.notify_ppgtt(4, (pml4, 0, 0, 0))
    shared = _reachable_frames(host, a) & _reachable_frames(host, b)
    sysmem = host.gpu.sysmem
    assert shared, "both guests reach the host scratch page at least"
    for frame in shared:
        assert not sysmem.is_writable(frame), (hex(frame), sysmem.owner(frame))


# --- 3. bounded growth ------------------------------------------------------------------------


def test_master_irq_rewrites_coalesce_to_one_msi(host: Gvt, guests: Callable[..., Guest]) -> None:
    """An event stays pending while the guest rewrites GEN8_MASTER_IRQ thousands of
    times: the guest receives one MSI, not one per write."""
    g = guests()
    with g.vgpu.lock:
        g.vgpu.irq.raise_event(IrqEvent.RCS_MI_USER_INTERRUPT)
    for _ in range(3000):
        g.driver.mmio_write(regs.GEN8_MASTER_IRQ, regs.GEN8_MASTER_IRQ_CONTROL)
    assert g.port.wait_msi(5.0) == Msi(MSI_ADDRESS, MSI_VECTOR)
    assert g.port.wait_msi(0.05) is None


# --- 4. guests closed before their vGPU -----------------------------------------------------


def test_closing_a_guest_first_is_quiet(
    host: Gvt, guests: Callable[..., Guest], caplog: pytest.LogCaptureFixture
) -> None:
    """A guest torn down before its vGPU: destroying the vGPU afterwards raises nothing
    and logs at most one line for it."""
    g = guests()
    assert g.vm.held().dma_maps > 0
    g.vm.close()
    caplog.set_level(logging.INFO, logger="gvt_core")
    host.destroy_vgpu(g.vgpu)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) <= 1, [r.getMessage() for r in lines]
    assert g.vm.held().total == 0


# --- 5. inputs at the public boundary ----------------------------------------------------------


def test_vgpu_repr_is_one_line(guests: Callable[..., Guest]) -> None:
    g = guests()
    assert "\n" not in repr(g.vgpu) and len(repr(g.vgpu)) < 200


@pytest.mark.parametrize("data", [bytes(1 << 20), b"", b"\x00\xff" * 64],
                         ids=["1MiB", "empty", "no-header"])
def test_plug_monitor_refuses_an_edid_object_that_is_not_valid(
        host: Gvt, guests: Callable[..., Guest], data: bytes) -> None:
    """The 256-byte EDID limit and the EDID checks hold however the caller made its
    :class:`Edid` (not only through ``from_bytes`` or a file): nothing is plugged,
    the monitor there stays."""
    g = guests()
    assert g.vgpu.display is not None
    before = g.vgpu.display.monitor
    with pytest.raises(EdidError):
        host.plug_monitor(g.vgpu, Edid(data, "a careless caller"))
    assert g.vgpu.display.monitor is before


@pytest.mark.parametrize("end", ["destroy", "reset"])
def test_vblank_timers_and_pending_flips_do_not_outlive_destroy_or_reset(
        gvt_backend_name: str, gvt_backend_options: dict[str, Any], end: str) -> None:
    """A pipe running and a synchronous flip pending when the vGPU is destroyed (or
    reset): no vblank fires for it afterwards, the flip never completes, and a
    second vGPU's display runs on. (A host of its own, on the simulated clock, so
    vblank periods pass when the test says.)"""
    vms: list[GuestVm] = []
    with guest_host(gvt_backend_name, gvt_backend_options, clock="simulated") as host:
        try:
            vms = [host.create_vm(GUEST_MEM, name=f"vblank{i}") for i in range(2)]
            vgpus: list[Vgpu] = []
            displays: list[GuestDisplay] = []
            for vm in vms:
                vgpu = host.create_vgpu(host.smallest_type, vm)
                driver = GuestDriver(vm.port(), fb_width=FB_W, fb_height=FB_H)
                driver.load()
                display = GuestDisplay(driver, host.clock.sleep)
                assert display.bring_up() is not None
                display.enable_vblank()
                vgpus.append(vgpu)
                displays.append(display)
            victim, bystander = vgpus
            assert victim.display is not None and bystander.display is not None
            assert displays[0].scanout is not None
            displays[0].flip(displays[0].scanout, wait=False)  # latched: pending
            assert any(victim.display.flips.pending)
            flips = victim.display.flips.counters.sync_flips
            frames = victim.display.flips.counters.vblanks
            before = bystander.display.flips.counters.vblanks
            if end == "destroy":
                host.destroy_vgpu(victim)
            else:
                host.reset_vgpu(victim)
            host.clock.sleep(100_000_000)  # six frames at 60 Hz
            assert victim.display.flips.counters.vblanks == frames
            assert victim.display.flips.counters.sync_flips == flips
            assert not any(victim.display.flips.pending) and not victim.display.vblank.pipes
            assert bystander.display.flips.counters.vblanks >= before + 5
        finally:
            release_guests(host, vms)
