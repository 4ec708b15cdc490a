"""The error hierarchy of gvt.

Every error gvt raises derives from :class:`GvtError`. Each message says what
went wrong and what to do about it. Guest misbehaviour is *not* an error of
the host: the device model answers it with the documented hardware behaviour
and counts it; these exceptions are for the host side (configuration, backend
contracts, resource exhaustion, DMA faults reported against a vGPU).
"""

from __future__ import annotations


class GvtError(Exception):
    """Base of every error raised by gvt."""


# --- loading a backend -----------------------------------------------------


class BackendError(GvtError):
    """A hypervisor backend could not be loaded or used."""

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(message)
        self.backend = backend


class BackendNotFoundError(BackendError):
    """No installed distribution registers a backend of that name."""

    def __init__(self, backend: str, installed: list[str]) -> None:
        listed = ", ".join(sorted(installed)) or "none"
        super().__init__(
            backend,
            f"no gvt backend named {backend!r} is installed (installed: {listed}); "
            f"install its distribution, e.g. 'pip install gvt-{backend}', or pick an installed one",
        )
        self.installed = sorted(installed)


class BackendImportError(BackendError):
    """The backend's entry point exists but its code failed to import."""

    def __init__(self, backend: str, target: str, cause: BaseException) -> None:
        super().__init__(
            backend,
            f"gvt backend {backend!r} failed to load from entry point {target!r}: "
            f"{type(cause).__name__}: {cause}; reinstall the backend's distribution or fix the import error",
        )
        self.target = target
        self.cause = cause


class BackendIncompleteError(BackendError):
    """The backend does not implement every mandatory MPT hook."""

    def __init__(self, backend: str, missing: list[str]) -> None:
        super().__init__(
            backend,
            f"gvt backend {backend!r} does not implement the mandatory MPT hooks: "
            f"{', '.join(missing)}; implement them (see gvt_core.mpt.hookspecs) before loading it",
        )
        self.missing = list(missing)


class BackendUnusableError(BackendError):
    """The backend is installed but says it cannot work on this machine.

    Its own reason wins over missing hooks (a backend that cannot work here,
    like an ABI shell, need not be complete); those are listed in ``missing``.
    """

    def __init__(self, backend: str, reason: str, missing: list[str] | None = None) -> None:
        extra = (
            f" (it also lacks the mandatory MPT hooks: {', '.join(missing)})" if missing else ""
        )
        super().__init__(
            backend, f"gvt backend {backend!r} is installed but not usable here: {reason}{extra}"
        )
        self.reason = reason
        self.missing = list(missing or [])


class PluginConflictError(BackendError):
    """A second plugin tried to answer MPT hooks on a host that already has a backend."""


class HookUnsupportedError(BackendError):
    """A backend was asked for an MPT operation it cannot honour.

    Raised by backends instead of returning a made-up value.
    """

    def __init__(self, backend: str, hook: str, reason: str) -> None:
        super().__init__(backend, f"gvt backend {backend!r} cannot perform {hook}: {reason}")
        self.hook = hook
        self.reason = reason


# --- guest memory and DMA ----------------------------------------------------


class GuestNotFoundError(BackendError):
    """``open_vm`` was asked for a guest the hypervisor does not have (or will not let us serve)."""

    def __init__(self, backend: str, vm_id: int, reason: str) -> None:
        super().__init__(
            backend,
            f"gvt backend {backend!r} cannot serve guest {vm_id}: {reason}; "
            "check the id with the hypervisor's toolstack (xl list, acrnctl list)",
        )
        self.vm_id = vm_id


class GuestMemoryError(GvtError):
    """A guest-physical access fell outside the guest's memory."""

    def __init__(self, gpa: int, length: int, mem_size: int, what: str = "access") -> None:
        super().__init__(
            f"guest {what} of {length} bytes at gpa {gpa:#x} is outside guest memory "
            f"[0, {mem_size:#x}); check the address the guest supplied"
        )
        self.gpa = gpa
        self.length = length
        self.mem_size = mem_size


class InvalidGfnError(GvtError):
    """A guest frame number does not name guest RAM."""

    def __init__(self, gfn: int, reason: str = "not backed by guest RAM") -> None:
        super().__init__(f"guest frame {gfn:#x} is invalid: {reason}")
        self.gfn = gfn


class DmaMapError(GvtError):
    """A guest page could not be made visible to the GPU, or a mapping is unknown."""


class DmaFault(GvtError):
    """The GPU touched a bus address that nobody mapped.

    The simulated GPU raises it instead of reading zeros, so a missing mapping
    is never silent.
    """

    def __init__(self, addr: int, length: int, who: str = "gpu") -> None:
        super().__init__(
            f"DMA fault: {who} accessed {length} bytes at unmapped bus address {addr:#x}"
        )
        self.addr = addr
        self.length = length


class PageTrackError(GvtError):
    """Write tracking of a guest page could not be changed."""


class AddressSpaceError(GvtError):
    """A guest-physical range could not be trapped or mapped, or unmapped:
    it overlaps an existing one, or nothing was mapped there."""


class SysmemConflictError(GvtError):
    """Two owners tried to register the same system-memory frame."""


# --- real hypervisors ---------------------------------------------------------


class HypervisorCallError(BackendError):
    """A call into the real hypervisor (an ioctl on /dev/kvm, a hypercall) failed."""

    def __init__(self, backend: str, call: str, errno_: int, detail: str = "") -> None:
        import os

        extra = f"; {detail}" if detail else ""
        super().__init__(
            backend,
            f"gvt backend {backend!r}: {call} failed with errno {errno_} "
            f"({os.strerror(errno_) if errno_ else 'no errno'}){extra}",
        )
        self.call = call
        self.errno = errno_


class GuestExitError(GvtError):
    """A guest stopped in a way the VMM cannot serve (fault, shutdown, failed
    entry, internal hypervisor error); names the exit reason and where."""

    def __init__(self, vm: str, reason: str, detail: str) -> None:
        super().__init__(f"guest {vm!r} stopped with {reason}: {detail}")
        self.vm = vm
        self.reason = reason
        self.detail = detail


# --- the device model ------------------------------------------------------


class ResourceExhaustedError(GvtError):
    """A vGPU could not be created because a host resource ran out."""

    def __init__(self, resource: str, requested: int, available: int, unit: str = "") -> None:
        u = f" {unit}" if unit else ""
        super().__init__(
            f"not enough {resource}: the vGPU needs {requested}{u}, only {available}{u} left; "
            "destroy a vGPU or choose a smaller type"
        )
        self.resource = resource
        self.requested = requested
        self.available = available


class UnknownTypeError(GvtError):
    """No vGPU type of that name exists on this host."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no vGPU type {name!r}; known types: {', '.join(known)}")
        self.name = name


class VgpuStateError(GvtError):
    """An operation does not fit the vGPU's current life-cycle state."""


class GuestDriverError(GvtError):
    """The guest-driver model found the virtual device not behaving as a vGPU must."""

    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"guest driver failed at {step}: {detail}")
        self.step = step
        self.detail = detail


# --- execution ---------------------------------------------------------------


class WorkloadRejectedError(GvtError):
    """A guest workload cannot run: a bad descriptor, context or ring, or an audit
    refused it. The guest sees its engine hang (no completion); ``unhealthy``
    means the guest misbehaved badly enough that the vGPU enters failsafe mode,
    as upstream does for command-parser errors."""

    def __init__(self, reason: str, *, unhealthy: bool = False) -> None:
        super().__init__(f"workload rejected: {reason}")
        self.reason = reason
        self.unhealthy = unhealthy
