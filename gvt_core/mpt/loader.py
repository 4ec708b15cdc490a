"""Finding and loading hypervisor backends through the ``gvt.mpt`` entry-point group.

A backend distribution declares, e.g. in its ``pyproject.toml``::

    [project.entry-points."gvt.mpt"]
    sim = "gvt_sim:SimBackend"

The target is a class (or any callable) that returns a fresh plugin object
for one host; keyword options given to :func:`load_backend` are passed to it.
Each host gets its own :class:`pluggy.PluginManager` holding exactly one
backend plus any observer plugins.
"""

from __future__ import annotations

import inspect
import types
from typing import Any

import attrs
import pluggy
from importlib_metadata import EntryPoint, entry_points

from gvt_core.errors import (
    BackendError,
    BackendImportError,
    BackendIncompleteError,
    BackendNameMismatchError,
    BackendNotFoundError,
    BackendUnusableError,
    PluginConflictError,
)
from gvt_core.mpt import hookspecs
from gvt_core.mpt.facade import Mpt
from gvt_core.mpt.info import BackendInfo

ENTRY_POINT_GROUP = "gvt.mpt"


@attrs.frozen
class BackendEntry:
    """An installed backend, known from its entry point without importing it."""

    name: str
    target: str
    distribution: str
    version: str
    entry_point: EntryPoint = attrs.field(eq=False, repr=False)


@attrs.frozen
class BackendReport:
    """What ``gvt backends`` shows of one installed backend."""

    name: str
    distribution: str
    version: str
    usable: bool
    reason: str
    hooks: tuple[str, ...]
    missing: tuple[str, ...] = ()
    #: the backend's ``BackendInfo.detail`` (e.g. "emulated Xen; native Xen not used: ...").
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "usable": self.usable,
            "reason": self.reason,
            "detail": self.detail,
            "hooks": list(self.hooks),
            "missing_hooks": list(self.missing),
        }


@attrs.define(eq=False)
class LoadedBackend:
    """A backend registered into its host's plugin manager."""

    name: str
    pm: pluggy.PluginManager
    plugin: object
    info: BackendInfo
    mpt: Mpt

    def add_observer(self, plugin: object, name: str | None = None) -> None:
        """Register an observer of the ``gvt_*`` events. It may not answer MPT hooks."""
        answered = sorted(h for h in hookspecs.MPT_HOOKS if callable(getattr(plugin, h, None)))
        if answered:
            raise PluginConflictError(
                self.name,
                f"observer {name or plugin!r} implements MPT hooks {', '.join(answered)}; "
                f"host already uses backend {self.name!r} and MPT hooks have one answer",
            )
        self.pm.register(plugin, name=name)


def installed_backends() -> list[BackendEntry]:
    """Every backend installed in this environment, without importing any."""
    out: dict[str, BackendEntry] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        out.setdefault(
            ep.name,
            BackendEntry(
                name=ep.name,
                target=ep.value,
                distribution=dist.name if dist is not None else "?",
                version=dist.version if dist is not None else "?",
                entry_point=ep,
            ),
        )
    return sorted(out.values(), key=lambda e: e.name)


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _instantiate(entry: BackendEntry, options: dict[str, Any]) -> object:
    try:
        target = entry.entry_point.load()
    except Exception as exc:
        raise BackendImportError(entry.name, entry.target, exc) from exc
    if isinstance(target, types.ModuleType):
        if options:
            raise BackendError(
                entry.name,
                f"gvt backend {entry.name!r} is a module and takes no options "
                f"(got {', '.join(options)})",
            )
        return target
    if not callable(target):
        raise BackendImportError(
            entry.name, entry.target, TypeError("entry point is neither a module nor callable")
        )
    try:
        return target(**options)
    except (TypeError, ValueError) as exc:
        # a factory refusing an option's value with a plain ValueError (int('x')) is
        # refusing its options as much as one refusing an unknown keyword
        if inspect.isclass(target):
            raise BackendError(
                entry.name, f"gvt backend {entry.name!r} rejected its options: {exc}"
            ) from exc
        raise


def _implemented(pm: pluggy.PluginManager) -> list[str]:
    return [h for h in hookspecs.MPT_HOOKS if getattr(pm.hook, h).get_hookimpls()]


