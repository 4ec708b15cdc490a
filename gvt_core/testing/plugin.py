"""The ``gvt`` pytest plugin: backend selection and the fixtures of the suites.

Installed with gvt-core (entry point ``pytest11``), so any project gets it.
A backend author runs the MPT contract suite on their plugin with::

    pytest --pyargs gvt_core.testing --gvt-backend mybackend

Without ``--gvt-backend`` every installed backend that is usable here is
tested. Any test that uses the ``gvt_backend_name`` fixture (directly or
through ``mpt_host``, ``guest_vm``, ``attached``) runs once per backend, with
the backend name as test id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from gvt_core.errors import BackendError, BackendNotFoundError, BackendUnusableError
from gvt_core.guest.port import GuestPort, GuestVm
from gvt_core.hw.sysmem import SystemMemory
from gvt_core.mpt.facade import Mpt
from gvt_core.mpt.info import Capabilities
from gvt_core.mpt.loader import LoadedBackend, find_backend, load_backend, usable_backends
from gvt_core.mpt.ops import HostContext
from gvt_core.testing.recording import RecordingOps

#: guest RAM of the VMs the fixtures create.
GUEST_MEM_SIZE = 64 << 20

_NAMES_KEY = pytest.StashKey[list[str]]()
_OPTIONS_KEY = pytest.StashKey[dict[str, str]]()
#: per selected backend, why it cannot be loaded with the options given ("" if it can).
_LOAD_ERRORS_KEY = pytest.StashKey[dict[str, str]]()
#: the load failure was reported already (once per session, as one collection error).
_REPORTED_KEY = pytest.StashKey[bool]()


@attrs.frozen
class VgpuToken:
    """Stands in for the core's vGPU object: backends only look at ``id``."""

    id: int


@attrs.define(eq=False)
class MptHost:
    """One host's backend, as the ``mpt_host`` fixture builds it."""

    name: str
    loaded: LoadedBackend
    ops: RecordingOps
    context: HostContext

    @property
    def mpt(self) -> Mpt:
        return self.loaded.mpt

    @property
    def caps(self) -> Capabilities:
        return self.loaded.info.capabilities

    @property
    def sysmem(self) -> SystemMemory:
        return self.context.sysmem


@attrs.define(eq=False)
class AttachedVgpu:
    """A vGPU token attached to a guest: the handle for hooks, the port for the guest."""

    host: MptHost
    vm: GuestVm
    vgpu: VgpuToken
    handle: Any
    port: GuestPort
    detached: bool = False

    @property
    def mpt(self) -> Mpt:
        return self.host.mpt

    def track(self, gfn: int) -> None:
        """Enable write tracking as the core does (hook + the core's own table)."""
        self.mpt.enable_page_track(self.handle, gfn)
        self.host.ops.tracked.add((self.vgpu.id, gfn))

    def untrack(self, gfn: int) -> None:
        self.mpt.disable_page_track(self.handle, gfn)
        self.host.ops.tracked.discard((self.vgpu.id, gfn))

    def detach(self) -> None:
        self.mpt.detach_vgpu(self.handle)
        self.host.ops.tracked = {t for t in self.host.ops.tracked if t[0] != self.vgpu.id}
        self.detached = True


# --- options and parametrization ---------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gvt", "gvt hypervisor backends")
    group.addoption(
        "--gvt-backend",
        action="append",
        default=[],
        dest="gvt_backends",
        metavar="NAME",
        help="run the gvt backend suites on this installed backend (repeatable); "
        "default: every installed backend usable on this machine",
    )
    group.addoption(
        "--gvt-backend-option",
        action="append",
        default=[],
        dest="gvt_backend_options",
        metavar="KEY=VALUE",
        help="keyword option passed to every selected backend when it is loaded "
        "(repeatable), e.g. page_track=landed for sim",
    )


def _runs_gvt_suites(config: pytest.Config) -> bool:
    args = [str(a) for a in config.args]
    return bool(config.getoption("gvt_backends")) or any(
        "gvt_core.testing" in a or "gvt_core/testing" in a for a in args)


def pytest_configure(config: pytest.Config) -> None:
    if _runs_gvt_suites(config):
        try:
            import hypothesis  # noqa: F401  (the suites' property tests need it)
        except ImportError as exc:
            raise pytest.UsageError(
                f"the gvt suites need gvt-core's test extra ({exc}): "
                "pip install 'gvt-core[test]'"
            ) from None
    names: list[str] = list(dict.fromkeys(config.getoption("gvt_backends") or []))
    for name in names:
        try:
            find_backend(name)
        except BackendNotFoundError as exc:
            raise pytest.UsageError(f"--gvt-backend: {exc}") from exc
    options: dict[str, str] = {}
    for item in config.getoption("gvt_backend_options") or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(
                f"--gvt-backend-option expects KEY=VALUE, got {item!r}"
            )
        options[key.strip()] = value.strip()
    if names:
        config.stash[_NAMES_KEY] = names
    config.stash[_OPTIONS_KEY] = options


