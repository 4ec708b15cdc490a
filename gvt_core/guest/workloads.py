"""Workload mixes a guest (or the host, natively) submits: the demo's and the benchmarks'.

The command lists are plain dwords for given graphics addresses, so the
same work can run natively on the host engines and virtually through a
vGPU. :class:`DemoMix` is what ``gvt demo`` runs in each guest: every
round, a batch of stores plus a PIPE_CONTROL post-sync write on RCS and a
fill plus a copy on BCS, each checked in guest memory afterwards.
"""

from __future__ import annotations

import struct

from gvt_core.errors import GuestDriverError
from gvt_core.guest import commands as cmd
from gvt_core.guest.gpu import GuestContext, GuestGpu
from gvt_core.hw import regs

FULL_HD = (1920, 1080)


def blit_heavy(dst: int, src: int, seed: int, size: tuple[int, int] = FULL_HD) -> list[int]:
    """A 32-bit fill of ``src`` and a copy of it to ``dst`` (two 8 MB operations at 1080p)."""
    w, h = size
    return (cmd.color_blt(src, 4 * w, 0, 0, w, h, 0xFF00_0000 | seed)
            + cmd.src_copy_blt(dst, 4 * w, 0, 0, w, h, src, 4 * w, 0, 0))


def small_commands(out: int, seed: int, count: int = 64) -> list[int]:
    """``count`` MI_STORE_DATA_IMM to consecutive dwords of ``out``."""
    words: list[int] = []
    for i in range(count):
        words += cmd.store_dword(out + 4 * i, seed + i)
    return words


class DemoMix:
    """The per-guest work of ``gvt demo`` (see the module docstring)."""

    SURFACE = (256, 128)
    STORES = 16

    def __init__(self, gpu: GuestGpu) -> None:
        self.gpu = gpu
        self.rcs: GuestContext = gpu.context(regs.ENGINE_RCS, levels=4)
        self.bcs: GuestContext = gpu.context(regs.ENGINE_BCS, levels=3)
        self.out = self.rcs.ppgtt.alloc(4096)
        self.batch = self.rcs.ppgtt.alloc(4096)
        w, h = self.SURFACE
        self.src = self.bcs.ppgtt.alloc(4 * w * h)
        self.dst = self.bcs.ppgtt.alloc(4 * w * h)
        self.rounds = 0

    def run_round(self, seed: int, timeout: float = 30.0) -> None:
        """Submit one round on both engines and wait for both."""
        batch = []
        for i in range(self.STORES):
            batch += cmd.store_dword(self.out.gma + 4 * i, seed + i)
        self.batch.write_dwords(0, batch + cmd.batch_buffer_end())
        self.rcs.emit(cmd.batch_buffer_start(self.batch.gma)
                      + cmd.pipe_control(self.out.gma + 0x100, seed, notify=True))
        w, h = self.SURFACE
        self.bcs.emit(cmd.color_blt(self.src.gma, 4 * w, 0, 0, w, h, seed)
                      + cmd.src_copy_blt(self.dst.gma, 4 * w, 0, 0, w, h, self.src.gma, 4 * w,
                                         0, 0)
                      + cmd.flush_dw())
        self.gpu.submit(self.rcs)
        self.gpu.submit(self.bcs)
        self.gpu.wait_complete([self.rcs, self.bcs], timeout)
        self.rounds += 1
        self.check(seed)

    def check(self, seed: int) -> None:
        """What the last round must have left in guest memory."""
        got = self.out.read_dwords(0, self.STORES)
        if got != tuple((seed + i) & 0xFFFF_FFFF for i in range(self.STORES)):
            raise GuestDriverError("check RCS results", f"stores read back {got[:4]}...")
        if self.out.read_dwords(0x100, 1)[0] != seed & 0xFFFF_FFFF:
            raise GuestDriverError("check RCS results", "PIPE_CONTROL post-sync value missing")
        w, h = self.SURFACE
        last = struct.unpack("<I", self.dst.read(4 * (w * h - 1), 4))[0]
        if last != seed & 0xFFFF_FFFF:
            raise GuestDriverError("check BCS results", f"copied pixel is {last:#x}")


