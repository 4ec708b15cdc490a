"""A compiled guest program brings up a vGPU on real KVM; the host state is checked.

The program (``gvt_kvmgt/guest_programs/vgpu_bringup.c``) runs on a vCPU
thread with no Python in its loop. Afterwards the test compares what the
device model built -- host GGTT entries, the shadow PPGTT -- with the
guest's own tables.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SHIFT
from gvt_kvmgt import program as prog
from gvt_kvmgt.vm import KvmGuestVm

gvt_mod = pytest.importorskip("gvt_core.device.gvt", reason="the device model is not installed")
interrupt = pytest.importorskip("gvt_core.device.interrupt")

BAR0 = 0xC000_0000
RESULT = struct.Struct(f"<7Q{prog.BRINGUP_GGTT_ENTRIES}QQ8QQ")


@pytest.fixture
def gvt_host(kvm: None) -> Iterator[object]:
    host = gvt_mod.Gvt.open("kvmgt")
    yield host
    host.close()


def _mfn(vm: KvmGuestVm, gpa: int) -> int:
    from gvt_kvmgt import hostmem

    return hostmem.pagemap().frame_of(vm.ram_base + gpa)


def test_bringup_program_on_real_kvm(gvt_host: object, gcc: str) -> None:
    gvt = gvt_host
    image = prog.build_bringup(BAR0, gcc)
    vm: KvmGuestVm = gvt.create_vm(64 << 20, "bringup")  # type: ignore[attr-defined]
    try:
        vgpu = gvt.create_vgpu(gvt.types()[0].type.name, vm)  # type: ignore[attr-defined]
        run = prog.ProgramRun(vm)
        run.start(image, prog.LOAD_ADDR)
        assert run.wait_step(13, 20.0), f"program stopped early: steps {run.steps}"
        with vgpu.lock:
            vgpu.irq.raise_event(interrupt.IrqEvent.RCS_MI_USER_INTERRUPT)
        status = run.join(20.0)
        assert status.ok, f"failed at step {status.value}: {prog.BRINGUP_STEPS.get(status.value)}"
        assert list(status.steps) == list(range(1, 14))

        fields = RESULT.unpack(vm.read(prog.RESULT_ADDR, RESULT.size))
        magic, mbase, msize, _nbase, _nsize, first, count = fields[:7]
        ggtt_pages = fields[7 : 7 + count]
        pml4 = fields[7 + count]
        data = fields[8 + count : 16 + count]
        vector = fields[16 + count]
        assert magic == regs.VGT_MAGIC and vector == prog.BRINGUP_MSI_VECTOR
        assert first == mbase >> PAGE_SHIFT and msize > 0

        # host GGTT: each guest entry shadowed to the page's bus (= host physical) address
        for i, page in enumerate(ggtt_pages):
            host_pte = int(gvt.gpu.ggtt[first + i])  # type: ignore[attr-defined]
            assert host_pte & regs.GEN8_PAGE_PRESENT
            assert host_pte & regs.GTT_ADDR_MASK == _mfn(vm, page) << PAGE_SHIFT
            assert gvt.gpu.sysmem.read(host_pte & regs.GTT_ADDR_MASK, 8) == (  # type: ignore[attr-defined]
                (0x6767 << 48) | i
            ).to_bytes(8, "little")

        # shadow PPGTT: the guest's table after its trapped rewrites
        mm = vgpu.ppgtt.find(4, (pml4, 0, 0, 0))
        assert mm is not None and mm.shadowed
        expect = {0: data[0], 1: data[4], 2: data[2], 5: data[5]}
        for index, page in expect.items():
            assert mm.gma_to_gpa(index << PAGE_SHIFT) == page
            assert mm.gma_to_dma(index << PAGE_SHIFT) == _mfn(vm, page) << PAGE_SHIFT
        assert mm.gma_to_gpa(3 << PAGE_SHIFT) is None  # cleared by the guest
        # every guest table page the shadow keeps in sync is write-tracked by a read-only slot
        tables = vgpu.ppgtt.guest_table_gfns()
        assert {pml4 >> PAGE_SHIFT} <= tables and len(tables) == 4
        in_sync = {g for g in tables if not vgpu.ppgtt.is_out_of_sync(g)}
        assert set(vm.memslots.tracked()) == in_sync and len(in_sync) >= 3
        assert vm.unassigned_accesses == 0
    finally:
        vm.close()  # before the host closes: destroying the vGPU then finds nothing held


def test_a_failing_step_is_reported(kvm: None, gcc: str, backend: object, host: object) -> None:
    """Without a vGPU attached nothing answers at 00:02.0: the program stops at step 1."""
    vm = backend.create_vm_with(host, 8 << 20, "no-vgpu", vcpus=1)  # type: ignore[attr-defined]
    try:
        run = prog.ProgramRun(vm)
        run.start(prog.build_bringup(BAR0, gcc), prog.LOAD_ADDR)
        status = run.join(10.0)
        assert not status.ok and status.value == 1 and status.steps == (1,)
    finally:
        vm.close()


def test_guest_driver_model_on_real_kvm(gvt_host: object) -> None:
    """The Python guest-driver model, unchanged, over a GuestPort whose accesses are
    real instructions on a vCPU (each trap a KVM exit)."""
    from gvt_core.guest.driver import GuestDriver
    from gvt_core.mpt.ops import Msi

    gvt = gvt_host
    vm: KvmGuestVm = gvt.create_vm(64 << 20, "driver")  # type: ignore[attr-defined]
    try:
        vgpu = gvt.create_vgpu(gvt.types()[0].type.name, vm)  # type: ignore[attr-defined]
        exits_before = vm.runners[0].exits
        report = GuestDriver(vm.port(), fb_width=64, fb_height=64).load()
        assert report.vgt_id == vgpu.id and report.bar0 == vm.trap[0]
        assert vm.runners[0].exits - exits_before > 100
        with vgpu.lock:
            vgpu.irq.raise_event(interrupt.IrqEvent.RCS_MI_USER_INTERRUPT)
        assert vm.port().wait_msi(2.0) == Msi(report.msi_address, report.msi_data)
        gvt.destroy_vgpu(vgpu)  # type: ignore[attr-defined]
        assert vm.held().total == 0
    finally:
        vm.close()
