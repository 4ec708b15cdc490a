"""The MPT interface: what the device model needs from a hypervisor, as pluggy hooks.

This is the Python form of the kernel's ``struct intel_gvt_mpt``. A backend
is a plugin object implementing these hooks (decorate with
:data:`hookimpl`); each host registers exactly one backend, so every MPT hook
is ``firstresult`` and has exactly one answer. The core never calls these
hooks directly: it goes through :class:`gvt_core.mpt.facade.Mpt`.

Conventions used by every hook:

* ``handle`` is whatever the backend returned from :func:`attach_vgpu` for a
  vGPU; the core stores it and passes it back untouched.
* ``gfn`` is a guest frame number (guest-physical address >> 12); ``gpa`` is a
  guest-physical address in bytes; ``mfn`` is a host frame number; a "DMA
  address" is the bus address the GPU emits. Sizes are in bytes.
* Errors are exceptions from :mod:`gvt_core.errors`. A backend that cannot
  perform an operation raises :class:`~gvt_core.errors.HookUnsupportedError`
  naming itself and the reason; it never returns an invented value.

Hooks are **mandatory** (the loader refuses a backend without them) or
**optional** (the facade supplies the documented core default, the kernel's
``mpt.h`` behaviour for a NULL callback). :data:`MANDATORY_HOOKS` and
:data:`OPTIONAL_HOOKS` list them; every hook's docstring says which it is.

Event hooks (prefixed ``gvt_``) are broadcast notifications for any number of
observer plugins; they are never called on a per-access hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from gvt_core.guest.port import GuestVm
    from gvt_core.mpt.info import BackendInfo
    from gvt_core.mpt.ops import HostContext

PROJECT = "gvt"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- identity ----------------------------------------------------------------


@hookspec(firstresult=True)
def backend_info() -> BackendInfo:
    """Describe the backend: name, version, whether it works here, capabilities.

    **Mandatory.** Called by the loader before anything else, and by
    ``gvt backends``. Must be cheap and must not raise: a backend that cannot
    work on this machine (no ``/dev/kvm``, not in a Xen dom0) answers
    ``usable=False`` with the reason. Replaces the kernel's ``detect_host``.

    :returns: a :class:`gvt_core.mpt.info.BackendInfo`.
    """


# --- host life cycle ---------------------------------------------------------


@hookspec(firstresult=True)
def host_init(host: HostContext) -> None:
    """Bind the backend to a new GVT host.

    **Optional** (core default: nothing to do). Called once when a
    :class:`~gvt_core.device.gvt.Gvt` host is created, after the simulated GPU
    exists and before any vGPU. The backend keeps ``host.ops`` to forward
    trapped accesses and ``host.sysmem`` to register the guest pages it maps
    for DMA.

    :param host: the host's ops and system-memory registry.
    """


@hookspec(firstresult=True)
def host_exit(host: HostContext) -> None:
    """Unbind the backend from a host being torn down.

    **Optional** (core default: nothing to do). Called once, after every vGPU
    of the host was destroyed. The backend releases whatever ``host_init``
    acquired.

    :param host: the same object ``host_init`` received.
    """


@hookspec(firstresult=True)
def dom0_ready() -> None:
    """Tell the hypervisor that the service OS graphics stack is up.

    **Optional** (core default: nothing to do; only ACRN acts on it, with the
    ``GVT_DOM0_READY=1`` uevent). Called once after ``host_init`` succeeded.
    """


# --- guests and vGPU binding ---------------------------------------------------


@hookspec(firstresult=True)
def create_vm(host: HostContext, mem_size: int, name: str) -> GuestVm:
    """Launch a guest that a vGPU can be attached to.

    **Optional**: not part of the kernel's MPT, where QEMU or the toolstack
    creates VMs; generic tooling (``gvt demo``, the scenario suite) needs it.
    Core default: :class:`~gvt_core.errors.HookUnsupportedError`. A backend
    that implements it sets ``Capabilities.can_create_vm``.

    :param host: the host the VM's vGPU will belong to.
    :param mem_size: guest RAM in bytes, a multiple of 4096.
    :param name: a label for messages.
    :returns: a :class:`gvt_core.guest.port.GuestVm`.
    :raises VmCreateError: a size that is not whole pages, or more RAM than the
        backend launches (the message names its limit).
    """


@hookspec(firstresult=True)
def open_vm(host: HostContext, vm_id: int) -> GuestVm:
    """Take over serving a guest that the hypervisor's own toolstack created.

    **Optional** (core default: :class:`~gvt_core.errors.HookUnsupportedError`;
    backends whose guests come only from ``create_vm`` leave it out). This is
    what ``gvt serve`` calls: on Xen the guest is an HVM domain made by ``xl``
    (``vm_id`` is its domid), on ACRN a User VM made by the Service VM's
    launcher (its vmid). The backend binds to that guest (ioreq server or
    client, event channels, RAM mappings) but does not own its life:
    ``close()`` of the returned guest releases what the backend set up and
    leaves the guest running (or, if it already ended, simply cleans up); a
    backend whose hypervisor cannot run the guest without it (on ACRN the
    backend is the VM's only ioreq client) stops the guest instead and says so
    in its documentation.

    :param host: the host the guest's vGPU will belong to.
    :param vm_id: the hypervisor's identifier of an existing guest.
    :returns: a :class:`gvt_core.guest.port.GuestVm` for ``attach_vgpu``.
    :raises GuestNotFoundError: no such guest, or it cannot be served (the
        message says which and why).
    """


@hookspec(firstresult=True)
def attach_vgpu(vgpu: Any, vm: Any) -> Any:
    """Bind a newly created vGPU to a guest and return its handle.

    **Optional** (core default: the handle is ``vm`` itself). Called during
    vGPU creation, after the vGPU's resources are allocated and before its
    GTT is initialised (the kernel's order). From this point the backend
    routes the guest's config accesses (00:02.0) and BAR0 accesses to
    ``host.ops`` with ``vgpu`` as first argument.

    :param vgpu: the core's vGPU object; opaque to the backend except ``vgpu.id``.
    :param vm: the guest, as returned by ``create_vm`` or as the caller passed it.
    :returns: the handle later hooks receive.
    """


@hookspec(firstresult=True)
def detach_vgpu(handle: Any) -> None:
    """Unbind a vGPU from its guest.

    **Optional** (core default: nothing to do). Called last when a vGPU is
    destroyed. The backend releases *everything* it still holds for the
    handle: page tracks, DMA mappings and pins, trap areas, aperture maps.
    Once it returns, no guest access that starts afterwards reaches the core
    for this vGPU (one already in flight may; the core refuses it), and the
    release hooks (``disable_page_track``, ``dma_unmap_guest_page(s)``,
    unmapping trap areas and aperture maps) on this handle are quiet no-ops:
    the core may still ask for them when the guest was closed first.
    """


# --- interrupts ----------------------------------------------------------------


@hookspec(firstresult=True)
def inject_msi(handle: Any, address: int, data: int) -> None:
    """Deliver one message-signalled interrupt to the guest.

    **Mandatory.** The core decodes the vGPU's virtual MSI capability itself
    and calls this only when MSI is enabled (``mpt.h`` semantics). An MSI is
    an edge, not a log: one identical to a message the guest has not taken yet
    coalesces with it, and at most ``gvt_core.guest.port.MAX_PENDING_MSIS``
    distinct ones wait (more are dropped and counted), so a guest that makes
    the core inject in a loop cannot grow the backend's queue.

    :param address: the 32-bit MSI address the guest programmed.
    :param data: the 16-bit MSI data the guest programmed.
    """


# --- guest memory ----------------------------------------------------------------


@hookspec(firstresult=True)
def read_gpa(handle: Any, gpa: int, length: int) -> bytes:
    """Copy guest memory to the host (ring buffers, contexts, page tables).

    **Mandatory.** The read has no side effect on the guest; tracked pages
    read normally.

    :param gpa: guest-physical address in bytes.
    :param length: bytes to read, >= 0.
    :returns: exactly ``length`` bytes.
    :raises GuestMemoryError: any byte outside guest RAM.
    """


@hookspec(firstresult=True)
def write_gpa(handle: Any, gpa: int, data: bytes) -> None:
    """Copy host data into guest memory.

    **Mandatory.** A write by the host never triggers the page-track handler.

    :param gpa: guest-physical address in bytes of ``data``'s first byte.
    :raises GuestMemoryError: any byte outside guest RAM (nothing is written).
    """


@hookspec(firstresult=True)
def gfn_to_mfn(handle: Any, gfn: int) -> int:
    """Translate a guest frame to the host frame backing it.

    **Mandatory.** Used to check 2 MiB contiguity and by backends without an
    IOMMU.

    :param gfn: guest frame number (guest-physical address >> 12).
    :returns: the host frame number.
    :raises InvalidGfnError: the frame is not guest RAM (the kernel's
        ``INTEL_GVT_INVALID_ADDR``).
    """


@hookspec(firstresult=True)
def is_valid_gfn(handle: Any, gfn: int) -> bool:
    """Whether ``gfn`` names guest RAM.

    **Optional** (core default: True, as ``mpt.h``). The GTT code calls it
    before mapping a guest PTE; an invalid frame is shadowed to scratch.
    """


@hookspec(firstresult=True)
def from_virt_to_mfn(vaddr: int) -> int:
    """Host frame of a host page the core owns.

    **Mandatory.** The core allocates shadow page tables, scratch pages and
    the OpRegion in host memory and asks for their frames to put them in the
    host GGTT/PPGTT and the system-memory registry.

    :param vaddr: host virtual address of the start of a 4 KiB page.
    :returns: the host frame number (stable while the page is allocated).
    """


# --- write tracking of guest pages ---------------------------------------------------


@hookspec(firstresult=True)
def enable_page_track(handle: Any, gfn: int) -> None:
    """Start trapping guest writes to one guest page.

    **Mandatory.** Called for every guest page-table page of a live shadow.
    From now on each guest store into the page reaches
    ``host.ops.page_track_write(vgpu, gpa, data)``, either after it landed in
    guest RAM or instead of landing, as ``Capabilities.page_track`` declares.
    Enabling an already tracked page is an error.

    :raises PageTrackError: already tracked, or the hypervisor refused.
    :raises InvalidGfnError: ``gfn`` is not guest RAM.
    """


@hookspec(firstresult=True)
def enable_page_tracks(handle: Any, gfns: Sequence[int]) -> None:
    """Start trapping guest writes to many guest pages at once: the bulk form of
    :func:`enable_page_track`.

    **Optional** (core default: one ``enable_page_track`` per frame, in order;
    on an error the frames already enabled are disabled again before the
    error propagates). Called when a shadow PPGTT directory brings many new
    page-table pages (a PD of 512 PTs), so a hypervisor can apply one
    protection update for all of them (KVM: one memslot update). Either every
    page is tracked or, on error, none is.

    :param gfns: guest frame numbers (a sequence of ints or a 1-D integer
        numpy array), each not tracked yet and listed once.
    :raises PageTrackError: a frame is already tracked or listed twice, or the
        hypervisor refused.
    :raises InvalidGfnError: a frame is not guest RAM.
    """


@hookspec(firstresult=True)
def disable_page_track(handle: Any, gfn: int) -> None:
    """Stop trapping writes to a page tracked with :func:`enable_page_track`.

    **Mandatory.**

    :param gfn: the guest frame passed to :func:`enable_page_track`.

    :raises PageTrackError: the page is not tracked.
    """


# --- DMA -----------------------------------------------------------------------


@hookspec(firstresult=True)
def dma_map_guest_page(handle: Any, gfn: int, size: int) -> int:
    """Make guest memory reachable by the GPU and return its DMA address.

    **Mandatory.** Used for every GGTT entry and every shadow PPGTT leaf. Maps
    are reference counted per (gfn, size): mapping the same page again returns
    the same address and takes one more reference. The backend registers the
    mapped pages in the host's system-memory registry under the DMA address.

    :param gfn: first guest frame.
    :param size: 4096, or 2 MiB where ``Capabilities.max_dma_page`` allows
        (``gfn`` then 512-frame aligned and the range contiguous on the host).
    :returns: DMA (bus) address of the first byte.
    :raises InvalidGfnError: the range is not guest RAM.
    :raises DmaMapError: the hypervisor refused (the VM's pin quota,
        ``Capabilities.pin_quota``, is used up, or pinning failed), or ``size``
        is not supported. The core then shadows the entry to scratch and
        counts the refusal for the vGPU.
    """


@hookspec(firstresult=True)
def dma_map_guest_pages(handle: Any, gfns: Sequence[int], size: int) -> Sequence[int]:
    """Map many guest pages at once: the bulk form of :func:`dma_map_guest_page`.

    **Optional** (core default: one ``dma_map_guest_page`` per frame). Used
    when a whole page table is shadowed. Either every page is mapped or,
    on error, none is (already taken references are dropped again).

    :param gfns: guest frames (a sequence of ints or a 1-D integer numpy
        array); repeated frames take one reference each.
    :param size: bytes per mapping, as for :func:`dma_map_guest_page`.
    :returns: one DMA address per entry of ``gfns``, in order: a list of ints
        or a 1-D integer numpy array (a backend answering a whole page table
        at once should return an array rather than 512 Python ints). The
        caller keeps the answer: it must be a fresh list or array, never a
        view of the backend's own tables.
    :raises InvalidGfnError: a frame is not guest RAM (nothing is mapped).
    :raises DmaMapError: the hypervisor refused (nothing is mapped).
    """


@hookspec(firstresult=True)
def dma_unmap_guest_page(handle: Any, dma_addr: int) -> None:
    """Drop one reference on a mapping from :func:`dma_map_guest_page`.

    **Mandatory.** On the last reference the pages leave the system-memory
    registry and GPU accesses to them fault.

    :raises DmaMapError: no mapping at ``dma_addr``.
    """


@hookspec(firstresult=True)
def dma_unmap_guest_pages(handle: Any, dma_addrs: Sequence[int]) -> None:
    """Drop one reference on each of many mappings: the bulk form of
    :func:`dma_unmap_guest_page`.

    **Optional** (core default: one ``dma_unmap_guest_page`` per address, in
    order; that default stops at the first bad address, leaving the earlier
    ones dropped). Called when a shadow page table dies (a 4K PT holds up to
    512 maps; destroying a PPGTT that maps 1 GiB drops 262,144). A backend
    implementing it checks every address before dropping anything: on error
    no reference is dropped.

    :param dma_addrs: DMA (bus) addresses returned by
        :func:`dma_map_guest_page` or :func:`dma_map_guest_pages` (a sequence
        of ints or a 1-D integer numpy array); an address listed ``n`` times
        drops ``n`` references.
    :raises DmaMapError: an address has no mapping, or is listed more often
        than its mapping has references.
    """


@hookspec(firstresult=True)
def dma_pin_guest_page(handle: Any, dma_addr: int) -> None:
    """Take one more reference on an existing mapping (a displayed surface
    exported as a dma-buf stays mapped while the guest rewrites its GTT).

    **Optional** (core default: :class:`~gvt_core.errors.HookUnsupportedError`,
    since pinning that silently does nothing would let a mapping vanish).
    Released with :func:`dma_unmap_guest_page`.

    :raises DmaMapError: no mapping at ``dma_addr``.
    """


# --- address-space plumbing (Xen, ACRN) -------------------------------------------


@hookspec(firstresult=True)
def map_gfn_to_mfn(handle: Any, gfn: int, mfn: int, nr_pages: int, map: bool) -> None:
    """Map (or unmap) host frames directly into guest-physical space.

    **Optional** (core default: nothing to do). Called only when
    ``Capabilities.needs_aperture_map``: when the guest enables memory
    decoding or moves BAR2, to show the vGPU's aperture slice at the right
    offset of the guest's BAR2.

    :param gfn: first guest frame; :param mfn: first host frame;
    :param nr_pages: number of 4 KiB frames; :param map: True maps, False unmaps.
    :raises AddressSpaceError: mapping over an existing map, or unmapping one
        that was not mapped with the same ``gfn``, ``mfn`` and ``nr_pages``.
    """


@hookspec(firstresult=True)
def set_trap_area(handle: Any, start: int, end: int, map: bool) -> None:
    """Start (``map=True``) or stop trapping guest accesses to ``[start, end)``.

    **Optional** (core default: nothing to do). Called only when
    ``Capabilities.needs_trap_area``, when the guest enables memory decoding
    or moves BAR0; ``start``/``end`` are guest-physical byte addresses, ``end``
    exclusive.

    :raises AddressSpaceError: mapping a range that overlaps a trapped one, or
        unmapping a range that was not mapped as exactly ``[start, end)``.
    """


@hookspec(firstresult=True)
def set_pvmmio(handle: Any, start: int, end: int, map: bool) -> None:
    """Map (or unmap) the vGPU's MMIO register pages read-only into the guest
    at ``[start, end)`` so a PV guest reads registers without exits (ACRN).

    **Optional** (core default: :class:`~gvt_core.errors.HookUnsupportedError`;
    the core then keeps trapping every access). The PVINFO page stays trapped.
    ``start``/``end`` are guest-physical byte addresses, ``end`` exclusive;
    ``map`` True maps, False unmaps.
    """


@hookspec(firstresult=True)
def set_opregion(handle: Any, frames: Sequence[int]) -> int | None:
    """Expose the vGPU's virtual OpRegion (host frames registered in sysmem) to the guest.

    **Optional** (core default: None). Called once at vGPU creation.

    :returns: the guest-physical address where the backend placed it (the core
        then writes it to ASLS, as ACRN does), or None when the guest programs
        ASLS itself.
    """


@hookspec(firstresult=True)
def set_edid(handle: Any, port: int) -> None:
    """Give user space a way to change the virtual monitor on ``port``.

    **Optional** (core default: nothing to do). Called when a monitor is plugged
    into the port: once at vGPU creation, and again at every (re)plug
    (``Gvt.plug_monitor``), before the guest sees the hotplug. Raising leaves the
    port as it was.
    """


@hookspec(firstresult=True)
def pause_domain(handle: Any) -> None:
    """Stop the guest's vCPUs (used when a vGPU hits a fatal emulation error).

    **Optional** (core default: :class:`~gvt_core.errors.HookUnsupportedError`).
    """


@hookspec(firstresult=True)
def unpause_domain(handle: Any) -> None:
    """Resume a guest stopped by :func:`pause_domain`.

    **Optional** (core default: :class:`~gvt_core.errors.HookUnsupportedError`).
    """


# --- events for observers ---------------------------------------------------------


@hookspec
def gvt_host_ready(host: Any) -> None:
    """A host finished initialisation (after ``host_init`` and ``dom0_ready``)."""


@hookspec
def gvt_host_exit(host: Any) -> None:
    """A host is about to call ``host_exit``; every vGPU is gone."""


@hookspec
def gvt_vgpu_created(vgpu: Any) -> None:
    """A vGPU finished creation (attached, GTT, OpRegion and display initialised)."""


@hookspec
def gvt_vgpu_destroyed(vgpu_id: int) -> None:
    """A vGPU was destroyed and every resource it held released."""


@hookspec
def gvt_vgpu_reset(vgpu: Any, dmlr: bool, engine_mask: int) -> None:
    """A vGPU was reset: device-model level (``dmlr``) or GT/engine level."""


@hookspec
def gvt_vgpu_activated(vgpu: Any) -> None:
    """A vGPU became schedulable."""


@hookspec
def gvt_vgpu_deactivated(vgpu: Any) -> None:
    """A vGPU stopped being schedulable and is idle."""


@hookspec
def gvt_vgpu_failsafe(vgpu: Any, reason: str) -> None:
    """A vGPU entered failsafe mode because the guest did something unsupported."""


@hookspec
def gvt_workload_submitted(vgpu: Any, engine: str, context_id: int, time_ns: int) -> None:
    """A guest's ELSP write queued a workload: one per valid context descriptor.

    ``engine`` is ``"rcs"``, ``"bcs"``, ``"vcs"``, ``"vcs2"`` or ``"vecs"``;
    ``time_ns`` is the host clock (simulated by default). Called from the
    guest's trapping thread with the vGPU lock held: observe, do not call
    back into the device model.
    """


@hookspec
def gvt_workload_completed(
    vgpu: Any, engine: str, context_id: int, start_ns: int, end_ns: int, commands: int,
    result: str, reason: str,
) -> None:
    """A workload left its engine: exactly once per submitted workload.

    ``result`` is ``"completed"`` (it ran to its ring tail; the guest got its
    CSB events and interrupts), ``"failed"`` (an engine fault, the watchdog or
    a rejecting prepare stage; ``reason`` says which; the guest sees a hang)
    or ``"dropped"`` (discarded by a fault, reset or destroy before it ran to
    the end). ``start_ns``/``end_ns`` are the host clock when it was loaded
    and left the engine (-1 for what never started); ``commands`` is how many
    commands the engine executed. Called with the vGPU lock held, from the
    host's GPU thread or the thread that reset/destroyed the vGPU.
    """


@hookspec
def gvt_vgpu_scheduled(prev_id: int, next_id: int, time_ns: int) -> None:
    """The scheduler gave the engines from vGPU ``prev_id`` to ``next_id`` at host
    time ``time_ns`` (0 is the idle vGPU: nobody runs). Called from the GPU
    thread with the scheduler lock held: observe only.
    """


MANDATORY_HOOKS: tuple[str, ...] = (
    "backend_info",
    "inject_msi",
    "read_gpa",
    "write_gpa",
    "gfn_to_mfn",
    "from_virt_to_mfn",
    "enable_page_track",
    "disable_page_track",
    "dma_map_guest_page",
    "dma_unmap_guest_page",
)

OPTIONAL_HOOKS: tuple[str, ...] = (
    "host_init",
    "host_exit",
    "dom0_ready",
    "create_vm",
    "open_vm",
    "attach_vgpu",
    "detach_vgpu",
    "is_valid_gfn",
    "enable_page_tracks",
    "dma_map_guest_pages",
    "dma_unmap_guest_pages",
    "dma_pin_guest_page",
    "map_gfn_to_mfn",
    "set_trap_area",
    "set_pvmmio",
    "set_opregion",
    "set_edid",
    "pause_domain",
    "unpause_domain",
)

MPT_HOOKS: tuple[str, ...] = MANDATORY_HOOKS + OPTIONAL_HOOKS

EVENT_HOOKS: tuple[str, ...] = (
    "gvt_host_ready",
    "gvt_host_exit",
    "gvt_vgpu_created",
    "gvt_vgpu_destroyed",
    "gvt_vgpu_reset",
    "gvt_vgpu_activated",
    "gvt_vgpu_deactivated",
    "gvt_vgpu_failsafe",
    "gvt_workload_submitted",
    "gvt_workload_completed",
    "gvt_vgpu_scheduled",
)
