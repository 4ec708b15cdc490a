"""``gvt serve``: an existing guest gets a vGPU until it ends or the command stops."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gvt_core.cli import main
from gvt_core.cli.serve import serve
from gvt_core.device.gvt import Gvt
from gvt_core.errors import GuestNotFoundError
from gvt_core.guest.driver import GuestDriver
from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.loader import register_plugin
from gvt_sim.backend import SimBackend


class ToolstackSim(SimBackend):
    """sim plus a toolstack: guests exist before gvt serves them, as Xen domains do."""

    def __init__(self) -> None:
        super().__init__()
        self.booted: dict[int, Any] = {}

    def boot(self, host: Any, mem_size: int = 64 << 20) -> int:
        vm = self.create_vm(host, mem_size, "toolstack-guest")
        self.booted[vm.vm_id] = vm
        return vm.vm_id

    @hookimpl
    def open_vm(self, host: Any, vm_id: int) -> Any:
        try:
            return self.booted[vm_id]
        except KeyError:
            raise GuestNotFoundError("sim", vm_id, "no such guest on this toolstack") from None


@pytest.fixture
def host() -> Any:
    plugin = ToolstackSim()
    with Gvt(register_plugin(plugin, "sim")) as gvt:
        yield gvt, plugin


def _serve_in_thread(gvt: Gvt, vm_id: int, stop: threading.Event) -> tuple[threading.Thread, list]:
    out: list = []
    announced = threading.Event()

    def run() -> None:
        out.append(serve(gvt, vm_id, "GVTg_V4_4", stop, announce=lambda _l: announced.set()))

    thread = threading.Thread(target=run)
    thread.start()
    assert announced.wait(10), "serve never announced its vGPU"
    return thread, out


def test_serve_until_stopped_tears_everything_down(host: Any) -> None:
    gvt, plugin = host
    vm_id = plugin.boot(gvt.host)
    stop = threading.Event()
    thread, out = _serve_in_thread(gvt, vm_id, stop)
    (vgpu,) = gvt.vgpus.values()
    assert vgpu.active and vgpu.type.name == "GVTg_V4_4"
    vm = plugin.booted[vm_id]
    report = GuestDriver(vm.port()).load()
    assert report.vgt_id == vgpu.id
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    (result,) = out
    assert result.reason == "stopped" and result.mmio_traps > 0
    assert not gvt.vgpus
    assert vm.held().total == 0


def test_serve_ends_when_the_guest_ends(host: Any) -> None:
    gvt, plugin = host
    vm_id = plugin.boot(gvt.host)
    stop = threading.Event()
    thread, out = _serve_in_thread(gvt, vm_id, stop)
    plugin.booted[vm_id]._ended.set()  # the toolstack shut the guest down
    thread.join(10)
    assert not thread.is_alive() and out[0].reason == "guest ended"
    assert not gvt.vgpus


def test_serve_an_unknown_guest_fails_cleanly(host: Any) -> None:
    gvt, _plugin = host
    with pytest.raises(GuestNotFoundError, match="cannot serve guest 42"):
        serve(gvt, 42, "GVTg_V4_4", threading.Event())
    assert not gvt.vgpus


def test_cli_serve_on_a_backend_without_open_vm_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["serve", "--backend", "sim", "--domid", "3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("gvt serve: ") and "open_vm" in err[0]


def test_cli_backend_option_is_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--vmid", "1", "--backend-option", "novalue"])
    assert "KEY=VALUE" in capsys.readouterr().err
