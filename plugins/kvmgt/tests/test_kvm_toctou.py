"""TOCTOU on KVM: the guest's second vCPU rewrites a batch while its first submits it."""

from __future__ import annotations

from gvt_core.device.gvt import Gvt
from gvt_core.testing.toctou import race_on_host


def test_a_second_vcpu_rewriting_a_submitted_batch_never_gets_its_command_run(kvm: None) -> None:
    with Gvt.open("kvmgt", vcpus=2) as gvt:
        result = race_on_host(gvt, lambda vm: vm.port(1), rounds=40)
    assert result.rounds == 80 and result.rewrites > 0
    assert result.ran_benign + result.refused + result.torn == result.rounds
