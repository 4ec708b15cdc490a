"""The ``gvt`` pytest plugin as a backend author uses it: one command, one option."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONTRACT = "gvt_core.testing.test_contract"


def test_contract_suite_runs_on_sim_with_one_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "--pyargs", CONTRACT, "--gvt-backend", "sim", "-p", "no:cacheprovider", "-v", "-rs"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 40
    assert not {"failed", "errors"} & set(outcomes), outcomes
    # the one skip: sim pins no guest memory, so it has no pin quota to exhaust
    assert outcomes.get("skipped", 0) == 1, outcomes
    result.stdout.fnmatch_lines(["*SKIPPED*declares no pin quota*"])
    # every test runs once, with the backend name as its id
    result.stdout.fnmatch_lines(["*test_backend_info_is_well_formed[[]sim[]] PASSED*"])
    result.stdout.fnmatch_lines(["*gvt backends: sim*"])


def test_unknown_backend_name_is_a_clear_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(
        "--pyargs", CONTRACT, "--gvt-backend", "nosuchhv", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no gvt backend named 'nosuchhv' is installed (installed: *sim*"])


def test_an_unusable_backend_is_skipped_with_its_reason(pytester: pytest.Pytester) -> None:
    if Path("/dev/xen/privcmd").exists():
        pytest.skip("this is a Xen dom0: xengt's native mode is usable here")
    result = pytester.runpytest_subprocess(
        "--pyargs", CONTRACT, "--gvt-backend", "xengt", "--gvt-backend-option", "hypervisor=xen",
        "-p", "no:cacheprovider", "-rs", "-k", "backend_info",
    )
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*not usable here*not a Xen dom0*"])


def test_malformed_backend_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(
        "--pyargs", CONTRACT, "--gvt-backend", "sim", "--gvt-backend-option", "landed",
        "-p", "no:cacheprovider",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gvt-backend-option expects KEY=VALUE*"])


def test_fixtures_and_backend_options_are_available_to_any_test_file(
    pytester: pytest.Pytester,
) -> None:
    """Third-party suites reuse ``mpt_host`` / ``guest_vm`` / ``attached``; options reach
    the backend."""
    pytester.makepyfile(
        """
        def test_attached_guest_round_trip(attached, gvt_backend_name):
            assert gvt_backend_name == "sim"
            assert attached.host.caps.page_track.value == "landed"
            attached.mpt.write_gpa(attached.handle, 0x1000, b"mine")
            assert attached.port.mem_read(0x1000, 4) == b"mine"
            assert attached.vm.held().total == 0
        """
    )
    result = pytester.runpytest_subprocess(
        "--gvt-backend", "sim", "--gvt-backend-option", "page_track=landed",
        "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)


def _one_collection_error(result: pytest.RunResult, message: str) -> None:
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.lines
    assert sum(1 for line in out if line.startswith("ERROR ")) == 1, out
    assert sum(1 for line in out if message in line) == 1, out
    assert len(out) < 30, "the failure is reported once, not once per test"


def test_a_backend_rejecting_its_option_is_one_collection_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "--pyargs", "gvt_core.testing", "--gvt-backend", "sim",
        "--gvt-backend-option", "bogus=1", "-p", "no:cacheprovider",
    )
    _one_collection_error(result, "--gvt-backend sim: gvt backend 'sim' rejected its options")


def test_a_backend_missing_a_mandatory_hook_is_one_collection_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = pytester.mkdir("site")
    (site / "gvt_halfdone.py").write_text(
        "from gvt_core.mpt.hookspecs import hookimpl\n"
        "from gvt_core.mpt.info import BackendInfo, Capabilities, DmaMode, HypervisorType,"
        " PageTrackMode\n\n"
        "class Backend:\n"
        "    @hookimpl\n"
        "    def backend_info(self):\n"
        "        return BackendInfo('halfdone', '1', True, '', Capabilities(HypervisorType.SIM,"
        " PageTrackMode.WRITE_LANDED, DmaMode.IDENTITY))\n"
    )
    dist = site / "gvt_halfdone-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gvt-halfdone\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[gvt.mpt]\nhalfdone = gvt_halfdone:Backend\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    result = pytester.runpytest_subprocess(
        "--pyargs", "gvt_core.testing", "--gvt-backend", "halfdone", "-p", "no:cacheprovider",
    )
    _one_collection_error(result, "does not implement the mandatory MPT hooks: inject_msi")


def test_missing_test_extra_says_what_to_install(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gvt-core installed without [test]: one line naming the extra, not an ImportError."""
    blocked = pytester.mkdir("blocked")
    (blocked / "hypothesis").mkdir()
    (blocked / "hypothesis" / "__init__.py").write_text(
        "raise ImportError(\"No module named 'hypothesis'\")\n")
    monkeypatch.setenv("PYTHONPATH", str(blocked))
    result = pytester.runpytest_subprocess(
        "--pyargs", CONTRACT, "--gvt-backend", "sim", "-p", "no:cacheprovider",
        "-p", "no:hypothesispytest",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "pip install 'gvt-core[test]'" in result.stderr.str()
