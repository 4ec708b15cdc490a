"""Fixtures of the device-model tests: a guest with a vGPU on the sim backend.

Every access goes the way a guest's would: GuestPort -> sim -> Gvt CoreOps ->
the vGPU's MMIO / config emulation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs
import pytest

from gvt_core.device.gvt import Gvt
from gvt_core.hw import regs
from gvt_core.testing.guests import BarGuest, enable_decoding

GUEST_MEM = 64 * regs.MiB


@attrs.define(eq=False)
class Guest(BarGuest):
    def ggtt_w(self, gm: int, pte: int) -> None:
        self.w(regs.GTT_START_OFFSET + (gm >> 12) * 8, pte, 8)

    def ggtt_r(self, gm: int) -> int:
        return self.r(regs.GTT_START_OFFSET + (gm >> 12) * 8, 8)

    def enable_decoding(self) -> None:
        """Turn memory decoding on (after creation, or after a reset cleared it)."""
        self.bar0 = enable_decoding(self.port)

    def read_pvinfo(self) -> None:
        """What a GVT-g aware driver does first (it becomes pv_notified)."""
        assert self.r(regs.VGT_PVINFO_PAGE, 8) == regs.VGT_MAGIC


def open_guest(gvt: Gvt, type_name: str = "GVTg_V4_8", mem: int = GUEST_MEM) -> Guest:
    vm = gvt.create_vm(mem, name=f"guest{len(gvt.vgpus) + 1}")
    vgpu = gvt.create_vgpu(type_name, vm)
    guest = Guest(gvt, vm, vgpu, vm.port(), 0)
    guest.enable_decoding()
    return guest


@pytest.fixture
def sim_dma() -> str:
    """The sim backend's DMA model; a test module overrides it to cover both."""
    return "iommu"


@pytest.fixture
def sim_gvt(sim_dma: str) -> Iterator[Gvt]:
    """A fresh GVT host on the sim backend."""
    host = Gvt.open("sim", dma=sim_dma)
    yield host
    host.close()


@pytest.fixture
def make_guest(sim_gvt: Gvt) -> Callable[..., Guest]:
    """``make_guest(type_name=..., mem=...)``: a new guest with a vGPU on ``sim_gvt``."""

    def make(type_name: str = "GVTg_V4_8", mem: int = GUEST_MEM) -> Guest:
        return open_guest(sim_gvt, type_name, mem)

    return make
