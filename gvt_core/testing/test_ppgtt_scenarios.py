"""The PPGTT state machine on every backend: the shadow follows the guest.

Random histories of a guest editing its PPGTT only through its
:class:`~gvt_core.guest.port.GuestPort` (see
:mod:`gvt_core.testing.ppgtt_machine` for the rules and invariants), on a
:class:`~gvt_core.device.gvt.Gvt` host over the backend under test. On a
backend with real traps every store to a tracked table page is a real exit
(a KVM exit on kvmgt), so the budget here is modest; sim runs longer in each
of its modes in the core's own tests. Run on one backend with::

    pytest --pyargs gvt_core.testing --gvt-backend NAME -k ppgtt
"""

from __future__ import annotations

from typing import Any

import pytest

from gvt_core.errors import BackendUnusableError
from gvt_core.mpt.loader import load_backend
from gvt_core.testing.ppgtt_machine import Stack, machine_for, open_stack, run_machine

#: histories per backend, and steps per history.
EXAMPLES = 15
STEPS = 25


def test_shadow_ppgtt_follows_the_guest(
    gvt_backend_name: str, gvt_backend_options: dict[str, Any]
) -> None:
    try:
        caps = load_backend(gvt_backend_name, **gvt_backend_options).info.capabilities
    except BackendUnusableError as exc:
        pytest.skip(f"gvt backend {gvt_backend_name!r} is not usable here: {exc.reason}")
    if not caps.can_create_vm:
        pytest.skip(f"backend {gvt_backend_name!r} does not launch guests (can_create_vm=False)")

    def opener() -> Stack:
        return open_stack(gvt_backend_name, **gvt_backend_options)

    run_machine(machine_for(gvt_backend_name, opener), max_examples=EXAMPLES, steps=STEPS)
