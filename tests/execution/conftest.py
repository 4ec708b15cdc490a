"""Fixtures of the engine tests: a bare host GPU and native contexts on it (no vGPU)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from gvt_core.hw.engine.native import NativeContext, buffer
from gvt_core.hw.gm_heap import GmBlock
from gvt_core.hw.gpu import HostGpu


@pytest.fixture
def gpu() -> HostGpu:
    frames = itertools.count(0x10_0000)
    return HostGpu(frame_of=lambda va: next(frames))


@pytest.fixture
def native(gpu: HostGpu) -> Iterator[Callable[..., NativeContext]]:
    made: list[NativeContext] = []

    def make(engine: int, ring_pages: int = 4) -> NativeContext:
        ctx = NativeContext(gpu, engine, ring_pages)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()


@pytest.fixture
def buf(gpu: HostGpu) -> Callable[[int], GmBlock]:
    def make(size: int = 4096) -> GmBlock:
        return buffer(gpu, size)

    return make
