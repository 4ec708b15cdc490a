"""MI_DISPLAY_FLIP never executes on the software engines: the command scanner takes
every flip out of a vGPU's workload (NOOP'd in the shadow) and the vGPU's display
applies it when the workload completes. One that reaches an engine anyway (a
context nobody scanned) stops the context, whatever buffer it comes from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gvt_core.guest import commands as cmd
from gvt_core.hw import regs
from gvt_core.hw.engine import commands as c
from gvt_core.hw.engine.memory import FaultKind
from gvt_core.hw.engine.native import NativeContext
from gvt_core.hw.engine.state import ExecContext, RunState

RCS, BCS, VCS = regs.ENGINE_RCS, regs.ENGINE_BCS, regs.ENGINE_VCS


def _run(native: NativeContext) -> ExecContext:
    ctx = native.engine.load_context(native.state, levels=None, ggtt=native.ggtt)
    state = RunState.RUNNING
    while state is RunState.RUNNING:
        state = native.engine.run(ctx, 10**9, 0)
    return ctx


def test_the_table_says_no_engine_executes_it() -> None:
    assert c.BY_NAME["MI_DISPLAY_FLIP"].execution is c.Execution.NOT_MODELLED


@pytest.mark.parametrize("engine", [RCS, BCS])
def test_a_flip_in_the_ring_faults(native: Callable[..., NativeContext], engine: int) -> None:
    ctx = native(engine)
    ctx.emit(cmd.display_flip(0, 0x10_0000, 4096))
    done = _run(ctx)
    assert done.fault is not None and done.fault.kind is FaultKind.NOT_MODELLED
    assert "MI_DISPLAY_FLIP" in str(done.fault)


def test_a_flip_in_a_batch_or_on_the_wrong_engine_faults(
        native: Callable[..., NativeContext], buf: Any) -> None:
    batch = buf()
    batch.write(0, b"".join(d.to_bytes(4, "little")
                           for d in cmd.display_flip(0, 0x10_0000, 4096) + cmd.batch_buffer_end()))
    priv = native(RCS)
    priv.emit(cmd.batch_buffer_start(batch.gm, ppgtt=False))
    fault = _run(priv).fault
    assert fault is not None and fault.kind is FaultKind.NOT_MODELLED
    vcs = native(VCS)
    vcs.emit(cmd.display_flip(0, 0x10_0000, 4096))
    fault = _run(vcs).fault
    assert fault is not None and fault.kind is FaultKind.WRONG_ENGINE
