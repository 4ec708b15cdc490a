"""Every hookspec is documented as its contract, and the hook lists agree with the specs."""

from __future__ import annotations

import inspect
import re

import pytest

from gvt_core.mpt import hookspecs
from gvt_core.mpt.facade import Mpt

SPEC_ATTR = f"{hookspecs.PROJECT}_spec"

SPECS = {
    name: func
    for name, func in vars(hookspecs).items()
    if inspect.isfunction(func) and hasattr(func, SPEC_ATTR)
}
MPT = sorted(n for n in SPECS if not n.startswith("gvt_"))
EVENTS = sorted(n for n in SPECS if n.startswith("gvt_"))


def _doc(name: str) -> str:
    return inspect.getdoc(SPECS[name]) or ""


def test_the_spec_module_declares_hooks() -> None:
    assert len(MPT) >= 20 and len(EVENTS) >= 5


def test_hook_lists_name_exactly_the_specs() -> None:
    mandatory, optional = set(hookspecs.MANDATORY_HOOKS), set(hookspecs.OPTIONAL_HOOKS)
    assert not mandatory & optional, "a hook is both mandatory and optional"
    assert len(hookspecs.MANDATORY_HOOKS) == len(mandatory)
    assert len(hookspecs.OPTIONAL_HOOKS) == len(optional)
    assert mandatory | optional == set(MPT), "every MPT hookspec is in exactly one list"
    assert set(hookspecs.MPT_HOOKS) == set(MPT)
    assert set(hookspecs.EVENT_HOOKS) == set(EVENTS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_hookspec_has_a_docstring(name: str) -> None:
    doc = _doc(name)
    assert len(doc.split()) >= 3, f"hookspec {name} has no real docstring"


@pytest.mark.parametrize("name", MPT)
def test_mpt_hook_says_whether_it_is_mandatory(name: str) -> None:
    doc = _doc(name)
    says_mandatory = "**Mandatory" in doc
    says_optional = "**Optional" in doc
    assert says_mandatory != says_optional, f"{name} must say exactly one of Mandatory/Optional"
    assert says_mandatory == (name in hookspecs.MANDATORY_HOOKS), (
        f"{name}'s docstring disagrees with MANDATORY_HOOKS"
    )


@pytest.mark.parametrize("name", hookspecs.OPTIONAL_HOOKS)
def test_optional_hook_states_its_core_default(name: str) -> None:
    assert re.search(r"core default\s*:", _doc(name), re.IGNORECASE), (
        f"optional hook {name} does not state its core default ('Core default: ...')"
    )


@pytest.mark.parametrize("name", MPT)
def test_mpt_hook_documents_its_parameters(name: str) -> None:
    """``handle`` is defined once for all hooks in the module docstring."""
    doc = _doc(name)
    params = [p for p in inspect.signature(SPECS[name]).parameters if p != "handle"]
    undocumented = [p for p in params if not re.search(rf"\b{p}\b", doc)]
    assert not undocumented, f"{name} does not mention its parameters {undocumented}"


@pytest.mark.parametrize("name", MPT)
def test_mpt_hooks_are_firstresult(name: str) -> None:
    assert getattr(SPECS[name], SPEC_ATTR)["firstresult"] is True


@pytest.mark.parametrize("name", EVENTS)
def test_event_hooks_broadcast(name: str) -> None:
    assert getattr(SPECS[name], SPEC_ATTR)["firstresult"] is False


@pytest.mark.parametrize("name", [n for n in MPT if n != "backend_info"])
def test_the_facade_has_a_typed_method_per_mpt_hook(name: str) -> None:
    """(``backend_info`` is asked once by the loader; the facade holds the answer.)"""
    method = getattr(Mpt, name, None)
    assert callable(method), f"Mpt has no method {name}"
    spec_params = list(inspect.signature(SPECS[name]).parameters)
    facade_params = list(inspect.signature(method).parameters)[1:]
    assert facade_params == spec_params, f"Mpt.{name} takes {facade_params}, the spec {spec_params}"
