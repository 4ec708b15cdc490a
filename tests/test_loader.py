"""Loading backends through real entry points, and every way it can fail.

Each fake backend is a real distribution: a ``*.dist-info`` directory with
METADATA and entry_points.txt plus a module, in a temporary directory put on
``sys.path``, so ``importlib_metadata.entry_points`` discovers it exactly as
it discovers an installed plugin.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest

from gvt_core.errors import (
    BackendError,
    BackendImportError,
    BackendIncompleteError,
    BackendNameMismatchError,
    BackendNotFoundError,
    BackendUnusableError,
    PluginConflictError,
)
from gvt_core.hw.sysmem import SystemMemory
from gvt_core.mpt import hookspecs
from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.info import DmaMode, HypervisorType, PageTrackMode
from gvt_core.mpt.loader import (
    describe_backends,
    installed_backends,
    load_backend,
    register_plugin,
    usable_backends,
)
from gvt_core.mpt.ops import HostContext
from gvt_core.testing.recording import RecordingOps

HEADER = """
from gvt_core.errors import HookUnsupportedError
from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.info import BackendInfo, Capabilities, DmaMode, HypervisorType, PageTrackMode
"""


def backend_class(
    ep_name: str,
    hooks: tuple[str, ...] = hookspecs.MANDATORY_HOOKS,
    usable: bool = True,
    reason: str = "",
    info_body: str | None = None,
) -> str:
    """Source of a backend class ``Backend`` implementing ``hooks``.

    Hooks other than ``backend_info`` refuse with HookUnsupportedError: the
    loader only checks that they exist, it never calls them.
    """
    lines = [
        "class Backend:",
        "    def __init__(self, **options):",
        "        self.options = options",
    ]
    for hook in hooks:
        if hook == "backend_info":
            body = info_body or (
                f"return BackendInfo(name={ep_name!r}, version='1.0', usable={usable!r}, "
                f"reason={reason!r}, capabilities=Capabilities(HypervisorType.SIM, "
                "PageTrackMode.WRITE_LANDED, DmaMode.IDENTITY))"
            )
            lines += ["    @hookimpl", "    def backend_info(self):", f"        {body}"]
        else:
            lines += [
                "    @hookimpl",
                f"    def {hook}(self, *args, **kwargs):",
                f"        raise HookUnsupportedError({ep_name!r}, {hook!r}, 'loader test double')",
            ]
    return HEADER + "\n".join(lines) + "\n"


@attrs.define
class FakeDists:
    """Builds fake installed distributions in one directory, then puts it on sys.path."""

    root: Path
    monkeypatch: pytest.MonkeyPatch
    modules: list[str] = attrs.field(factory=list)

    def add(self, ep_name: str, source: str, target_attr: str | None = "Backend") -> str:
        """Install backend ``ep_name`` whose module has ``source``; returns the module name."""
        module = f"gvt_fake_{ep_name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        dist = self.root / f"{module}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 1.0\n"
        )
        target = f"{module}:{target_attr}" if target_attr else module
        (dist / "entry_points.txt").write_text(f"[gvt.mpt]\n{ep_name} = {target}\n")
        self.modules.append(module)
        return module

    def activate(self) -> None:
        self.monkeypatch.syspath_prepend(str(self.root))
        for m in self.modules:
            self.monkeypatch.delitem(sys.modules, m, raising=False)


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeDists:
    return FakeDists(tmp_path, monkeypatch)


def _report(name: str) -> Any:
    return next(r for r in describe_backends() if r.name == name)


# --- discovery -------------------------------------------------------------------------------


def test_fake_distributions_are_discovered_like_installed_ones(fakes: FakeDists) -> None:
    module = fakes.add("fakegood", backend_class("fakegood"))
    fakes.activate()
    entry = next(e for e in installed_backends() if e.name == "fakegood")
    assert entry.target == f"{module}:Backend"
    assert entry.distribution == module.replace("_", "-")
    assert entry.version == "1.0"
    loaded = load_backend("fakegood")
    assert loaded.info.name == "fakegood"
    assert set(hookspecs.MANDATORY_HOOKS) <= loaded.mpt.implemented


def test_unknown_name_lists_the_installed_backends(fakes: FakeDists) -> None:
    fakes.add("fakegood", backend_class("fakegood"))
    fakes.activate()
    with pytest.raises(BackendNotFoundError) as err:
        load_backend("nosuchbackend")
    assert {"sim", "fakegood"} <= set(err.value.installed)
    assert "nosuchbackend" in str(err.value)
    assert "fakegood" in str(err.value) and "sim" in str(err.value)


# --- import failures are isolated -----------------------------------------------------------------


def test_a_plugin_that_fails_to_import_breaks_only_itself(fakes: FakeDists) -> None:
    fakes.add("fakebroken", "import gvt_this_module_does_not_exist\n")
    fakes.add("fakegood", backend_class("fakegood"))
    fakes.activate()
    with pytest.raises(BackendImportError) as err:
        load_backend("fakebroken")
    assert isinstance(err.value.cause, ImportError)
    assert "gvt_this_module_does_not_exist" in str(err.value)

    reports = {r.name: r for r in describe_backends()}
    assert reports["fakebroken"].usable is False
    assert "gvt_this_module_does_not_exist" in reports["fakebroken"].reason
    assert reports["fakegood"].usable is True
    assert reports["sim"].usable is True
    assert "fakebroken" not in usable_backends()
    assert load_backend("fakegood").info.name == "fakegood"


def test_an_entry_point_naming_a_missing_attribute_is_an_import_error(fakes: FakeDists) -> None:
    fakes.add("fakenoattr", backend_class("fakenoattr"), target_attr="NoSuchClass")
    fakes.activate()
    with pytest.raises(BackendImportError) as err:
        load_backend("fakenoattr")
    assert "NoSuchClass" in str(err.value)


def test_a_plugin_raising_at_import_is_reported_with_its_error(fakes: FakeDists) -> None:
    fakes.add("fakeraises", "raise RuntimeError('driver table is corrupt')\n")
    fakes.activate()
    with pytest.raises(BackendImportError, match="driver table is corrupt"):
        load_backend("fakeraises")
    assert "driver table is corrupt" in _report("fakeraises").reason


# --- incomplete, unusable ----------------------------------------------------------------------------


def test_missing_mandatory_hooks_are_listed(fakes: FakeDists) -> None:
    hooks = ("backend_info", "read_gpa", "write_gpa", "inject_msi", "gfn_to_mfn")
    fakes.add("fakepartial", backend_class("fakepartial", hooks))
    fakes.activate()
    expected = [h for h in hookspecs.MANDATORY_HOOKS if h not in hooks]
    with pytest.raises(BackendIncompleteError) as err:
        load_backend("fakepartial")
    assert err.value.missing == expected
    for hook in expected:
        assert hook in str(err.value)
    report = _report("fakepartial")
    assert report.usable is False
    assert list(report.missing) == expected
    assert set(report.hooks) == set(hooks)
    assert "enable_page_track" in report.reason


def test_a_backend_without_backend_info_is_incomplete(fakes: FakeDists) -> None:
    hooks = tuple(h for h in hookspecs.MANDATORY_HOOKS if h != "backend_info")
    fakes.add("fakenoinfo", backend_class("fakenoinfo", hooks))
    fakes.activate()
    with pytest.raises(BackendIncompleteError) as err:
        load_backend("fakenoinfo", require_usable=False)
    assert err.value.missing == ["backend_info"]
    assert _report("fakenoinfo").missing == ("backend_info",)


def test_installed_but_unusable_gives_its_reason(fakes: FakeDists) -> None:
    fakes.add("fakeunusable", backend_class("fakeunusable", usable=False, reason="no /dev/fake here"))
    fakes.activate()
    with pytest.raises(BackendUnusableError) as err:
        load_backend("fakeunusable")
    assert err.value.reason == "no /dev/fake here"
    assert err.value.missing == []
    assert "no /dev/fake here" in str(err.value)
    report = _report("fakeunusable")
    assert (report.usable, report.reason, report.missing) == (False, "no /dev/fake here", ())
    # tooling that only inspects a backend may still load it
    loaded = load_backend("fakeunusable", require_usable=False)
    assert loaded.info.usable is False


def test_an_unusable_backends_reason_wins_and_missing_hooks_are_listed(fakes: FakeDists) -> None:
    fakes.add(
        "fakeshell",
        backend_class("fakeshell", ("backend_info",), usable=False, reason="ABI layer not written"),
    )
    fakes.activate()
    with pytest.raises(BackendUnusableError) as err:
        load_backend("fakeshell")
    assert err.value.reason == "ABI layer not written"
    assert err.value.missing == [h for h in hookspecs.MANDATORY_HOOKS if h != "backend_info"]
    assert "dma_map_guest_page" in str(err.value)
    report = _report("fakeshell")
    assert report.reason == "ABI layer not written"
    assert "inject_msi" in report.missing
    with pytest.raises(BackendIncompleteError):
        load_backend("fakeshell", require_usable=False)


def test_backend_info_must_answer_a_backend_info(fakes: FakeDists) -> None:
    fakes.add("fakewrongtype", backend_class("fakewrongtype", info_body="return {'usable': True}"))
    fakes.add("fakeinforaises", backend_class("fakeinforaises", info_body="raise OSError('probe')"))
    fakes.activate()
    with pytest.raises(BackendError, match=r"not gvt_core\.mpt\.info\.BackendInfo"):
        load_backend("fakewrongtype")
    with pytest.raises(BackendError, match="raised from backend_info"):
        load_backend("fakeinforaises")
    assert _report("fakewrongtype").usable is False
    assert "probe" in _report("fakeinforaises").reason


# --- options and entry-point shapes --------------------------------------------------------------------


def test_options_reach_the_backend_and_bad_ones_are_rejected(fakes: FakeDists) -> None:
    fakes.add(
        "fakestrict",
        backend_class("fakestrict").replace(
            "def __init__(self, **options):", "def __init__(self, mode='a'):"
        ).replace("self.options = options", "self.mode = mode"),
    )
    fakes.activate()
    assert load_backend("fakestrict", mode="b").plugin.mode == "b"  # type: ignore[attr-defined]
    with pytest.raises(BackendError, match="rejected its options"):
        load_backend("fakestrict", colour="blue")


def test_an_option_value_the_factory_cannot_parse_is_a_rejected_option(
    fakes: FakeDists,
) -> None:
    # a factory that converts its string options (int("x")) and lets the ValueError out
    fakes.add(
        "fakeparse",
        backend_class("fakeparse").replace(
            "def __init__(self, **options):", "def __init__(self, vcpus=1):"
        ).replace("self.options = options", "self.vcpus = int(vcpus)"),
    )
    fakes.activate()
    assert load_backend("fakeparse", vcpus="2").plugin.vcpus == 2  # type: ignore[attr-defined]
    with pytest.raises(BackendError, match="'fakeparse' rejected its options: invalid literal"):
        load_backend("fakeparse", vcpus="two")


def test_a_module_can_be_the_backend(fakes: FakeDists) -> None:
    source = backend_class("fakemodule")
    # turn the class body into module-level functions
    body = source.split("class Backend:")[1].split("\n")
    funcs = [line[4:].replace("(self, ", "(").replace("(self)", "()") for line in body[3:]]
    fakes.add("fakemodule", HEADER + "\n".join(funcs) + "\n", target_attr=None)
    fakes.activate()
    loaded = load_backend("fakemodule")
    assert loaded.info.name == "fakemodule"
    with pytest.raises(BackendError, match="takes no options"):
        load_backend("fakemodule", mode="x")


# --- the real plugins --------------------------------------------------------------------------------------


def test_xengt_is_complete_and_usable_on_its_emulated_xen() -> None:
    report = _report("xengt")
    assert report.usable is True and report.reason == "" and report.missing == ()
    assert report.distribution == "gvt-xengt"
    # every hook but the ACRN-only PV-MMIO and those whose core default is XenGT's
    assert set(report.hooks) == set(hookspecs.MPT_HOOKS) - {
        "set_pvmmio", "set_opregion", "set_edid", "dom0_ready"
    }
    loaded = load_backend("xengt", hypervisor="emulated")
    caps = loaded.info.capabilities
    assert caps.hypervisor is HypervisorType.XEN
    assert caps.page_track is PageTrackMode.WRITE_FORWARDED
    assert caps.dma is DmaMode.IDENTITY
    assert caps.needs_trap_area and caps.needs_aperture_map and caps.can_create_vm
    assert "emulated Xen" in loaded.info.detail
    if not Path("/dev/xen/privcmd").exists():
        # the real hypervisor is not here: asked for explicitly, xengt says why
        with pytest.raises(BackendUnusableError, match="not a Xen dom0"):
            load_backend("xengt", hypervisor="xen")
    with pytest.raises(BackendError, match="hypervisor='kvm' is invalid"):
        load_backend("xengt", hypervisor="kvm")


def test_acrngt_is_usable_and_says_on_which_acrn() -> None:
    """On an ACRN Service VM the real HSM; anywhere else the emulated ACRN, labelled."""
    report = _report("acrngt")
    assert report.usable is True and report.reason == ""
    assert report.distribution == "gvt-acrngt"
    assert set(hookspecs.MANDATORY_HOOKS) <= set(report.hooks) and report.missing == ()
    plugin = next(e for e in installed_backends() if e.name == "acrngt").entry_point.load()()
    caps = plugin.backend_info().capabilities
    assert caps.hypervisor is HypervisorType.ACRN
    assert caps.page_track is PageTrackMode.WRITE_FORWARDED
    assert caps.dma is DmaMode.IDENTITY
    assert caps.needs_trap_area and caps.needs_aperture_map
    if not Path("/dev/acrn_hsm").exists():
        assert "emulated ACRN" in report.detail and caps.can_create_vm
    assert "acrngt" in usable_backends()


def test_sim_is_complete_and_usable() -> None:
    report = _report("sim")
    assert report.usable is True and report.reason == ""
    # every hook but open_vm: sim's guests come only from create_vm, it has no toolstack
    assert set(report.hooks) == set(hookspecs.MPT_HOOKS) - {"open_vm"}
    assert "sim" in usable_backends()


# --- one backend per host, observers -----------------------------------------------------------------------


def test_two_hosts_get_independent_backend_instances() -> None:
    a, b = load_backend("sim"), load_backend("sim")
    assert a.plugin is not b.plugin and a.pm is not b.pm
    ctx_a = HostContext(ops=RecordingOps(), sysmem=SystemMemory(), name="a")
    ctx_b = HostContext(ops=RecordingOps(), sysmem=SystemMemory(), name="b")
    a.mpt.host_init(ctx_a)
    b.mpt.host_init(ctx_b)
    vm_a = a.mpt.create_vm(ctx_a, 1 << 20, "a")
    vm_b = b.mpt.create_vm(ctx_b, 1 << 20, "b")
    assert vm_a.vm_id == vm_b.vm_id == 1  # each host numbers its own guests
    ha = a.mpt.attach_vgpu(type("V", (), {"id": 1})(), vm_a)
    a.mpt.write_gpa(ha, 0, b"only in a")
    hb = b.mpt.attach_vgpu(type("V", (), {"id": 1})(), vm_b)
    assert b.mpt.read_gpa(hb, 0, 9) != b"only in a"
    for m, h, vm, ctx in ((a.mpt, ha, vm_a, ctx_a), (b.mpt, hb, vm_b, ctx_b)):
        m.detach_vgpu(h)
        vm.close()
        m.host_exit(ctx)


def test_observers_must_not_answer_mpt_hooks() -> None:
    loaded = load_backend("sim")

    class Sneaky:
        @hookimpl
        def read_gpa(self, handle: Any, gpa: int, length: int) -> bytes:
            return b""

    with pytest.raises(PluginConflictError, match="read_gpa"):
        loaded.add_observer(Sneaky(), name="sneaky")
    assert loaded.pm.get_plugin("sneaky") is None

    class Watcher:
        def __init__(self) -> None:
            self.destroyed: list[int] = []

        @hookimpl
        def gvt_vgpu_destroyed(self, vgpu_id: int) -> None:
            self.destroyed.append(vgpu_id)

    first, second = Watcher(), Watcher()
    loaded.add_observer(first, name="first")
    loaded.add_observer(second, name="second")
    loaded.mpt.events.gvt_vgpu_destroyed(vgpu_id=5)
    assert first.destroyed == second.destroyed == [5]


def test_register_plugin_checks_an_uninstalled_backend() -> None:
    class Incomplete:
        @hookimpl
        def backend_info(self) -> Any:
            from gvt_core.mpt.info import BackendInfo, Capabilities

            return BackendInfo(
                "mine", "0", True, "",
                Capabilities(HypervisorType.SIM, PageTrackMode.WRITE_LANDED, DmaMode.IOMMU),
            )

    with pytest.raises(BackendIncompleteError) as err:
        register_plugin(Incomplete(), "mine")
    assert err.value.missing == list(hookspecs.MANDATORY_HOOKS[1:])


def test_a_backend_answering_with_another_name_is_refused(fakes: FakeDists) -> None:
    """A subclass of sim installed as its own backend that still says 'sim'."""
    fakes.add("fakesubsim", "from gvt_sim import SimBackend\n\nclass Backend(SimBackend):\n"
                            "    pass\n")
    fakes.activate()
    with pytest.raises(BackendNameMismatchError) as err:
        load_backend("fakesubsim")
    assert err.value.says == "sim"
    assert "fakesubsim" in str(err.value) and "name='fakesubsim'" in str(err.value)
    report = _report("fakesubsim")
    assert report.usable is False and "calls itself 'sim'" in report.reason
    assert "fakesubsim" not in usable_backends()
    with pytest.raises(BackendNameMismatchError):
        from gvt_sim import SimBackend

        register_plugin(SimBackend(), "other")
