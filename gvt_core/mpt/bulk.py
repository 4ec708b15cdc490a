"""Bulk operations built from per-item ones: all of them happen, or none.

The core's defaults for the bulk MPT hooks, and backends that have no better
bulk path for some case, share this one undo discipline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def all_or_nothing(items: Iterable[T], do: Callable[[T], R], undo: Callable[[R], object]) -> list[R]:
    """``[do(x) for x in items]``; if one raises, ``undo`` every result so far, then re-raise."""
    done: list[R] = []
    try:
        for item in items:
            done.append(do(item))
    except BaseException:
        for result in reversed(done):
            undo(result)
        raise
    return done
