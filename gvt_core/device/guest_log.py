"""Guest-triggered log lines are bounded too.

Many device-model messages fire on something a guest does (a malformed MSI
setup on every interrupt, a PVINFO write, a refused BAR move): a guest that
repeats it would grow the host's log without bound. :class:`RepeatLimit`, a
filter on every ``gvt_core`` logger, lets each message (its format string,
per vGPU id when the message starts with one) through
:data:`~gvt_core.device.limits.MAX_LOG_REPEATS` times, marks the last one,
and drops the rest. Destroying a vGPU resets its count, so the next vGPU with
that id is heard again. A message whose caller bounds it already (say, once
per distinct untracked register, up to ``MAX_LOGGED_OFFSETS``) passes
``extra={"bounded": True}`` and is not counted.
"""

from __future__ import annotations

import logging
import threading

from gvt_core.device import limits

_PREFIX = "gvt_core."
_SUPPRESSED = " (repeated; further ones for this vGPU are not logged)"


class RepeatLimit(logging.Filter):
    """Drops a message after ``limit`` occurrences per (logger, format, vGPU id)."""

    def __init__(self, limit: int = limits.MAX_LOG_REPEATS) -> None:
        super().__init__()
        self.limit = limit
        self._seen: dict[tuple[str, object, int | None], int] = {}
        self._lock = threading.Lock()
        #: records dropped so far (all keys).
        self.dropped = 0

    @staticmethod
    def _vgpu_of(record: logging.LogRecord) -> int | None:
        args = record.args
        if isinstance(args, tuple) and args and type(args[0]) is int:
            return args[0]
        return None

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "bounded", False):
            return True
        key = (record.name, record.msg, self._vgpu_of(record))
        with self._lock:
            n = self._seen.get(key, 0) + 1
            if n > self.limit:
                self.dropped += 1
                return False
            self._seen[key] = n
        if n == self.limit and isinstance(record.msg, str):
            record.msg = record.msg + _SUPPRESSED
        return True

    def forget(self, vgpu_id: int) -> None:
        """A vGPU with this id was destroyed: its messages count from zero again."""
        with self._lock:
            for key in [k for k in self._seen if k[2] == vgpu_id]:
                del self._seen[key]


#: the one filter every gvt_core logger carries.
REPEAT_LIMIT = RepeatLimit()


def install() -> None:
    """Put :data:`REPEAT_LIMIT` on every ``gvt_core`` logger that exists now
    (idempotent; called when vGPUs are created, after their modules loaded)."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if (name.startswith(_PREFIX) and isinstance(logger, logging.Logger)
                and REPEAT_LIMIT not in logger.filters):
            logger.addFilter(REPEAT_LIMIT)
