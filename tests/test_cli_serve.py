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
from gvt_core.hw import regs
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


def test_serve_plugs_the_monitor_from_a_file_and_unplugs_it_on_request(
        host: Any, tmp_path: Any) -> None:
    """The guest sees the EDID of --edid, then hotplugs as SIGUSR1 / SIGHUP ask."""
    import queue

    from gvt_core.cli.serve import PLUG, UNPLUG
    from gvt_core.device.display.edid import builtin_edid
    from gvt_core.guest.display import GuestDisplay

    gvt, plugin = host
    edid = tmp_path / "monitor.edid"
    edid.write_bytes(builtin_edid((1920, 1200)).data)
    vm_id = plugin.boot(gvt.host)
    stop, requests, lines = threading.Event(), queue.SimpleQueue(), []
    announced = threading.Event()

    def announce(line: str) -> None:
        lines.append(line)
        announced.set()

    thread = threading.Thread(target=serve, args=(gvt, vm_id, "GVTg_V4_8", stop, announce),
                              kwargs={"edid": str(edid), "monitor": requests})
    thread.start()
    try:
        assert announced.wait(10)
        (vgpu,) = gvt.vgpus.values()
        driver = GuestDriver(plugin.booted[vm_id].port(), fb_width=64, fb_height=32)
        driver.load()
        display = GuestDisplay(driver, gvt.clock.sleep)
        mode = display.bring_up()
        assert mode is not None and mode.size == (1920, 1200)  # not the V4_8's 1024x768
        assert vgpu.handle.edid_ports == {regs.PORT_B}  # set_edid for the port
        requests.put(UNPLUG)
        display.handle_interrupts(5.0)
        assert display.service_hotplug() and not display.connected
        edid.write_bytes(builtin_edid((1024, 768)).data)  # SIGHUP reads the file again
        requests.put(PLUG)
        display.handle_interrupts(5.0)
        assert display.service_hotplug() and display.mode is not None
        assert display.mode.size == (1024, 768)
        edid.write_bytes(b"not an EDID")
        requests.put(PLUG)
        deadline = threading.Event()
        for _ in range(100):
            if any("failed" in line for line in lines):
                break
            deadline.wait(0.05)
        assert any("monitor plug failed" in line and "monitor.edid" in line for line in lines)
        assert vgpu.display is not None and vgpu.display.monitor is not None
    finally:
        stop.set()
        thread.join(10)
    assert any("unplugged" in line for line in lines) and not gvt.vgpus


def test_cli_serve_refuses_a_bad_edid_file(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.edid"
    bad.write_bytes(bytes(100))
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--vmid", "1", "--edid", str(bad)])
    assert exc.value.code == 2 and "128-byte blocks" in capsys.readouterr().err
