"""Fixtures of the scanner tests."""

from __future__ import annotations

import pytest

from gvt_core.device.execution.scanner import AuditContext
from tests.scanner.arena import ShadowArena
from tests.scanner.env import make_arena, make_ctx
from tests.scanner.memory import GuestGm


@pytest.fixture
def gm() -> GuestGm:
    return GuestGm()


@pytest.fixture
def ctx() -> AuditContext:
    return make_ctx()


@pytest.fixture
def arena() -> ShadowArena:
    return make_arena()
