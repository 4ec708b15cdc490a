"""MI_DISPLAY_FLIP on the software engines: handed to the context's display, or a fault."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gvt_core.guest import commands as cmd
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs
from gvt_core.hw.engine import commands as c
from gvt_core.hw.engine.memory import Fault, FaultKind
from gvt_core.hw.engine.native import NativeContext
from gvt_core.hw.engine.state import ExecContext, RunState

RCS, BCS, VCS = regs.ENGINE_RCS, regs.ENGINE_BCS, regs.ENGINE_VCS


class Sink:
    """A display that records flips, refusing surfaces below ``floor``."""

    def __init__(self, floor: int = 0) -> None:
        self.floor = floor
        self.flips: list[tuple[int, int, int, bool, bool]] = []

    def mi_display_flip(self, plane_code: int, surface: int, pitch: int, tiled: bool,
                        asynchronous: bool) -> str | None:
        if surface < self.floor:
            return f"surface {surface:#x} is not yours"
        self.flips.append((plane_code, surface, pitch, tiled, asynchronous))
        return None


def _run(native: NativeContext, display: Any) -> ExecContext:
    ctx = native.engine.load_context(native.state, levels=None, ggtt=native.ggtt)
    ctx.display = display
    state = RunState.RUNNING
    while state is RunState.RUNNING:
        state = native.engine.run(ctx, 10**9, 0)
    return ctx


@pytest.mark.parametrize("engine", [RCS, BCS])
def test_a_flip_goes_to_the_contexts_display(native: Callable[..., NativeContext],
                                             engine: int) -> None:
    ctx = native(engine)
    sink = Sink()
    ctx.emit(cmd.display_flip(4, 0x12_3000, 4096, tiled=True)
             + cmd.display_flip(0, 0x45_6000, 7680, asynchronous=True))
    done = _run(ctx, sink)
    assert done.fault is None and done.done and done.commands == 2
    assert sink.flips == [(4, 0x12_3000, 4096, True, False), (0, 0x45_6000, 7680, False, True)]


def test_flips_the_display_refuses_or_cannot_make_stop_the_context(
        native: Callable[..., NativeContext], buf: Any) -> None:
    refused = native(RCS)
    refused.emit(cmd.display_flip(0, 0x1000, 4096))
    fault = _run(refused, Sink(floor=0x10_0000)).fault
    assert fault is not None and fault.kind is FaultKind.BAD_COMMAND and "not yours" in str(fault)
    nodisplay = native(RCS)
    nodisplay.emit(cmd.display_flip(0, 0x10_0000, 4096))
    fault = _run(nodisplay, None).fault
    assert fault is not None and fault.kind is FaultKind.NOT_MODELLED
    stereo = native(BCS)
    stereo.emit([c.header("MI_DISPLAY_FLIP", 3), 4096, 0x10_0000 | dr.MI_FLIP_STEREO])
    fault = _run(stereo, Sink()).fault
    assert fault is not None and fault.kind is FaultKind.NOT_MODELLED
    long = native(BCS)
    long.emit([c.header("MI_DISPLAY_FLIP", 4), 4096, 0x10_0000, 0])
    fault = _run(long, Sink()).fault
    assert fault is not None and fault.kind is FaultKind.BAD_COMMAND
    vcs = native(VCS)
    vcs.emit(cmd.display_flip(0, 0x10_0000, 4096))
    fault = _run(vcs, Sink()).fault
    assert fault is not None and fault.kind is FaultKind.WRONG_ENGINE
    # from a GGTT batch started by the ring (privileged): flipped
    batch = buf()
    batch.write(0, b"".join(d.to_bytes(4, "little")
                           for d in cmd.display_flip(0, 0x10_0000, 4096) + cmd.batch_buffer_end()))
    priv = native(RCS)
    priv.emit(cmd.batch_buffer_start(batch.gm, ppgtt=False))
    sink = Sink()
    assert _run(priv, sink).fault is None and len(sink.flips) == 1
    # from a non-privileged buffer (a PPGTT batch): refused
    engine = priv.engine
    ectx = engine.load_context(priv.state, levels=None, ggtt=priv.ggtt)
    ectx.display = sink
    with pytest.raises(Fault, match="non-privileged"):
        engine._mi_display_flip(ectx, tuple(cmd.display_flip(0, 0x10_0000, 4096)), False)
    assert len(sink.flips) == 1
