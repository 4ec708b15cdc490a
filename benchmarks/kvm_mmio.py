"""``kvm_mmio_roundtrip``: a real guest loop writing a vGPU register on KVM.

Each guest store to BAR0 is a KVM exit -> the Python exit loop -> the device
model's ``Gvt.emulate_mmio_write`` (register table, handler) -> resume. The
baseline, measured in the same run, is the bare C exit loop of
``kvm_exit_loop.c`` (built with gcc): a real-mode guest storing to an address
without memslot, resumed immediately. A second figure,
``kvm_mmio_exit_vmm``, runs the same guest loop with a do-nothing core so the
VMM's own exit cost shows apart from the device model's.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from gvt_core.hw import regs
from harness import Benchmark, Result

#: a plain ring register of the blitter engine (BCS RING_TAIL): table entry, vreg store.
REG = regs.BLT_RING_BASE + regs.RING_TAIL
SOURCE = Path(__file__).with_name("kvm_exit_loop.c")


def _unavailable() -> str | None:
    try:
        from gvt_kvmgt import probe
    except ImportError:
        return "gvt-kvmgt is not installed"
    reason = probe()
    if reason:
        return reason
    if shutil.which("gcc") is None:
        return "gcc is needed to build the C baseline"
    return None


def c_exit_ns(kind: str, n: int, repeat: int) -> float:
    """Best ns per exit of the C loop (``kind`` 'mmio' or 'io')."""
    with tempfile.TemporaryDirectory(prefix="gvt-bench-") as tmp:
        exe = Path(tmp) / "kvm_exit_loop"
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(SOURCE)], check=True)
        return min(
            float(subprocess.run([str(exe), kind, str(n)], check=True, capture_output=True,
                                 text=True).stdout)
            for _ in range(repeat)
        )


class _NullOps:
    """A core that does nothing: isolates the VMM's exit path."""

    def emulate_cfg_read(self, vgpu: object, offset: int, size: int) -> int:
        return {regs.PCI_COMMAND: regs.PCI_COMMAND_MEMORY,
                regs.PCI_BASE_ADDRESS_0: 0xC000_0000 | regs.PCI_BASE_ADDRESS_MEM_TYPE_64}.get(offset, 0)

    def emulate_cfg_write(self, vgpu: object, offset: int, value: int, size: int) -> None:
        return None

    def emulate_mmio_read(self, vgpu: object, gpa: int, size: int) -> int:
        return 0

    def emulate_mmio_write(self, vgpu: object, gpa: int, value: int, size: int) -> None:
        return None

    def page_track_write(self, vgpu: object, gpa: int, data: bytes) -> None:
        return None

    def is_page_tracked(self, vgpu: object, gfn: int) -> bool:
        return False


def _per_exit(port: object, gpa: int, n: int, repeat: int) -> float:
    import time

    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        port.mmio_write_repeat(gpa, 0x1234, 4, n)  # type: ignore[attr-defined]
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e9


def run(quick: bool) -> list[Result]:
    from gvt_core.device.gvt import Gvt
    from gvt_core.guest.driver import GuestDriver
    from gvt_core.hw.sysmem import SystemMemory
    from gvt_core.mpt.ops import HostContext
    from gvt_core.testing.plugin import VgpuToken
    from gvt_kvmgt import KvmgtBackend

    n = 5_000 if quick else 50_000
    repeat = 3 if quick else 5
    base = c_exit_ns("mmio", n, repeat)

    with Gvt.open("kvmgt") as gvt:
        vm = gvt.create_vm(64 << 20, name="bench")
        smallest = min(gvt.types(), key=lambda t: t.low_gm_size).name
        vgpu = gvt.create_vgpu(smallest, vm)
        drv = GuestDriver(vm.port(), fb_width=64, fb_height=64)
        drv.load()
        port = vm.port()
        port.mmio_write_repeat(drv.bar0 + REG, 1, 4, 100)  # warm up
        full = _per_exit(port, drv.bar0 + REG, n, repeat)
        if vgpu.mmio.read(REG, 4) != 0x1234:
            raise RuntimeError("the guest's register writes did not reach the vGPU")
        gvt.destroy_vgpu(vgpu)
        vm.close()

    backend = KvmgtBackend()
    host = HostContext(ops=_NullOps(), sysmem=SystemMemory())
    backend.host_init(host)
    vm = backend.create_vm(host, 16 << 20, "bench-null")
    try:
        backend.attach_vgpu(VgpuToken(id=1), vm)
        port = vm.port()
        port.cfg_write(regs.PCI_COMMAND, regs.PCI_COMMAND_MEMORY, 2)
        port.mmio_write_repeat(0xC000_0000 + REG, 1, 4, 100)
        vmm = _per_exit(port, 0xC000_0000 + REG, n, repeat)
    finally:
        vm.close()
        backend.host_exit(host)
    return [
        Result("kvm_mmio_roundtrip", full, "ns/exit", base, goal=1.3,
               note="guest store -> KVM exit -> Gvt.emulate_mmio_write -> resume; baseline: C exit loop"),
        Result("kvm_mmio_exit_vmm", vmm, "ns/exit", base,
               note="same guest loop, do-nothing core: the Python VMM's exit path alone"),
    ]


BENCHMARKS = [Benchmark("kvm_mmio_roundtrip", run, _unavailable)]
