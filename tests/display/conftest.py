"""Fixtures of the display tests: a plain register file for unit tests, and real
vGPUs on the sim backend for the end-to-end ones."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs
import pytest

from gvt_core.device.display.vdisplay import VirtualDisplay
from gvt_core.device.gvt import Gvt
from gvt_core.device.interrupt import IrqEvent
from gvt_core.hw import regs
from gvt_core.hw.clock import SimulatedClock
from gvt_core.testing.guests import BarGuest, enable_decoding

GUEST_MEM = 64 * regs.MiB


class RegisterFile:
    """A sparse dword register file (what a RegisterView needs)."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {}

    def get32(self, offset: int) -> int:
        return self.values.get(offset, 0)

    def set32(self, offset: int, value: int) -> None:
        self.values[offset] = value & 0xFFFF_FFFF


@pytest.fixture
def regfile() -> RegisterFile:
    return RegisterFile()


@pytest.fixture
def events() -> list[IrqEvent]:
    return []


@attrs.define(eq=False)
class Guest(BarGuest):
    """A guest with a vGPU; its display is the vGPU's own, on the host's clock."""

    display: VirtualDisplay
    clock: SimulatedClock

    def map_gm(self, gm: int, gpa: int, pages: int) -> None:
        """Guest GGTT entries: ``pages`` pages at GM ``gm`` -> guest RAM at ``gpa``."""
        for i in range(pages):
            pte = (gpa + i * regs.GTT_PAGE_SIZE) | regs.GEN8_PAGE_PRESENT
            self.w(regs.GTT_START_OFFSET + ((gm >> 12) + i) * 8, pte, 8)

    def dwrite(self, offset: int, value: int) -> None:
        """A guest write of a display register (through BAR0 and the register table)."""
        self.w(offset, value)

    def dread(self, offset: int) -> int:
        return self.r(offset)

    def enable_msi(self, address: int = 0xFEE0_0000, data: int = 0x4041) -> None:
        """MSI on, and the master interrupt enabled (what the display tests wait on)."""
        super().enable_msi(address, data)
        self.w(regs.GEN8_MASTER_IRQ, regs.GEN8_MASTER_IRQ_CONTROL)


def open_guest(gvt: Gvt, type_name: str = "GVTg_V4_8") -> Guest:
    vm = gvt.create_vm(GUEST_MEM, name=f"guest{len(gvt.vgpus) + 1}")
    vgpu = gvt.create_vgpu(type_name, vm)
    port = vm.port()
    bar0 = enable_decoding(port)
    assert vgpu.display is not None and isinstance(gvt.clock, SimulatedClock)
    return Guest(gvt, vm, vgpu, port, bar0, vgpu.display, gvt.clock)


@pytest.fixture
def sim_gvt() -> Iterator[Gvt]:
    host = Gvt.open("sim")
    yield host
    host.close()


@pytest.fixture
def clock(sim_gvt: Gvt) -> SimulatedClock:
    assert isinstance(sim_gvt.clock, SimulatedClock)
    return sim_gvt.clock


@pytest.fixture
def make_guest(sim_gvt: Gvt, clock: SimulatedClock) -> Callable[..., Guest]:
    def make(type_name: str = "GVTg_V4_8") -> Guest:
        return open_guest(sim_gvt, type_name)

    return make
