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


class BackendNameMismatchError(BackendError):
    """A backend's ``backend_info().name`` is not the name it is installed under."""

    def __init__(self, backend: str, says: str) -> None:
        super().__init__(
            backend,
            f"gvt backend installed as {backend!r} calls itself {says!r} in backend_info; "
            f"the two names must be the same: make backend_info return name={backend!r} "
            f"(or register the entry point as {says!r})",
        )
        self.says = says


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


class VmCreateError(BackendError):
    """``create_vm`` cannot launch a guest of that size (or with those arguments)."""

    def __init__(self, backend: str, name: str, mem_size: object, reason: str) -> None:
        size = f"{mem_size} bytes" if not isinstance(mem_size, int) else (
            f"{mem_size >> 20} MiB" if mem_size >= 1 << 20 else f"{mem_size} bytes")
        super().__init__(
            backend,
            f"gvt backend {backend!r} cannot launch guest {name!r} with {size} of RAM: {reason}",
        )
        self.mem_size = mem_size
        self.reason = reason


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


# --- graphics memory seen by the command scanner ------------------------------


class GmaFault(GvtError):
    """A graphics memory address (GGTT or a context's PPGTT) has no mapping.

    Raised by command readers (and engines) instead of returning zeros, so a
    fetch from unmapped graphics memory is a fault of that vGPU's workload.
    """

    def __init__(self, space: str, gma: int, length: int, reason: str = "not mapped") -> None:
        super().__init__(
            f"{space.upper()} fault: {length} bytes at graphics address {gma:#x}: {reason}"
        )
        self.space = space
        self.gma = gma
        self.length = length
        self.reason = reason


class ShadowAllocError(GvtError):
    """Host memory for a shadow batch buffer could not be allocated."""

    def __init__(self, nbytes: int, available: int) -> None:
        super().__init__(
            f"cannot allocate {nbytes} bytes of host memory for a shadow batch buffer "
            f"({available} bytes free); let running workloads complete or enlarge the shadow pool"
        )
        self.nbytes = nbytes
        self.available = available


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

    def __init__(
        self, resource: str, requested: int, available: int, unit: str = "",
        advice: str = "destroy a vGPU or choose a type with less graphics memory",
    ) -> None:
        u = f" {unit}" if unit else ""
        super().__init__(
            f"not enough {resource}: the vGPU needs {requested}{u}, only {available}{u} left; "
            f"{advice}"
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


class RegisterBehaviourError(GvtError):
    """Behaviour was attached to a register handler or register the table does not have."""


class PpgttShadowError(GvtError):
    """A guest PPGTT cannot be shadowed the way the hardware would walk it (upstream
    fails the shadow too: a 1 GiB entry on Broadwell)."""

    def __init__(self, detail: str, gfn: int | None = None) -> None:
        where = f" (guest table at frame {gfn:#x})" if gfn is not None else ""
        super().__init__(f"cannot shadow the guest PPGTT{where}: {detail}")
        self.gfn = gfn


class AddressingModeError(GvtError):
    """A context descriptor asks for an addressing mode GVT-g does not virtualise."""

    def __init__(self, mode: int) -> None:
        super().__init__(
            f"context addressing mode {mode} is not supported: GVT-g runs legacy 32-bit "
            "(mode 1, 3-level) and legacy 64-bit (mode 3, 4-level) PPGTT contexts only; "
            "advanced (SVM) contexts are refused"
        )
        self.mode = mode


# --- display -----------------------------------------------------------------


class EdidError(GvtError):
    """An EDID given to plug a virtual monitor is not one a monitor could present."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(
            f"EDID from {source} is invalid: {reason}; supply 128-byte blocks (base block plus "
            "at most one extension) with the 00 FF FF FF FF FF FF 00 header and a valid checksum"
        )
        self.source = source
        self.reason = reason


class FramebufferError(GvtError):
    """A vGPU's display state cannot be turned into a picture.

    The guest programmed its planes that way; the host caller (a screenshot,
    a dma-buf export) gets this error, the guest is not affected.
    """

    def __init__(self, plane: str, reason: str, hint: str = "") -> None:
        tail = f"; {hint}" if hint else ""
        super().__init__(f"cannot decode the {plane} plane: {reason}{tail}")
        self.plane = plane
        self.reason = reason


class PlaneDisabledError(FramebufferError):
    """No pipe is running, or the plane is off: there is nothing to show."""


class SurfaceOutOfRangeError(FramebufferError):
    """The plane's surface reaches outside the vGPU's own graphics memory."""


class BadStrideError(FramebufferError):
    """The stride is too small for the width, misaligned, or does not fit the tiling."""


class UnsupportedFormatError(FramebufferError):
    """The plane's pixel format field holds a reserved or unsupported value."""


class UnmappedSurfaceError(FramebufferError):
    """A page of the surface has no present GGTT entry (nothing is mapped there)."""


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
