"""``gvt serve`` and ``gvt demo`` on xengt, end to end on the emulated Xen.

The emulated toolstack builds the domains named by the ``domains`` option
paused (``xl create -p``); ``gvt serve`` opens one, gives it a vGPU, and
the domain runs once the vGPU is active: its guest OS finds the GPU at
00:02.0, loads the i915 guest-driver model, draws a frame, and powers off
after ``guest_seconds``, which ends the serve session.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from gvt_core.cli import main
from gvt_core.cli.serve import serve
from gvt_core.device.gvt import Gvt


def test_serve_until_the_domain_powers_off(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([
        "serve", "--backend", "xengt", "--backend-option", "hypervisor=emulated",
        "--backend-option", "domains=5:32", "--backend-option", "guest_seconds=0.2",
        "--domid", "5",
    ])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "serving vGPU 1" in out and "guest 5" in out
    assert "guest ended; vGPU 1 (GVTg_V4_8) destroyed after" in out
    traps = int(out.split(" config and ")[1].split()[0])
    assert traps > 100  # the guest driver really ran against the vGPU


def test_serve_until_stopped_leaves_the_domain_running() -> None:
    with Gvt.open("xengt", hypervisor="emulated", domains="7:32:2", guest_seconds="600") as gvt:
        xen = gvt.backend.plugin.xen
        guest_os = gvt.backend.plugin.toolstack.guests[7]
        stop = threading.Event()
        announced = threading.Event()
        out: list = []
        t = threading.Thread(target=lambda: out.append(
            serve(gvt, 7, "GVTg_V4_4", stop, announce=lambda _l: announced.set())))
        t.start()
        assert announced.wait(30)
        deadline = time.monotonic() + 60
        while guest_os.report is None and not guest_os.error and time.monotonic() < deadline:
            time.sleep(0.05)
        assert guest_os.error == "" and guest_os.report.vgt_id == 1
        stop.set()
        t.join(30)
        (result,) = out
        assert result.reason == "stopped" and result.mmio_traps > 0
        dom = xen.lookup(7)
        assert dom is not None and not dom.paused  # the toolstack's domain lives on
        assert all(s is None for s in dom.servers)
        assert not gvt.vgpus


def test_serve_a_missing_domain_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["serve", "--backend", "xengt", "--backend-option", "hypervisor=emulated",
               "--domid", "9"])
    assert rc == 1
    assert "cannot serve guest 9: Xen has no such domain" in capsys.readouterr().err


def test_demo_runs_two_vgpus_on_xengt(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--backend", "xengt", "--vgpus", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "xengt" and [v["id"] for v in report["vgpus"]] == [1, 2]
    assert all(v["mmio_traps"] > 0 and v["ggtt_to_scratch"] == 0 for v in report["vgpus"])
    assert report["vgpus"][0]["vm_id"] != report["vgpus"][1]["vm_id"]
