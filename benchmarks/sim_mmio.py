"""``sim_mmio_roundtrip``: one guest register write through the whole sim path.

Path: GuestPort (sim) -> trap-area check -> ``Gvt.emulate_mmio_write`` ->
register table -> handler -> virtual register file. Baseline: the least any
emulator must do, one dict lookup and one bound-method call, in the same
process and loop shape.
"""

from __future__ import annotations

from gvt_core.hw import regs
from harness import Benchmark, Result, best_of

#: a plain ring register of the blitter engine (BCS RING_TAIL): table entry, vreg store.
REG = regs.BLT_RING_BASE + regs.RING_TAIL


class _Register:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def write(self, value: int) -> None:
        self.value = value


def run(quick: bool) -> list[Result]:
    from gvt_core.device.gvt import Gvt
    from gvt_core.guest.driver import GuestDriver

    n = 20_000 if quick else 200_000
    repeat = 3 if quick else 7
    with Gvt.open("sim") as gvt:
        vm = gvt.create_vm(64 << 20, name="bench")
        smallest = gvt.smallest_type
        vgpu = gvt.create_vgpu(smallest, vm)
        drv = GuestDriver(vm.port(), fb_width=64, fb_height=64)
        drv.load()
        port = vm.port()
        gpa = drv.bar0 + REG
        write = port.mmio_write

        def full() -> None:
            for i in range(n):
                write(gpa, i, 4)

        table = {REG: _Register().write}

        def baseline() -> None:
            for i in range(n):
                table[REG](i)

        t_full = best_of(full, repeat) / n
        t_base = best_of(baseline, repeat) / n
        if vgpu.mmio.read(REG, 4) != n - 1:
            raise RuntimeError("the benchmark's register writes did not reach the vGPU")
        gvt.destroy_vgpu(vgpu)
        vm.close()
    return [
        Result(
            name="sim_mmio_roundtrip",
            value=t_full * 1e9,
            unit="ns/write",
            baseline=t_base * 1e9,
            goal=4.0,
            note="GuestPort->sim->core ops->register table->handler vs dict lookup + method call",
        )
    ]


BENCHMARKS = [Benchmark("sim_mmio_roundtrip", run)]
