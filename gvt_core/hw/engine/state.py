"""What an engine holds for the context it runs: ring, batch stack, address spaces, progress.

An :class:`ExecContext` is created when a context image is loaded onto an
engine and lives until the context completes or faults; the command
streamer runs it in slices (:meth:`gvt_core.hw.engine.engine.Engine.run`),
so a long workload can be time-sliced, preempted by the watchdog, or left
waiting on a semaphore without any host thread blocking.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

from gvt_core.hw.engine.blitter import ClipRect
from gvt_core.hw.engine.memory import AddressSpace, EngineFault

#: batch levels: the ring starts first-level batches, those may call one second level.
MAX_BATCH_DEPTH = 2


class EngineEvent(enum.Enum):
    """Interrupt sources a context raises while it runs (delivered at completion)."""

    USER_INTERRUPT = "MI_USER_INTERRUPT"
    FLUSH_DW_NOTIFY = "MI_FLUSH_DW notify"
    PIPE_CONTROL_NOTIFY = "PIPE_CONTROL notify"


class RunState(enum.Enum):
    """Where a slice of execution left a context."""

    #: the slice's budget ran out; more to do.
    RUNNING = "running"
    #: MI_SEMAPHORE_WAIT not satisfied: the engine spun for the rest of the slice.
    WAITING = "waiting"
    #: the ring is empty (head == tail) and no batch is active.
    DONE = "done"
    FAULT = "fault"


@attrs.define(eq=False, slots=True)
class RingBuffer:
    """The ring a context executes: ``size`` bytes at graphics address ``start``."""

    space: AddressSpace
    start: int
    size: int
    head: int
    tail: int
    #: RING_HEAD bits 31:21, kept as the context image had them.
    wrap: int = 0

    def pending(self) -> int:
        """Bytes between head and tail (the commands left)."""
        return (self.tail - self.head) % self.size


@attrs.define(eq=False, slots=True)
class BatchFrame:
    """One level of the batch-buffer stack."""

    space: AddressSpace
    #: graphics address of the next command.
    addr: int
    #: started from the ring or a privileged batch, in the GGTT.
    privileged: bool
    level: int


class DisplayFlipSink(Protocol):
    """The display engine a context's MI_DISPLAY_FLIP signals (its owner's display)."""

    def mi_display_flip(self, plane_code: int, surface: int, pitch: int, tiled: bool,
                        asynchronous: bool) -> str | None:
        """Flip the plane ``plane_code`` selects to ``surface`` (graphics address) with
        ``pitch`` bytes per row; None when done, else why the flip is refused."""
        ...


@attrs.define(eq=False)
class ExecContext:
    """One context loaded on an engine."""

    ring: RingBuffer
    ggtt: AddressSpace
    ppgtt: AddressSpace | None
    #: graphics address of the per-process HWSP (page 0 of the LRC), or None.
    pphwsp: int | None
    #: CONTEXT_CONTROL and CTX_TIMESTAMP as loaded (written back when saved).
    context_control: int = 0
    ctx_timestamp: int = 0
    batches: list[BatchFrame] = attrs.field(factory=list)
    events: set[EngineEvent] = attrs.field(factory=set)
    clip: ClipRect = attrs.field(factory=ClipRect)
    arbitration: bool = True
    #: GPU time this context has run, in ns (the cost model, or measured).
    cost_ns: int = 0
    commands: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    done: bool = False
    fault: EngineFault | None = None
    #: where MI_DISPLAY_FLIP goes (None: a context with no display, the flip faults).
    display: DisplayFlipSink | None = None

    @property
    def default_space(self) -> AddressSpace:
        """Where addresses without an explicit GGTT choice go: the PPGTT if the
        context has one (every vGPU context does), else the GGTT."""
        return self.ppgtt if self.ppgtt is not None else self.ggtt

    def flush_tlbs(self) -> None:
        """A TLB invalidation (MI_FLUSH_DW / PIPE_CONTROL with the invalidate bit)."""
        self.ggtt.flush()
        if self.ppgtt is not None:
            self.ppgtt.flush()
        self.ring.space.flush()

    def forget_tables(self) -> None:
        """The context is about to run after its vGPU let go of the engines: cached
        page-table pages may be stale (translations stay, see ``memory``)."""
        self.ggtt.forget_tables()
        if self.ppgtt is not None:
            self.ppgtt.forget_tables()
        self.ring.space.forget_tables()
