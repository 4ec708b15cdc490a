"""Fuzz: random descriptors, context images and rings never raise in the host.

A guest writes arbitrary bytes into its logical ring context and its ring,
then arbitrary descriptors through ELSP. Whatever it writes, the host does
not raise (nothing in the guest's thread, no internal error in the GPU
thread), every submission ends (completed or a fault of this vGPU), the
other guest's work completes, and the host holds nothing for it afterwards.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gvt_core.device.gvt import Gvt
from gvt_core.guest import commands as cmd
from gvt_core.guest.driver import GuestDriver
from gvt_core.guest.gpu import GuestGpu
from gvt_core.hw import regs
from gvt_core.hw.engine import context as lrc

RCS, BCS = regs.ENGINE_RCS, regs.ENGINE_BCS


@pytest.fixture(scope="module")
def host() -> Iterator[tuple[Gvt, GuestGpu]]:
    gvt = Gvt.open("sim")
    gvt.scheduler.watchdog_ns = 2_000_000
    good = _guest(gvt, "good")
    yield gvt, good
    gvt.close()


def _guest(gvt: Gvt, name: str) -> GuestGpu:
    vm = gvt.create_vm(32 << 20, name=name)
    vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
    driver = GuestDriver(vm.port(), fb_width=32, fb_height=16, ring_pages=2)
    driver.load()
    gvt.activate_vgpu(vgpu)
    return GuestGpu(driver)


u32 = st.integers(0, 0xFFFF_FFFF)
#: context-image dwords a fuzzer cares about, the rest left as the guest built them.
image_fields = st.dictionaries(
    st.sampled_from([lrc.CTX_RING_HEAD, lrc.CTX_RING_TAIL, lrc.CTX_RING_BUFFER_START,
                     lrc.CTX_RING_BUFFER_CONTROL, lrc.CTX_CONTEXT_CONTROL,
                     lrc.CTX_PDP0_LDW, lrc.CTX_PDP0_UDW, lrc.CTX_PDP1_LDW, lrc.CTX_PDP3_UDW]),
    u32, max_size=4)
ring_words = st.lists(st.one_of(u32, st.sampled_from([0, 0x0500_0000, 0x1880_0001,
                                                      0x1100_0001, 0x1020_0002])),
                      max_size=24)
descriptors = st.one_of(u32.map(lambda lo: lo), st.integers(0, (1 << 64) - 1))


def _quiet(gvt: Gvt, vgpu: Any) -> bool:
    sub = vgpu.execution
    return sub.pending() == 0 and all(w.vgpu is not vgpu for w in gvt.scheduler.running.values())


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(fields=image_fields, words=ring_words, desc_mode=st.sampled_from(["own", "raw"]),
       raw0=descriptors, raw1=descriptors, engine=st.sampled_from([RCS, BCS]))
def test_hostile_submissions_never_raise_in_the_host(host: Any, fields: dict[int, int],
                                                     words: list[int], desc_mode: str,
                                                     raw0: int, raw1: int, engine: int) -> None:
    gvt, good = host
    gm = gvt.gpu.host_gm.in_use()
    bad = _guest(gvt, "bad")
    vgpu = next(v for v in gvt.vgpus.values() if v.vm.port() is bad.port)
    ctx = bad.context(engine, ring_pages=1)
    if words:
        ctx.ring.write(0, struct.pack(f"<{len(words)}I", *words))
        ctx.tail = (4 * len(words) + 7) & ~7 & (ctx.ring.size - 1)
    ctx.publish_tail()
    for index, value in fields.items():
        ctx.lrc.write(regs.GTT_PAGE_SIZE + 4 * (index + 1), struct.pack("<I", value))
    d0 = ctx.descriptor() if desc_mode == "own" else raw0
    bad.write_elsp(engine, d0, raw1 if desc_mode == "raw" else 0)
    # the other guest's work goes on meanwhile
    gctx = good.context(BCS, ring_pages=1)
    surf = gctx.ppgtt.alloc(4096)
    good.run(gctx, cmd.color_blt(surf.gma, 256, 0, 0, 16, 4, 0x12345678), 30.0)
    assert surf.read_dwords(0, 1) == (0x12345678,)
    deadline = time.monotonic() + 30
    while not _quiet(gvt, vgpu):
        assert time.monotonic() < deadline, "a hostile submission never ended"
        time.sleep(0.002)
    assert gvt.scheduler.stats.internal_errors == 0, gvt.scheduler.last_error
    vid = vgpu.id
    gvt.destroy_vgpu(vgpu)
    assert gvt.gpu.host_gm.in_use() == gm
    assert not [o for o in gvt.gpu.sysmem.owners() if o.startswith(f"vgpu{vid}-")]
