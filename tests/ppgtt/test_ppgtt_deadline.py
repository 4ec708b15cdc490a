"""A PPGTT scenario on a broken backend ends within its budget, saying why.

A backend whose ``read_gpa`` returns corrupted bytes makes every history
fail; hypothesis then replays and shrinks the failure over and over. The
scenario's deadline bounds all of it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gvt_core.device.gvt import Gvt
from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.loader import register_plugin
from gvt_core.testing.guests import enable_decoding
from gvt_core.testing.ppgtt_machine import (
    MEM,
    ScenarioDeadlineError,
    Stack,
    machine_for,
    run_machine,
)
from gvt_sim import SimBackend


class CorruptReads(SimBackend):
    """Reads of guest memory come back with every byte flipped."""

    @hookimpl
    def read_gpa(self, handle: Any, gpa: int, length: int) -> bytes:
        return bytes(b ^ 0x5A for b in super().read_gpa(handle, gpa, length))


def _corrupt_stack() -> Stack:
    gvt = Gvt(register_plugin(CorruptReads(), "sim"))
    vm = gvt.create_vm(MEM, "corrupt")
    vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
    port = vm.port()
    bar0 = enable_decoding(port)
    return Stack(gvt, vm, vgpu, port, bar0)


def test_a_broken_backend_fails_within_the_scenario_budget() -> None:
    machine = machine_for("corrupt", _corrupt_stack)
    start = time.monotonic()
    with pytest.raises(ScenarioDeadlineError, match="ran past its 0 s budget") as err:
        run_machine(machine, max_examples=200, steps=25, budget_s=0.2)
    took = time.monotonic() - start
    assert took < 30, f"the scenario ran {took:.0f} s past a 0.2 s budget"
    assert err.value.__cause__ is not None  # what hypothesis found comes with it


def test_a_slow_scenario_that_passes_fails_on_its_budget_too() -> None:
    from gvt_core.testing.ppgtt_machine import open_stack

    machine = machine_for("slow", lambda: open_stack("sim"))
    with pytest.raises(ScenarioDeadlineError):
        run_machine(machine, max_examples=50, steps=10, budget_s=0.0)
