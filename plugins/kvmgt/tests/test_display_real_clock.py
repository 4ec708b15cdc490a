"""A kvmgt guest's display on the real-time host clock (the default for kvmgt hosts)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gvt_core.cli import main
from gvt_core.device.display.screen import capture
from gvt_core.device.gvt import Gvt
from gvt_core.guest.display import PIPE, GuestDisplay
from gvt_core.guest.driver import GuestDriver
from gvt_core.hw.clock import NSEC_PER_SEC, RealClock


def test_vblanks_and_a_flip_in_real_time(kvm: None) -> None:
    with Gvt.open("kvmgt") as gvt:
        assert isinstance(gvt.clock, RealClock)  # kvmgt guests run in real time
        vm = gvt.create_vm(64 << 20, "realtime")
        try:
            vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
            driver = GuestDriver(vm.port(), fb_width=128, fb_height=64)
            driver.load()
            display = GuestDisplay(driver, gvt.clock.sleep)
            mode = display.bring_up()
            assert mode is not None and mode.size == (1024, 768)
            assert vgpu.display is not None
            timer = vgpu.display.vblank.pipes[PIPE]
            t0, fired0 = time.monotonic(), timer.fired + timer.missed
            counted = display.count_vblanks(NSEC_PER_SEC // 2)
            elapsed = time.monotonic() - t0
            periods = timer.fired + timer.missed - fired0
            # every period of real time was a vblank (fired, or skipped when the host lagged)
            assert abs(periods - elapsed * mode.refresh_mhz / 1000) <= 2
            # the guest took the ones that fired while its vblank interrupt was on
            assert 1 <= counted <= periods
            other = display.alloc_framebuffer(*mode.size)
            display.flip(other)  # flip-done arrives at a real vblank
            assert capture(vgpu).primary.base == other.gm
            gvt.destroy_vgpu(vgpu)
            fired = timer.fired
            time.sleep(0.1)
            assert timer.fired == fired  # nothing acts for a destroyed vGPU
        finally:
            vm.close()


def test_demo_three_kvm_guests_screens(kvm: None, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``gvt demo --backend kvmgt --vgpus 3 --screens DIR``: three real-time guests,
    three distinct screens and the mosaic."""
    assert main(["demo", "--backend", "kvmgt", "--vgpus", "3", "--rounds", "1",
                 "--screens", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["clock"] == "real"
    vgpus = out["vgpus"]
    assert [(v["width"], v["height"]) for v in vgpus] == [(1024, 768)] * 3
    assert len({v["screen_sha256"] for v in vgpus}) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mosaic.png", "vgpu1.png", "vgpu2.png", "vgpu3.png"]