def selected_backends(config: pytest.Config) -> list[str]:
    """The backend names the suites run on (computed once per session)."""
    names = config.stash.get(_NAMES_KEY, None)
    if names is None:
        names = usable_backends()
        config.stash[_NAMES_KEY] = names
    return names


def _parametrized_by_test(metafunc: pytest.Metafunc) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        argnames = mark.args[0] if mark.args else mark.kwargs.get("argnames", ())
        if isinstance(argnames, str):
            argnames = [a.strip() for a in argnames.split(",")]
        if "gvt_backend_name" in argnames:
            return True
    return False


def load_errors(config: pytest.Config) -> dict[str, str]:
    """Why each selected backend cannot be loaded with the session's options, tried
    once per session ("" when it loads or only reports itself unusable here: its
    tests are then skipped with its reason)."""
    errors = config.stash.get(_LOAD_ERRORS_KEY, None)
    if errors is None:
        errors = {}
        options = config.stash.get(_OPTIONS_KEY, {})
        for name in selected_backends(config):
            try:
                load_backend(name, **options)
                errors[name] = ""
            except BackendUnusableError:
                errors[name] = ""
            except BackendError as exc:
                errors[name] = str(exc)
        config.stash[_LOAD_ERRORS_KEY] = errors
    return errors


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gvt_backend_name" not in metafunc.fixturenames or _parametrized_by_test(metafunc):
        return
    config = metafunc.config
    broken = {n: why for n, why in load_errors(config).items() if why}
    if broken:
        # one collection error for the session, with the loader's message; every
        # test of that backend would fail the same way, so none of them runs
        if not config.stash.get(_REPORTED_KEY, False):
            config.stash[_REPORTED_KEY] = True
            raise pytest.Collector.CollectError(
                "; ".join(f"--gvt-backend {n}: {why}" for n, why in broken.items())
            )
        metafunc.parametrize("gvt_backend_name", [pytest.param(
            None, marks=pytest.mark.skip(reason="its backend cannot be loaded (see above)"))],
            ids=["not-loadable"], indirect=True)
        return
    names = selected_backends(metafunc.config)
    if not names:
        metafunc.parametrize(
            "gvt_backend_name",
            [pytest.param(None, marks=pytest.mark.skip(
                reason="no usable gvt backend is installed; see 'gvt backends'"))],
            ids=["no-backend"],
            indirect=True,
        )
        return
    metafunc.parametrize("gvt_backend_name", names, ids=names, indirect=True)


def pytest_report_header(config: pytest.Config) -> str | None:
    names = config.stash.get(_NAMES_KEY, None)
    if names is None:
        return None
    return f"gvt backends: {', '.join(names) or 'none'}"


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def gvt_backend_name(request: pytest.FixtureRequest) -> str:
    """The backend under test (parametrized by the plugin)."""
    return str(request.param)


@pytest.fixture
def gvt_backend_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Keyword options for ``load_backend``; override the fixture to test other modes."""
    return dict(request.config.stash.get(_OPTIONS_KEY, {}))


@pytest.fixture
def mpt_host(gvt_backend_name: str, gvt_backend_options: dict[str, Any]) -> Iterator[MptHost]:
    """The backend loaded for one host, bound to recording core ops and a fresh sysmem."""
    try:
        loaded = load_backend(gvt_backend_name, **gvt_backend_options)
    except BackendUnusableError as exc:
        pytest.skip(f"gvt backend {gvt_backend_name!r} is not usable here: {exc.reason}")
    ops = RecordingOps()
    context = HostContext(ops=ops, sysmem=SystemMemory(), name=f"contract-{gvt_backend_name}")
    loaded.mpt.host_init(context)
    host = MptHost(name=gvt_backend_name, loaded=loaded, ops=ops, context=context)
    yield host
    loaded.mpt.host_exit(context)


@pytest.fixture
def guest_vm(mpt_host: MptHost, request: pytest.FixtureRequest) -> Iterator[GuestVm]:
    """A 64 MiB guest launched by the backend (skipped where it cannot launch guests)."""
    if not mpt_host.caps.can_create_vm:
        pytest.skip(
            f"gvt backend {mpt_host.name!r} declares can_create_vm=False: it cannot "
            "launch guests for generic tooling, so guest-side tests do not apply"
        )
    vm = mpt_host.mpt.create_vm(mpt_host.context, GUEST_MEM_SIZE, f"contract-{request.node.name}")
    yield vm
    vm.close()


@pytest.fixture
def attached(mpt_host: MptHost, guest_vm: GuestVm) -> Iterator[AttachedVgpu]:
    """vGPU token 1 attached to ``guest_vm``; detached at teardown unless the test did."""
    vgpu = VgpuToken(id=1)
    handle = mpt_host.mpt.attach_vgpu(vgpu, guest_vm)
    att = AttachedVgpu(
        host=mpt_host, vm=guest_vm, vgpu=vgpu, handle=handle, port=guest_vm.port()
    )
    yield att
    if not att.detached:
        att.detach()
