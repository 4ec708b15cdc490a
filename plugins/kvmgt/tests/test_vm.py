"""The VMM with real exits: config mechanism #1, BAR0 placement, MMIO widths, page
tracking by read-only memslots, MSIs through the guest's IDT, abnormal exits."""

from __future__ import annotations

import struct

import pytest

from gvt_core.errors import GuestExitError, PageTrackError, VgpuStateError, VmCreateError
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE, SystemMemory
from gvt_core.mpt.ops import HostContext, Msi
from gvt_core.testing.plugin import VgpuToken
from gvt_core.testing.recording import RecordingOps
from gvt_kvmgt import KvmgtBackend, KvmgtHandle, stub
from gvt_kvmgt.memslots import MemslotMap
from gvt_kvmgt.vm import KvmGuestVm

BAR = 0xE000_0000


def _program_bar(vm: KvmGuestVm, ops: RecordingOps, base: int = BAR, decode: bool = True) -> None:
    ops.cfg_answers[regs.PCI_BASE_ADDRESS_0] = (base & 0xFFFF_FFFF) | regs.PCI_BASE_ADDRESS_MEM_TYPE_64
    ops.cfg_answers[regs.PCI_BASE_ADDRESS_1] = base >> 32
    ops.cfg_answers[regs.PCI_COMMAND] = regs.PCI_COMMAND_MEMORY if decode else 0
    port = vm.port()
    port.cfg_write(regs.PCI_BASE_ADDRESS_0, base & 0xFFFF_FFFF, 4)
    port.cfg_write(regs.PCI_BASE_ADDRESS_1, base >> 32, 4)
    port.cfg_write(regs.PCI_COMMAND, ops.cfg_answers[regs.PCI_COMMAND], 2)


def test_bar0_is_learned_from_config_space_and_traps_every_width(
    vm: KvmGuestVm, handle: KvmgtHandle, ops: RecordingOps
) -> None:
    _program_bar(vm, ops)
    ops.clear()
    port = vm.port()
    for size, value in ((1, 0xA1), (2, 0xB2B2), (4, 0xC4C4C4C4), (8, 0xD8D8D8D8_E8E8E8E8)):
        ops.mmio_answers[BAR + 0x100 * size] = value
        port.mmio_write(BAR + 0x2000 + 8 * size, value, size)
        assert port.mmio_read(BAR + 0x100 * size, size) == value
    mmio = [(c.op, c.args) for c in ops.calls if c.op.startswith("emulate_mmio")]
    assert mmio[:2] == [
        ("emulate_mmio_write", (BAR + 0x2008, 0xA1, 1)),
        ("emulate_mmio_read", (BAR + 0x100, 1)),
    ]
    assert mmio[-2:] == [
        ("emulate_mmio_write", (BAR + 0x2040, 0xD8D8D8D8_E8E8E8E8, 8)),
        ("emulate_mmio_read", (BAR + 0x800, 8)),
    ]
    # the read-back happened once, before the first MMIO exit
    reads = [c.args[0] for c in ops.of("emulate_cfg_read")]
    assert reads == [regs.PCI_COMMAND, regs.PCI_BASE_ADDRESS_0, regs.PCI_BASE_ADDRESS_1]
    # the end of BAR0 is exclusive
    ops.clear()
    assert port.mmio_read(BAR + regs.BAR0_SIZE, 4) == 0xFFFF_FFFF
    assert ops.of("emulate_mmio_read") == []


def test_bar0_above_4g_and_moving_it(vm: KvmGuestVm, handle: KvmgtHandle, ops: RecordingOps) -> None:
    high = 0x8_0000_0000
    _program_bar(vm, ops, base=high)
    port = vm.port()
    port.mmio_write(high + 0x10, 5, 4)
    _program_bar(vm, ops, base=BAR)
    ops.clear()
    port.mmio_write(high + 0x10, 6, 4)  # the old place is unassigned now
    port.mmio_write(BAR + 0x10, 7, 4)
    assert [c.args for c in ops.of("emulate_mmio_write")] == [(BAR + 0x10, 7, 4)]


