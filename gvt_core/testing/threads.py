"""Helpers for tests that race threads against the device model.

:class:`WatchedLock` stands in for a vGPU's lock so a test can hold it, start
a guest access on another thread (a sim call, or a real vCPU on kvmgt), and
know the access is blocked on that very lock before it destroys the vGPU:
the destroy race is then reproduced every time rather than by luck.
"""

from __future__ import annotations

import contextlib
import faulthandler
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs


class WatchedLock:
    """A re-entrant lock that counts the threads waiting to acquire it."""

    def __init__(self, inner: Any | None = None) -> None:
        self._inner = inner if inner is not None else threading.RLock()
        self._cond = threading.Condition(threading.Lock())
        self.waiting = 0
        #: acquisitions that had to wait (for tests that want proof of contention).
        self.contended = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._inner.acquire(blocking=False):
            return True
        if not blocking:
            return False
        with self._cond:
            self.waiting += 1
            self.contended += 1
            self._cond.notify_all()
        try:
            return bool(self._inner.acquire(True, timeout))
        finally:
            with self._cond:
                self.waiting -= 1
                self._cond.notify_all()

    def release(self) -> None:
        self._inner.release()

    def __enter__(self) -> WatchedLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def wait_for_waiters(self, n: int = 1, timeout: float = 30.0) -> bool:
        """Block until at least ``n`` threads wait for the lock; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.waiting >= n, timeout)


@attrs.define(eq=False)
class Worker:
    """A thread running ``body`` once; :meth:`join` re-raises what it raised."""

    body: Callable[[], Any]
    name: str = "gvt-test-worker"
    result: Any = None
    error: BaseException | None = None
    _thread: threading.Thread | None = attrs.field(default=None, init=False)

    def start(self) -> Worker:
        def run() -> None:
            try:
                self.result = self.body()
            except BaseException as exc:  # handed to the joining test
                self.error = exc

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float = 60.0) -> Any:
        assert self._thread is not None, "start() the worker first"
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self.name} did not finish within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, step: float = 0.001) -> bool:
    """Poll ``predicate`` until it holds; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return True


@contextlib.contextmanager
def deadlock_watchdog(timeout: float) -> Iterator[None]:
    """If the block has not finished after ``timeout`` seconds, dump every thread's
    stack to stderr and end the process: a deadlock then fails the run (pytest-xdist
    reports the worker as crashed) instead of hanging it."""
    faulthandler.dump_traceback_later(timeout, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