def _ask_info(name: str, pm: pluggy.PluginManager) -> BackendInfo | None:
    """The backend's ``backend_info`` answer; None when it does not implement the hook."""
    if not pm.hook.backend_info.get_hookimpls():
        return None
    try:
        info = pm.hook.backend_info()
    except Exception as exc:
        raise BackendError(
            name, f"gvt backend {name!r} raised from backend_info ({type(exc).__name__}: {exc}); "
            "backend_info must answer usable=False with a reason instead of raising"
        ) from exc
    if not isinstance(info, BackendInfo):
        raise BackendError(
            name, f"gvt backend {name!r} answered backend_info with {type(info).__name__}, "
            "not gvt_core.mpt.info.BackendInfo"
        )
    return info


def register_plugin(plugin: object, name: str, *, require_usable: bool = True) -> LoadedBackend:
    """Register an already built backend object into a new host plugin manager.

    Checks in this order: ``backend_info`` answers a :class:`BackendInfo`
    whose ``name`` is ``name`` (a subclass of another backend that still
    answers with its parent's name is refused, not loaded under a wrong
    identity); when ``require_usable``, the backend says it works here (its
    own reason wins over missing hooks: a backend that cannot work here, such
    as an ABI shell, need not be complete); every mandatory hook is
    implemented. Third-party code and tests use it for backends that are not
    installed.
    """
    pm = new_plugin_manager()
    pm.register(plugin, name=f"gvt-backend-{name}")
    missing = [h for h in hookspecs.MANDATORY_HOOKS if not getattr(pm.hook, h).get_hookimpls()]
    info = _ask_info(name, pm)
    if info is None:
        raise BackendIncompleteError(name, missing)
    if info.name != name:
        raise BackendNameMismatchError(name, info.name)
    if require_usable and not info.usable:
        raise BackendUnusableError(name, info.reason, missing)
    if missing:
        raise BackendIncompleteError(name, missing)
    return LoadedBackend(name=name, pm=pm, plugin=plugin, info=info, mpt=Mpt(pm, info))


def find_backend(name: str) -> BackendEntry:
    installed = installed_backends()
    for entry in installed:
        if entry.name == name:
            return entry
    raise BackendNotFoundError(name, [e.name for e in installed])


def load_backend(name: str, *, require_usable: bool = True, **options: Any) -> LoadedBackend:
    """Load the installed backend ``name`` for one host.

    :raises BackendNotFoundError: nothing installed under that name (lists what is).
    :raises BackendImportError: its code failed to import.
    :raises BackendIncompleteError: mandatory hooks missing (lists them).
    :raises BackendUnusableError: it reports it cannot work here (gives the reason).
    :raises BackendNameMismatchError: ``backend_info().name`` is not ``name``.
    """
    entry = find_backend(name)
    plugin = _instantiate(entry, options)
    return register_plugin(plugin, name, require_usable=require_usable)


def describe_backends() -> list[BackendReport]:
    """A report per installed backend; one that fails to load is reported, not raised.

    An unusable backend's own reason is shown; missing mandatory hooks are
    listed separately (and make a backend that says it is usable unusable).
    """
    reports = []
    for entry in installed_backends():
        hooks: tuple[str, ...] = ()
        missing: tuple[str, ...] = ()
        detail = ""
        try:
            plugin = _instantiate(entry, {})
            pm = new_plugin_manager()
            pm.register(plugin, name=f"gvt-backend-{entry.name}")
            hooks = tuple(_implemented(pm))
            missing = tuple(h for h in hookspecs.MANDATORY_HOOKS if h not in hooks)
            info = _ask_info(entry.name, pm)
            if info is not None and info.name != entry.name:
                raise BackendNameMismatchError(entry.name, info.name)
            detail = info.detail if info is not None else ""
            if info is not None and not info.usable:
                usable, reason = False, info.reason
            elif missing:
                usable, reason = False, str(BackendIncompleteError(entry.name, list(missing)))
            else:
                usable, reason = True, ""
        except Exception as exc:
            usable = False
            reason = str(exc) if isinstance(exc, BackendError) else (
                str(BackendImportError(entry.name, entry.target, exc))
            )
        reports.append(
            BackendReport(
                name=entry.name,
                distribution=entry.distribution,
                version=entry.version,
                usable=usable,
                reason=reason,
                hooks=hooks,
                missing=missing,
                detail=detail if usable else "",
            )
        )
    return reports


def usable_backends() -> list[str]:
    return [r.name for r in describe_backends() if r.usable]
