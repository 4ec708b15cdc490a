"""The command scanner (facts 8): every command a guest sends is decoded and audited
before a host engine runs it.

The stage the execution pipeline calls between "workload taken" and "engine
executes"::

    result = scanner.scan(ring_section, audit_context, reader, allocator)
    if isinstance(result, ScanRejection):   # fail the workload for this vGPU only
        ...
    else:                                   # execute result.ring; shadows via relocations
        ...
        result.release()                    # when the workload is done

Modules: :mod:`.table` (the scanner's audit flags per command; the command
table itself is :mod:`gvt_core.hw.engine.commands`, shared with the engines),
:mod:`.decoder` (vectorised header classification), :mod:`.walker` (ring
section and batch buffers, limits), :mod:`.shadow` (shadow batches,
relocations, the allocator interface), :mod:`.audit` (facts 8.4),
:mod:`.rejection` (reason codes), :mod:`.scan` (one workload, and a vGPU's
counters), :mod:`.stage` (the prepare-pipeline stage every workload goes
through: reader, shadow blocks in host GM, rejections, flips).
"""

from gvt_core.device.execution.scanner.audit import (
    AuditContext,
    DisplayFlip,
    DisplayPlane,
    DwordPatch,
    EventKind,
    GmPartition,
    RegisterWrite,
    ScanEvent,
)
from gvt_core.device.execution.scanner.rejection import BufferKind, RejectReason, ScanRejection
from gvt_core.device.execution.scanner.scan import (
    DEFAULT_LIMITS,
    CommandScanner,
    ScanCounters,
    ScanResult,
    scan_workload,
)
from gvt_core.device.execution.scanner.shadow import (
    AddressSpace,
    HostBuffer,
    Relocation,
    ShadowAllocator,
    ShadowBatch,
)
from gvt_core.device.execution.scanner.walker import CommandReader, RingSection, ScanLimits

__all__ = [
    "DEFAULT_LIMITS",
    "AddressSpace",
    "AuditContext",
    "BufferKind",
    "CommandReader",
    "CommandScanner",
    "DisplayFlip",
    "DisplayPlane",
    "DwordPatch",
    "EventKind",
    "GmPartition",
    "HostBuffer",
    "RegisterWrite",
    "RejectReason",
    "Relocation",
    "RingSection",
    "ScanCounters",
    "ScanEvent",
    "ScanLimits",
    "ScanRejection",
    "ScanResult",
    "ShadowAllocator",
    "ShadowBatch",
    "scan_workload",
]
