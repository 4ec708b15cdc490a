"""Random guest page-table histories against the shadow PPGTT, on sim in each of
its page-track and DMA modes.

The machine, its rules and invariants are :mod:`gvt_core.testing.ppgtt_machine`
(shared with the cross-backend run in ``gvt_core.testing.test_ppgtt_scenarios``);
here it runs longer, once per sim mode (``MODES``: both page-track timings,
both DMA models), which only sim can switch.
"""

from __future__ import annotations

import pytest

from gvt_core.testing.ppgtt_machine import machine_for, run_machine
from tests.ppgtt.guest_tables import MODES, open_stack


@pytest.mark.parametrize("mode", MODES, ids=[f"{a}-{b}" for a, b in MODES])
def test_shadow_follows_the_guest(mode: tuple[str, str]) -> None:
    machine = machine_for(f"sim_{mode[0]}_{mode[1]}", lambda: open_stack(*mode))
    run_machine(machine, max_examples=25, steps=30)
