"""TOCTOU on sim: another guest thread rewrites a batch while the guest submits it."""

from __future__ import annotations

from gvt_core.device.gvt import Gvt
from gvt_core.testing.toctou import race_on_host


def test_a_thread_rewriting_a_submitted_batch_never_gets_its_command_run() -> None:
    with Gvt.open("sim") as gvt:
        result = race_on_host(gvt, lambda vm: vm.port(), rounds=60)

    assert result.rounds == 120 and result.rewrites > 0
    assert result.ran_benign + result.refused + result.torn == result.rounds
