"""Guests in real KVM VMs submit GPU work, on the real-time host clock."""

from __future__ import annotations

import threading

from gvt_core.device.gvt import Gvt
from gvt_core.guest.driver import GuestDriver
from gvt_core.guest.gpu import GuestGpu
from gvt_core.guest.workloads import DemoMix
from gvt_kvmgt.port import KvmGuestPort


def test_two_kvm_guests_run_the_demo_mix_on_the_real_clock(kvm: None) -> None:
    with Gvt.open("kvmgt", clock="real") as gvt:
        vms, mixes = [], []
        try:
            for i in range(2):
                vm = gvt.create_vm(32 << 20, name=f"exec{i}")
                vms.append(vm)
                vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
                driver = GuestDriver(vm.port(), fb_width=64, fb_height=32)
                driver.load()
                gvt.activate_vgpu(vgpu)
                assert isinstance(driver.port, KvmGuestPort)  # every access a vCPU instruction
                mixes.append(DemoMix(GuestGpu(driver)))
            errors: list[BaseException] = []

            def play(mix: DemoMix, n: int) -> None:
                try:
                    for r in range(3):
                        mix.run_round((n << 16) | r)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=play, args=(m, i)) for i, m in enumerate(mixes)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors
            for v in gvt.vgpus.values():
                st = v.execution.stats
                assert st.workloads_completed == 6 and st.gpu_time_ns > 0
                assert st.elsp_writes == 6 and v.stats.mmio_writes > 4 * st.elsp_writes
            assert gvt.scheduler.clock.name == "real" and gvt.scheduler.clock.now() > 0
        finally:
            for v in list(gvt.vgpus.values()):
                gvt.destroy_vgpu(v)
            for vm in vms:
                vm.close()
