"""A real :class:`~gvt_core.mpt.ops.CoreOps` that records every call.

The contract suite tests a backend on its own, without the device model: the
backend forwards trapped accesses here, and the tests look at exactly what
arrived. Reads are answered with all ones (what a read of an unclaimed
register returns) unless a test set an answer for that offset or address.
"""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable
from typing import Any

import attrs

from gvt_core.hw import regs


@attrs.frozen
class OpCall:
    """One call a backend made into the core."""

    #: the CoreOps method name, e.g. ``"emulate_mmio_write"``.
    op: str
    #: ``vgpu.id`` of the vGPU the call was for.
    vgpu_id: int
    #: the remaining positional arguments, in the method's order.
    args: tuple[Any, ...]


def _all_ones(size: int) -> int:
    return (1 << (8 * size)) - 1 if size > 0 else 0


@attrs.define(eq=False)
class RecordingOps:
    """Records each backend -> core call; answers reads from the tables below."""

    calls: list[OpCall] = attrs.field(factory=list)
    #: config-space answers by offset (for a read of any size starting there).
    cfg_answers: dict[int, int] = attrs.field(factory=dict)
    #: MMIO answers by guest-physical address.
    mmio_answers: dict[int, int] = attrs.field(factory=dict)
    #: (vgpu id, gfn) pairs the "core" asked to track, for ``is_page_tracked``.
    tracked: set[tuple[int, int]] = attrs.field(factory=set)
    #: a register file per vgpu id for ``vreg_pages`` (made on first use, filled with
    #: the byte ``0x5A`` so a test can tell it from guest memory).
    register_files: dict[int, mmap.mmap] = attrs.field(factory=dict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def _record(self, op: str, vgpu: Any, *args: Any) -> None:
        with self._lock:
            self.calls.append(OpCall(op, int(vgpu.id), args))

    # --- CoreOps ------------------------------------------------------------------
    def emulate_cfg_read(self, vgpu: Any, offset: int, size: int) -> int:
        self._record("emulate_cfg_read", vgpu, offset, size)
        return self.cfg_answers.get(offset, _all_ones(size)) & _all_ones(size)

    def emulate_cfg_write(self, vgpu: Any, offset: int, value: int, size: int) -> None:
        self._record("emulate_cfg_write", vgpu, offset, value, size)

    def emulate_mmio_read(self, vgpu: Any, gpa: int, size: int) -> int:
        self._record("emulate_mmio_read", vgpu, gpa, size)
        return self.mmio_answers.get(gpa, _all_ones(size)) & _all_ones(size)

    def emulate_mmio_write(self, vgpu: Any, gpa: int, value: int, size: int) -> None:
        self._record("emulate_mmio_write", vgpu, gpa, value, size)

    def mmio_accessors(
        self, vgpu: Any
    ) -> tuple[Callable[[int, int], int], Callable[[int, int, int], None]]:
        def read(gpa: int, size: int) -> int:
            return self.emulate_mmio_read(vgpu, gpa, size)

        def write(gpa: int, value: int, size: int) -> None:
            self.emulate_mmio_write(vgpu, gpa, value, size)

        return read, write

    def page_track_write(self, vgpu: Any, gpa: int, data: bytes) -> None:
        self._record("page_track_write", vgpu, gpa, bytes(data))

    def is_page_tracked(self, vgpu: Any, gfn: int) -> bool:
        return (int(vgpu.id), gfn) in self.tracked

    def vreg_pages(self, vgpu: Any) -> memoryview:
        with self._lock:
            pages = self.register_files.get(int(vgpu.id))
            if pages is None:
                pages = self.register_files[int(vgpu.id)] = mmap.mmap(-1, regs.MMIO_SIZE)
                pages[:] = b"\x5a" * regs.MMIO_SIZE
            return memoryview(pages)

    def emulation_failed(self, vgpu: Any, reason: str) -> None:
        self._record("emulation_failed", vgpu, reason)

    # --- for tests ------------------------------------------------------------------
    def of(self, op: str) -> list[OpCall]:
        """The recorded calls of one kind, in order."""
        with self._lock:
            return [c for c in self.calls if c.op == op]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()
