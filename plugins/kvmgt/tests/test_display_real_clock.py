"""A kvmgt guest's display on the real-time host clock (the default for kvmgt hosts)."""

from __future__ import annotations

import time

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
