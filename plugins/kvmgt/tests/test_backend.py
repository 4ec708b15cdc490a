"""Hooks beyond the contract suite: usability reasons, frames, 2 MiB DMA, two vCPUs at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from gvt_core.errors import DmaMapError, HookUnsupportedError
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE, SystemMemory
from gvt_core.mpt.loader import register_plugin
from gvt_core.mpt.ops import HostContext
from gvt_core.testing.plugin import VgpuToken
from gvt_core.testing.recording import RecordingOps
from gvt_kvmgt import KvmgtBackend, KvmgtHandle, hostmem
from gvt_kvmgt.dma import SIZE_2M
from gvt_kvmgt.vm import KvmGuestVm

BAR = 0xE000_0000


def test_unusable_where_the_device_is_missing() -> None:
    info = KvmgtBackend(device="/nonexistent/kvm").backend_info()
    assert not info.usable
    assert "/nonexistent/kvm cannot be opened" in info.reason
    assert info.capabilities.can_create_vm


def test_usable_backend_declares_kvm_capabilities(kvm: None) -> None:
    loaded = register_plugin(KvmgtBackend(), "kvmgt")
    caps = loaded.info.capabilities
    assert loaded.info.usable and caps.page_track.name == "WRITE_LANDED" and caps.dma.name == "IDENTITY"
    assert not caps.needs_trap_area and caps.needs_aperture_map and caps.max_dma_page == PAGE_SIZE
    assert "set_trap_area" not in loaded.mpt.implemented
    with pytest.raises(HookUnsupportedError, match="kvmgt"):
        loaded.mpt.pause_domain(object())


def test_hidden_frame_numbers_raise_unsupported(
    backend: KvmgtBackend, handle: KvmgtHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    blind = hostmem.Pagemap()
    blind.reason = "the PFN field reads 0 without CAP_SYS_ADMIN"
    monkeypatch.setattr(hostmem, "_PAGEMAP", blind)
    with pytest.raises(HookUnsupportedError, match="CAP_SYS_ADMIN"):
        backend.gfn_to_mfn(handle, 1)
    with pytest.raises(HookUnsupportedError, match="CAP_SYS_ADMIN"):
        backend.from_virt_to_mfn(handle.vm.ram_base)
    with pytest.raises(HookUnsupportedError):
        backend.dma_map_guest_page(handle, 1, PAGE_SIZE)
    assert handle.vm.held().dma_maps == 0


def test_frames_agree_with_dma_addresses_and_sysmem(
    backend: KvmgtBackend, host: HostContext, handle: KvmgtHandle
) -> None:
    handle.vm.write(7 << PAGE_SHIFT, b"frame seven")
    a = backend.dma_map_guest_page(handle, 7, PAGE_SIZE)
    assert a == backend.gfn_to_mfn(handle, 7) << PAGE_SHIFT
    assert host.sysmem.read(a, 11) == b"frame seven"
    assert host.sysmem.owner(a >> PAGE_SHIFT).startswith("kvmgt:")
    backend.dma_unmap_guest_page(handle, a)


@pytest.fixture
def huge_backend(kvm: None) -> Iterator[tuple[KvmgtBackend, HostContext]]:
    b = KvmgtBackend(max_dma_page=SIZE_2M)
    ctx = HostContext(ops=RecordingOps(), sysmem=SystemMemory())
    b.host_init(ctx)
    yield b, ctx
    b.host_exit(ctx)


def test_2m_maps_only_where_the_host_page_is_contiguous(
    huge_backend: tuple[KvmgtBackend, HostContext],
) -> None:
    backend, ctx = huge_backend
    vm = backend.create_vm(ctx, 8 << 20, "huge")
    try:
        h = backend.attach_vgpu(VgpuToken(id=9), vm)
        assert backend.backend_info().capabilities.max_dma_page == SIZE_2M
        gfn = 512
        base = vm.ram_base + (gfn << PAGE_SHIFT)
        hostmem.populate_write(base, SIZE_2M)
        frames = hostmem.pagemap().frames(base, 512)
        contiguous = frames[0] % 512 == 0 and frames == list(range(frames[0], frames[0] + 512))
        if contiguous:
            a = backend.dma_map_guest_page(h, gfn, SIZE_2M)
            assert a == frames[0] << PAGE_SHIFT
            assert ctx.sysmem.count() == 512
            # a 4 KiB map inside it shares the frames and the registration
            b = backend.dma_map_guest_page(h, gfn + 3, PAGE_SIZE)
            assert b == a + 3 * PAGE_SIZE and ctx.sysmem.count() == 512
            backend.dma_unmap_guest_page(h, a)
            assert ctx.sysmem.count() == 1
            backend.dma_unmap_guest_page(h, b)
        else:
            with pytest.raises(DmaMapError, match="contiguous"):
                backend.dma_map_guest_page(h, gfn, SIZE_2M)
        assert ctx.sysmem.count() == 0
        with pytest.raises(DmaMapError, match="aligned"):
            backend.dma_map_guest_page(h, gfn + 1, SIZE_2M)
    finally:
        vm.close()


class LockedCountingOps(RecordingOps):
    """Recording ops that also check no two vCPU threads are inside at once for one vGPU
    (the Gvt host takes vgpu.lock in its entry points; this stands in for it)."""

    def __init__(self) -> None:
        super().__init__()
        self.vgpu_lock = threading.Lock()
        self.threads: set[str] = set()

    def emulate_mmio_write(self, vgpu: object, gpa: int, value: int, size: int) -> None:
        with self.vgpu_lock:
            self.threads.add(threading.current_thread().name)
            super().emulate_mmio_write(vgpu, gpa, value, size)

    def page_track_write(self, vgpu: object, gpa: int, data: bytes) -> None:
        with self.vgpu_lock:
            super().page_track_write(vgpu, gpa, data)


def test_two_vcpus_trap_concurrently_into_one_vgpu(backend: KvmgtBackend) -> None:
    ops = LockedCountingOps()
    ctx = HostContext(ops=ops, sysmem=SystemMemory())
    backend.host_init(ctx)
    vm: KvmGuestVm = backend.create_vm_with(ctx, 16 << 20, "smp", vcpus=2)
    try:
        h = backend.attach_vgpu(VgpuToken(id=4), vm)
        ops.cfg_answers[regs.PCI_BASE_ADDRESS_0] = BAR | regs.PCI_BASE_ADDRESS_MEM_TYPE_64
        ops.cfg_answers[regs.PCI_BASE_ADDRESS_1] = 0
        ops.cfg_answers[regs.PCI_COMMAND] = regs.PCI_COMMAND_MEMORY
        vm.port(0).cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY, 2)
        tracked = 0x300
        backend.enable_page_track(h, tracked)
        n = 300
        errors: list[BaseException] = []

        def work(cpu: int) -> None:
            try:
                port = vm.port(cpu)
                for i in range(n):
                    port.mmio_write(BAR + 0x1000 * (cpu + 1) + 4 * (i % 16), i, 4)
                    if i % 10 == 0:
                        port.store((tracked << PAGE_SHIFT) + 8 * cpu, i, 8)
                # an MSI addressed to this vCPU's APIC arrives on this vCPU
                backend.inject_msi(h, 0xFEE0_0000 | (cpu << 12), 0x50 + cpu)
                got = port.wait_msi(2.0)
                assert got is not None and got.data == 0x50 + cpu
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(c,), name=f"vcpu{c}") for c in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        writes = ops.of("emulate_mmio_write")
        for cpu in (0, 1):
            mine = [c.args[1] for c in writes if BAR + 0x1000 * (cpu + 1) <= c.args[0] < BAR + 0x1000 * (cpu + 2)]
            assert mine == list(range(n))
        assert ops.threads == {"vcpu0", "vcpu1"}
        traps = ops.of("page_track_write")
        assert len(traps) == 2 * (n // 10)
        assert {c.args[0] - (tracked << PAGE_SHIFT) for c in traps} == {0, 8}
        assert vm.runners[0].exits > n and vm.runners[1].exits > n
    finally:
        vm.close()
