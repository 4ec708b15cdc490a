"""Chrome trace events of a host's GPU: which vGPU ran what on which engine, and when.

:class:`ChromeTrace` is an observer plugin (``gvt.backend.add_observer``) of
the ``gvt_workload_completed`` and ``gvt_vgpu_scheduled`` events. It keeps
one complete ("X") event per workload on the track of its engine, and one
per ownership period on a "scheduler" track, in host-clock microseconds;
:meth:`ChromeTrace.write` saves the JSON object format that Perfetto and
``chrome://tracing`` open. At most :attr:`ChromeTrace.max_events` events
are kept (later ones are counted in ``dropped``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from gvt_core.hw import regs
from gvt_core.mpt import hookimpl

_PID = 1
_SCHED_TID = 100
_TIDS = {name: eid + 1 for name, eid in regs.ENGINE_IDS.items()}


class ChromeTrace:
    """Collects trace events from a host's event hooks."""

    max_events = 200_000

    def __init__(self, host_name: str = "gvt0") -> None:
        self.host_name = host_name
        self.events: list[dict[str, Any]] = []
        self.dropped = 0
        self._lock = threading.Lock()
        self._owner = 0
        self._since = 0

    def _add(self, event: dict[str, Any]) -> None:
        with self._lock:
            if len(self.events) >= self.max_events:
                self.dropped += 1
                return
            self.events.append(event)

    @hookimpl
    def gvt_workload_completed(self, vgpu: Any, engine: str, context_id: int, start_ns: int,
                               end_ns: int, commands: int, result: str, reason: str) -> None:
        if start_ns < 0:
            return  # dropped before it ran: nothing happened on the engine
        self._add({
            "name": f"vgpu{vgpu.id} ctx{context_id}", "cat": result, "ph": "X",
            "ts": start_ns / 1000, "dur": max(end_ns - start_ns, 0) / 1000,
            "pid": _PID, "tid": _TIDS[engine],
            "args": {"vgpu": vgpu.id, "context_id": context_id, "commands": commands,
                     "result": result, **({"reason": reason} if reason else {})},
        })

    @hookimpl
    def gvt_vgpu_scheduled(self, prev_id: int, next_id: int, time_ns: int) -> None:
        if self._owner and time_ns > self._since:
            self._add({"name": f"vgpu{self._owner} owns the engines", "cat": "schedule",
                       "ph": "X", "ts": self._since / 1000, "dur": (time_ns - self._since) / 1000,
                       "pid": _PID, "tid": _SCHED_TID, "args": {"vgpu": self._owner}})
        self._owner, self._since = next_id, time_ns

    def document(self) -> dict[str, Any]:
        meta = [{"name": "process_name", "ph": "M", "pid": _PID,
                 "args": {"name": f"GPU ({self.host_name})"}},
                {"name": "thread_name", "ph": "M", "pid": _PID, "tid": _SCHED_TID,
                 "args": {"name": "scheduler"}}]
        meta += [{"name": "thread_name", "ph": "M", "pid": _PID, "tid": tid,
                  "args": {"name": name.upper()}} for name, tid in _TIDS.items()]
        with self._lock:
            events = list(self.events)
        return {"traceEvents": meta + events, "displayTimeUnit": "ns",
                "otherData": {"dropped_events": self.dropped}}

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.document()))
