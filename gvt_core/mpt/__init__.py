"""The MPT seam: hookspecs, the typed facade, backend loading."""

from gvt_core.mpt.facade import Mpt
from gvt_core.mpt.hookspecs import hookimpl
from gvt_core.mpt.info import BackendInfo, Capabilities, DmaMode, HypervisorType, PageTrackMode
from gvt_core.mpt.loader import LoadedBackend, load_backend, register_plugin
from gvt_core.mpt.ops import CoreOps, HostContext, Msi

__all__ = [
    "BackendInfo",
    "Capabilities",
    "CoreOps",
    "DmaMode",
    "HostContext",
    "HypervisorType",
    "LoadedBackend",
    "Mpt",
    "Msi",
    "PageTrackMode",
    "hookimpl",
    "load_backend",
    "register_plugin",
]
