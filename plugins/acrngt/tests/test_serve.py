"""Launcher-created User VMs, the handover and ``gvt serve --backend acrngt``."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from gvt_acrngt.backend import AcrngtBackend
from gvt_acrngt.handover import GvtEnd, HandoverError
from gvt_core.cli import main
from gvt_core.cli.serve import serve
from gvt_core.device.gvt import Gvt
from gvt_core.errors import GuestNotFoundError
from gvt_core.mpt.ops import HostContext


def _launched(backend: AcrngtBackend, vmid: int) -> Any:
    assert backend.launcher is not None
    return backend.launcher.vms[vmid]


def test_the_handover_passes_the_launchers_file_and_memory(host: HostContext) -> None:
    backend = AcrngtBackend(hypervisor="emulated", launch=2, request_timeout=10)
    try:
        backend.host_init(host)
        launched = _launched(backend, 1)
        launched.ram.write(0x3000, b"launcher wrote this")
        directory = backend.handover_dir
        # before GVT_DOM0_READY the launcher refuses
        end = GvtEnd(directory, 1)
        with pytest.raises(HandoverError) as err:
            end.request()
        assert err.value.errno == errno.EAGAIN
        end.close()
        backend.dom0_ready()
        assert (directory / "dom0_ready").read_text() == "GVT_DOM0_READY=1\n"
        # the socket of VM 2 offers VM 2 only
        end = GvtEnd(directory, 2)
        end.vmid = 1
        with pytest.raises(HandoverError) as err:
            end.request()
        assert err.value.errno == errno.ENOENT
        end.close()
        vm = backend.open_vm(host, 1)
        assert (vm.vm_id, vm.vcpu_num, vm.mem_size) == (1, 1, launched.ram.size)
        assert vm.ram.read(0x3000, 19) == b"launcher wrote this"  # the same pages
        assert vm.gfn_to_mfn(3) == backend.transport.frames_of(launched.ram.address + 0x3000, 1)[0]
        # a second taker is refused
        with pytest.raises(GuestNotFoundError, match="served by gvt already"):
            backend.open_vm(host, 1)
        vm.close()
        assert launched.ended.wait(5)  # gvt let go of a running VM: the launcher powered it off
    finally:
        backend.host_exit(host)


def test_a_vm_its_launcher_serves_cannot_be_taken(host: HostContext) -> None:
    backend = AcrngtBackend(hypervisor="emulated", launch=1, request_timeout=10)
    try:
        backend.host_init(host)
        backend.dom0_ready()
        _launched(backend, 1).hsm.create_client()  # the launcher is its default client
        with pytest.raises(GuestNotFoundError, match="already has a default ioreq client"):
            backend.open_vm(host, 1)
    finally:
        backend.host_exit(host)


def test_a_served_guest_loads_its_driver_and_ends(gvt_factory: Callable[..., Gvt]) -> None:
    gvt = gvt_factory(launch=1, guest_seconds=0.3)
    backend = gvt.backend.plugin
    launched = _launched(backend, 1)  # type: ignore[arg-type]
    vm = gvt.open_vm(1)
    vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
    assert vm.wait_ended(30), launched.log
    assert launched.error == "", launched.error
    assert "driver loaded: vGPU 1" in launched.log
    assert vgpu.pv_notified and vgpu.stats.ggtt_writes > 0
    assert "destroyed" in vm.end_reason or "client" in vm.end_reason
    gvt.destroy_vgpu(vgpu)
    assert vm.held().total == 0
    vm.close()


def test_serve_until_the_guest_ends(gvt_factory: Callable[..., Gvt]) -> None:
    gvt = gvt_factory(launch=1, guest_seconds=0.3)
    result = serve(gvt, 1, gvt.smallest_type, threading.Event())
    assert result.reason == "guest ended"
    assert result.cfg_traps > 0 and result.mmio_traps > 0
    assert not gvt.vgpus
    assert gvt.backend.plugin.machine.violations == []  # type: ignore[attr-defined]


def test_serve_stopped_hands_the_vm_back_paused(gvt_factory: Callable[..., Gvt]) -> None:
    gvt = gvt_factory(launch=1, guest_seconds=60)
    launched = _launched(gvt.backend.plugin, 1)  # type: ignore[arg-type]
    stop = threading.Event()
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(serve(gvt, 1, gvt.smallest_type, stop)))
    thread.start()
    deadline = time.monotonic() + 30
    while "driver loaded: vGPU 1" not in launched.log:
        assert time.monotonic() < deadline, launched.log
        time.sleep(0.02)
    stop.set()
    thread.join(30)
    assert out and out[0].reason == "stopped"
    assert launched.ended.wait(30)
    # gvt paused the VM before letting go: the guest saw it stop, the launcher powered off
    assert any("gvt let go" in line or "paused" in line for line in launched.log), launched.log
    assert launched.state == "powered off"


def test_cli_serve_on_the_emulated_acrn(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--backend", "acrngt", "--vmid", "1", "--backend-option", "launch=1",
                 "--backend-option", "guest_seconds=0.3"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "serving vGPU 1" in out and "guest ended" in out


def test_cli_serve_of_a_vm_nobody_offers_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--backend", "acrngt", "--vmid", "3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot serve guest 3" in err[0] and "handover" in err[0]


def test_cli_demo_on_the_emulated_acrn(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--backend", "acrngt", "--vgpus", "2", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "acrngt" and [v["id"] for v in out["vgpus"]] == [1, 2]
    assert all(v["mmio_traps"] > 0 and v["ggtt_writes"] > 0 for v in out["vgpus"])


def test_no_temporary_directory_is_left_behind(host: HostContext) -> None:
    backend = AcrngtBackend(hypervisor="emulated", launch=1)
    backend.host_init(host)
    directory = backend.handover_dir
    assert directory is not None and directory.exists()
    backend.host_exit(host)
    assert not os.path.exists(directory)
