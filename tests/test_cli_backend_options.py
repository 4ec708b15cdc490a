"""``--backend-option KEY=VALUE``: a value the backend cannot use is one line and exit 1.

The README promises one-line errors; a factory that parses its string options
with ``int()`` / ``float()``, or a guest the backend cannot launch with the
options given, used to end the command in a traceback.
"""

from __future__ import annotations

import pytest

from gvt_core.cli import main


@pytest.mark.parametrize(
    ("command", "option", "says"),
    [
        (["demo", "--vgpus", "1", "--rounds", "0"], "vcpus=abc", "rejected its options"),
        (["demo", "--vgpus", "1", "--rounds", "0"], "guest_seconds=x", "rejected its options"),
        (["types"], "vcpus=abc", "rejected its options"),
        (["serve", "--domid", "5"], "guest_seconds=x", "rejected its options"),
    ],
)
def test_an_option_value_xengt_cannot_parse_is_one_line(
    command: list[str], option: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--backend", "xengt", "--backend-option", option]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"gvt {command[0]}: ") and "'xengt'" in err[0] and says in err[0]


def test_kvmgt_vcpus_out_of_range_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from gvt_kvmgt import probe

    if reason := probe():
        pytest.skip(f"KVM is not usable here: {reason}")
    argv = ["demo", "--backend", "kvmgt", "--backend-option", "vcpus=5", "--vgpus", "1",
            "--rounds", "0"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("gvt demo: ") and "1..4 vCPUs, asked for 5" in err[0]