def test_memory_decoding_off_means_no_trap(vm: KvmGuestVm, handle: KvmgtHandle, ops: RecordingOps) -> None:
    _program_bar(vm, ops, decode=False)
    ops.clear()
    assert vm.port().mmio_read(BAR + 0x40, 4) == 0xFFFF_FFFF
    assert ops.of("emulate_mmio_read") == []
    assert vm.unassigned_accesses >= 1 and vm.last_unassigned == ("mmio read", BAR + 0x40)


def test_other_pci_functions_and_ports_read_all_ones(
    vm: KvmGuestVm, handle: KvmgtHandle, ops: RecordingOps
) -> None:
    runner = vm.runners[0]
    other = 0x8000_0000 | (3 << 11)  # 00:03.0
    values = runner.execute([
        (stub.OP_OUT, 4, 0xCF8, other, 1),
        (stub.OP_IN, 4, 0xCFC, 0, 1),
        (stub.OP_OUT, 4, 0xCFC, 0x1234, 1),  # dropped
        (stub.OP_OUT, 4, 0xCF8, 0x1000, 1),  # enable bit clear
        (stub.OP_IN, 2, 0xCFE, 0, 1),
        (stub.OP_IN, 4, 0xCF8, 0, 1),  # the latch reads back
        (stub.OP_IN, 1, 0x80, 0, 1),  # nothing there
    ])
    assert values[1] == 0xFFFF_FFFF and values[4] == 0xFFFF and values[6] == 0xFF
    assert values[5] == 0x1000
    assert ops.calls == []


def test_extended_config_space_through_mechanism_1(
    vm: KvmGuestVm, handle: KvmgtHandle, ops: RecordingOps
) -> None:
    ops.cfg_answers[0x102] = 0xBEEF
    assert vm.port().cfg_read(0x102, 2) == 0xBEEF
    vm.port().cfg_write(0xFFC, 0x1234_5678, 4)
    assert [c.args for c in ops.calls] == [(0x102, 2), (0xFFC, 0x1234_5678, 4)]
    with pytest.raises(ValueError):
        vm.port().cfg_read(0x3, 2)


def test_tracked_writes_land_then_reach_the_core(
    backend: KvmgtBackend, vm: KvmGuestVm, handle: KvmgtHandle, ops: RecordingOps
) -> None:
    g = 0x400
    backend.enable_page_track(handle, g)
    port = vm.port()
    port.mem_write((g << PAGE_SHIFT) - 2, b"abcdefgh")
    traps = [c.args for c in ops.of("page_track_write")]
    # natural stores: 2 bytes below the page (no trap), then 4 + 2 inside it
    assert traps == [(g << PAGE_SHIFT, b"cdef"), ((g << PAGE_SHIFT) + 4, b"gh")]
    assert vm.read((g << PAGE_SHIFT) - 2, 8) == b"abcdefgh"
    backend.disable_page_track(handle, g)
    ops.clear()
    port.store(g << PAGE_SHIFT, 0x77, 1)
    assert ops.calls == []


def test_adjacent_tracks_coalesce_into_one_readonly_slot(
    backend: KvmgtBackend, vm: KvmGuestVm, handle: KvmgtHandle
) -> None:
    slots = vm.memslots
    assert slots.slot_count == 1
    with backend.page_track_batch(handle):
        for gfn in range(0x100, 0x140):
            backend.enable_page_track(handle, gfn)
        assert slots.slot_count == 1  # nothing applied inside the batch
    assert slots.slot_count == 3
    layout = slots.layout()
    assert [(s.first_gfn, s.pages, s.readonly) for s in layout] == [
        (0, 0x100, False), (0x100, 0x40, True), (0x140, (vm.mem_size >> PAGE_SHIFT) - 0x140, False)
    ]
    backend.disable_page_track(handle, 0x120)
    assert slots.slot_count == 5
    assert vm.held().page_tracks == 0x3F


class _SlotRecorder:
    def __init__(self) -> None:
        self.live: dict[int, tuple[int, int, int]] = {}

    def set_user_memory_region(self, slot: int, flags: int, gpa: int, size: int, uaddr: int) -> None:
        if size == 0:
            del self.live[slot]
        else:
            assert slot not in self.live
            for other_gpa, other_size, _ in self.live.values():
                assert gpa + size <= other_gpa or other_gpa + other_size <= gpa, "overlapping slots"
            self.live[slot] = (gpa, size, flags)


def test_memslot_limit_is_a_clear_error_and_changes_nothing() -> None:
    rec = _SlotRecorder()
    slots = MemslotMap(rec, 0x7000_0000_0000, 64, max_slots=6)  # type: ignore[arg-type]
    slots.track(10)
    slots.track(20)  # RW RO RW RO RW = 5 slots + firmware = 6
    before = dict(rec.live)
    with pytest.raises(PageTrackError, match="KVM_CAP_NR_MEMSLOTS"):
        slots.track(30)
    assert rec.live == before and slots.tracked() == [10, 20]
    slots.track(11)  # joins the run at 10: still 5
    assert len(rec.live) == 5
    covered = sorted((g, s) for g, s, _ in rec.live.values())
    assert sum(s for _, s in covered) == 64 << PAGE_SHIFT


def test_guest_exception_is_reported_and_the_vcpu_recovers(
    vm: KvmGuestVm, handle: KvmgtHandle
) -> None:
    runner = vm.runners[0]
    with pytest.raises(GuestExitError, match=r"vector 14 .*cr2 0x1000000000"):
        runner.execute([(stub.OP_LOAD, 4, 64 << 30, 0, 1)])  # never mapped: #PF
    with pytest.raises(GuestExitError, match="unknown micro-op"):
        runner.execute([(99, 4, 0, 0, 1)])
    port = vm.port()
    port.store(0x1000, 0xFEED, 2)
    assert vm.read(0x1000, 2) == b"\xed\xfe"


def test_msis_are_taken_through_the_idt(
    backend: KvmgtBackend, vm: KvmGuestVm, handle: KvmgtHandle
) -> None:
    port = vm.port()
    backend.inject_msi(handle, 0xFEE0_0000, 0x0041)
    runner = vm.runners[0]
    assert port.wait_msi(1.0) == Msi(0xFEE0_0000, 0x41)
    # the guest's own interrupt handler recorded the vector in its mailbox ring
    ring = struct.unpack_from("<64Q", runner.mailbox, stub.MB_IRQ_RING)
    assert 0x41 in ring
    # an SMI-mode message cannot be taken as sent: it rings the doorbell vector
    backend.inject_msi(handle, 0xFEE0_0000, 0x0200 | 0x42)
    assert port.wait_msi(1.0) == Msi(0xFEE0_0000, 0x242)
    assert runner.mailbox_u64[stub.MB_IRQ_RING // 8 + (runner.irqs_seen - 1) % 64] == stub.DOORBELL_VEC
    assert port.wait_msi(0.01) is None


def test_port_and_handle_after_detach(backend: KvmgtBackend, vm: KvmGuestVm, handle: KvmgtHandle) -> None:
    backend.enable_page_track(handle, 5)
    backend.dma_map_guest_page(handle, 6, PAGE_SIZE)
    backend.detach_vgpu(handle)
    assert vm.held().total == 0
    with pytest.raises(VgpuStateError):
        vm.port()
    with pytest.raises(VgpuStateError):
        backend.read_gpa(handle, 0, 4)
    with pytest.raises(VgpuStateError):
        backend.enable_page_track(handle, 5)
    # release hooks on the stale handle find nothing left to release
    backend.disable_page_track(handle, 5)
    backend.dma_unmap_guest_page(handle, 0x1000)
    backend.detach_vgpu(handle)
    assert vm.memslots.slot_count == 1


def test_create_vm_argument_errors(backend: KvmgtBackend, host: object) -> None:
    with pytest.raises(VmCreateError, match="at most 3072 MiB"):
        backend.create_vm_with(host, 4 << 30, "too-big", vcpus=1)  # type: ignore[arg-type]
    with pytest.raises(VmCreateError, match=f"1..{stub.MAX_VCPUS} vCPUs, asked for"):
        backend.create_vm_with(host, 1 << 20, "too-many", vcpus=stub.MAX_VCPUS + 1)  # type: ignore[arg-type]


class _Exploding(dict):
    armed = True

    def get(self, key: object, default: object = None) -> object:
        if self.armed:
            raise RuntimeError("device model bug")
        return super().get(key, default)


def test_a_core_error_during_an_exit_leaves_the_vcpu_usable(
    vm: KvmGuestVm, handle: KvmgtHandle, ops: RecordingOps
) -> None:
    _program_bar(vm, ops)
    answers = _Exploding({BAR + 0x10: 0x5A5A})
    ops.mmio_answers = answers
    with pytest.raises(RuntimeError, match="device model bug"):
        vm.port().mmio_read(BAR + 0x10, 4)
    answers.armed = False
    assert vm.port().mmio_read(BAR + 0x10, 4) == 0x5A5A


class _CountingOps(RecordingOps):
    """Recording ops that also count how often the backend binds MMIO accessors."""

    def __init__(self) -> None:
        super().__init__()
        self.bound = 0

    def mmio_accessors(self, vgpu: object) -> tuple[object, object]:  # type: ignore[override]
        self.bound += 1
        return super().mmio_accessors(vgpu)


def test_mmio_accessors_are_bound_per_bar_placement_and_dropped_at_detach(backend: KvmgtBackend) -> None:
    ops = _CountingOps()
    host = HostContext(ops=ops, sysmem=SystemMemory(), name="kvmgt-accessors")
    backend.host_init(host)
    vm = backend.create_vm_with(host, 16 << 20, "accessors", vcpus=1)
    try:
        handle = backend.attach_vgpu(VgpuToken(id=7), vm)
        assert ops.bound == 0  # nothing placed yet: no binding
        _program_bar(vm, ops)
        port = vm.port()
        port.mmio_write_repeat(BAR + 0x40, 0x1234_5678, 4, 50)
        port.mmio_write(BAR + 0x48, 0xAB, 1)
        assert ops.bound == 1  # one binding served every exit
        writes = [c.args for c in ops.of("emulate_mmio_write")]
        assert writes == [(BAR + 0x40, 0x1234_5678, 4)] * 50 + [(BAR + 0x48, 0xAB, 1)]
        _program_bar(vm, ops, base=BAR + regs.BAR0_SIZE)  # moved: bound again on first use
        port.mmio_write(BAR + regs.BAR0_SIZE, 1, 4)
        assert ops.bound == 2
        backend.detach_vgpu(handle)
        # a loop racing the detach finds the unassigned handlers, never the old vGPU
        lo, hi, write, read = vm.trap
        assert (lo, hi) == (0, 0)
        ops.clear()
        write(BAR, 5, 4)
        assert read(BAR, 4) == 0xFFFF_FFFF_FFFF_FFFF
        assert ops.calls == [] and vm.last_unassigned == ("mmio read", BAR)
    finally:
        vm.close()


def test_stub_repeat_count_zero_does_nothing(vm: KvmGuestVm, handle: KvmgtHandle) -> None:
    runner = vm.runners[0]
    vm.write(0x2000, b"\x11" * 8)
    values = runner.execute([
        (stub.OP_STORE, 4, 0x2000, 0xAABBCCDD, 0),
        (stub.OP_LOAD, 4, 0x2000, 0x77, 0),
        (stub.OP_STORE, 2, 0x2004, 0xEEFF, 3),
    ])
    assert vm.read(0x2000, 8) == b"\x11" * 4 + b"\xff\xee\x11\x11"
    assert values[1] == 0x77  # a load done zero times leaves the value field as it was
    with pytest.raises(GuestExitError, match="unknown micro-op"):
        runner.execute([(99, 4, 0, 0, 0)])  # an unknown op is reported whatever its count


def test_a_vcpu_shutdown_is_reported_and_the_vm_still_closes(
    backend: KvmgtBackend, host: HostContext
) -> None:
    guest = backend.create_vm_with(host, 16 << 20, "shutdown", vcpus=1)
    try:
        backend.attach_vgpu(VgpuToken(id=3), guest)
        # no IDT: the #PF of a load from unmapped space escalates to a triple fault
        guest.fw_view[stub.FW_IDT : stub.FW_IDT + 256 * 16] = bytes(256 * 16)
        with pytest.raises(GuestExitError, match="KVM_EXIT_SHUTDOWN") as info:
            guest.runners[0].execute([(stub.OP_LOAD, 4, 64 << 30, 0, 1)])
        assert "triple fault" in str(info.value)
    finally:
        guest.close()  # with the error's traceback still alive: no exported kvm_run view
