"""An HVM domain of the emulated Xen: RAM, p2m, ioreq servers, vCPUs, life cycle.

The p2m has one type per RAM frame (``HVMMEM_*``), machine-frame mappings
made with ``XEN_DOMCTL_memory_mapping`` (``p2m_mmio_direct``), special
frames (legacy ioreq pages) and holes. At most one ioreq server owns the
``HVMMEM_ioreq_server`` type at a time (``p2m_set_ioreq_server``), and
``ioreq_entries`` counts the frames of that type, as Xen's
``p2m->ioreq.entry_count`` does. Every field is guarded by the
hypervisor lock (``xen.lock``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from gvt_core.errors import GuestExitError, GuestMemoryError, VgpuStateError
from gvt_xengt import abi
from gvt_xengt.emulated.evtchn import EventChannelTable
from gvt_xengt.emulated.ioreq import MAX_NR_IOREQ_SERVERS, IoreqServerModel, Rangeset
from gvt_xengt.emulated.memory import MemfdPages
from gvt_xengt.emulated.vcpu import EmulatedVcpu

if TYPE_CHECKING:
    from gvt_xengt.emulated.xen import EmulatedXen

#: the gfns the toolstack reserves for legacy (gfn-mapped) ioreq pages,
#: ``HVM_PARAM_IOREQ_SERVER_PFN`` and the pages after it (libxl: 0xFEFF0000).
LEGACY_IOREQ_GFN = 0xFEFF0
LEGACY_IOREQ_GFNS = 8


class HvmDomain:
    """One emulated HVM domain."""

    def __init__(self, xen: EmulatedXen, domid: int, name: str, mem_size: int, vcpus: int,
                 paused: bool) -> None:
        self.xen = xen
        self.domid = domid
        self.name = name or f"domain{domid}"
        self.mem_size = mem_size
        self.pages = mem_size >> abi.PAGE_SHIFT
        self.ram = MemfdPages(f"domain{domid}-ram", self.pages)
        self.p2m = np.zeros(self.pages, dtype=np.uint8)  # HVMMEM_ram_rw
        self.mmio: dict[int, int] = {}
        self.special: dict[int, int] = {}
        self.legacy_gfns_free = list(range(LEGACY_IOREQ_GFN, LEGACY_IOREQ_GFN + LEGACY_IOREQ_GFNS))
        self.iomem = Rangeset(limit=1 << 30)
        self.servers: list[IoreqServerModel | None] = [None] * MAX_NR_IOREQ_SERVERS
        self.ioreq_owner: IoreqServerModel | None = None
        self.ioreq_flags = 0
        self.ioreq_entries = 0
        self.evtchn = EventChannelTable(domid)
        self.vcpus = [EmulatedVcpu(self, i) for i in range(vcpus)]
        self.pci_cf8 = 0
        #: the guest kernel's ``pci_config_lock``: its 0xCF8/0xCFC pairs never interleave.
        self.guest_pci_lock = threading.Lock()
        #: ``controller_pause_count``: toolstack/device-model pauses.
        self.pause_count = 1 if paused else 0
        self.shutdown_reason: int | None = None
        self.crash_reason = ""
        self.dying = False
        self.ended = threading.Event()

    def __repr__(self) -> str:
        return f"HvmDomain(domid={self.domid}, name={self.name!r}, mem={self.mem_size >> 20} MiB)"

    @property
    def max_vcpus(self) -> int:
        return len(self.vcpus)

    @property
    def max_gpfn(self) -> int:
        """``domain_get_maximum_gpfn``: the highest frame in the p2m."""
        top = self.pages - 1
        if self.mmio:
            top = max(top, max(self.mmio))
        if self.special:
            top = max(top, max(self.special))
        return top

    @property
    def paused(self) -> bool:
        return self.pause_count > 0

    # --- running ---------------------------------------------------------------------------
    def check_running(self) -> None:
        """A vCPU may execute: the domain is alive and not paused."""
        if self.dying or self.shutdown_reason is not None:
            raise GuestExitError(
                self.name, "domain gone",
                f"domain {self.domid} has shut down or was destroyed"
                + (f" ({self.crash_reason})" if self.crash_reason else ""),
            )
        if self.pause_count:
            raise VgpuStateError(
                f"domain {self.domid} ({self.name}) is paused; its vCPUs cannot run"
            )

    def crash(self, reason: str) -> GuestExitError:
        """``domain_crash``: shut the domain down; returns the error to raise in the vCPU."""
        self.crash_reason = reason
        self.xen.shutdown(self, abi.SHUTDOWN_crash)
        return GuestExitError(self.name, "domain_crash", reason)

    # --- address space ---------------------------------------------------------------------
    def route(self, gfn: int) -> tuple[str, int]:
        """What backs ``gfn``: ("ram", HVMMEM type), ("mmio", mfn), ("special",
        heap page) or ("hole", 0)."""
        if 0 <= gfn < self.pages:
            return "ram", int(self.p2m[gfn])
        mfn = self.mmio.get(gfn)
        if mfn is not None:
            return "mmio", mfn
        page = self.special.get(gfn)
        if page is not None:
            return "special", page
        return "hole", 0

    def plain_ram(self, gpa: int, length: int) -> bool:
        if gpa < 0 or length < 0 or gpa + length > self.mem_size:
            return False
        first, last = gpa >> abi.PAGE_SHIFT, (gpa + max(length, 1) - 1) >> abi.PAGE_SHIFT
        return not self.p2m[first : last + 1].any()

    def ram_access(self, gpa: int, n: int, data: bytes | None) -> bytes:
        view = self.ram.view
        if data is None:
            return bytes(view[gpa : gpa + n])
        view[gpa : gpa + n] = data
        return b""

    def read_ram(self, gpa: int, length: int) -> bytes:
        """Guest RAM as the guest's own side-effect-free reads see it."""
        if gpa < 0 or length < 0 or gpa + length > self.mem_size:
            raise GuestMemoryError(gpa, length, self.mem_size, "read")
        return bytes(self.ram.view[gpa : gpa + length])

    def select_server(self, type_: int, first: int, last: int) -> IoreqServerModel | None:
        """``hvm_select_ioreq_server``: newest enabled server whose range holds it all."""
        for server in reversed(self.servers):
            if server is not None and server.enabled and server.ranges[type_].contains(first, last):
                return server
        return None

    def emulated_target(self, gpa: int, size: int, write: bool) -> IoreqServerModel | None:
        """The server a string operation element at ``gpa`` goes to, None for plain RAM."""
        kind, arg = self.route(gpa >> abi.PAGE_SHIFT)
        if kind == "ram" and (arg == abi.HVMMEM_ram_rw or not write):
            return None
        if kind == "ram" and arg == abi.HVMMEM_ioreq_server and self.ioreq_owner is not None:
            return self.ioreq_owner
        server = self.select_server(abi.XEN_DMOP_IO_RANGE_MEMORY, gpa, gpa + size - 1)
        if server is None:
            raise ValueError(f"{gpa:#x} is neither plain RAM nor claimed by an ioreq server")
        return server

    # --- ioreq servers ------------------------------------------------------------------------
    def server(self, server_id: int) -> IoreqServerModel | None:
        if 0 <= server_id < MAX_NR_IOREQ_SERVERS:
            return self.servers[server_id]
        return None

    def server_alive(self, server: IoreqServerModel) -> bool:
        return self.server(server.id) is server

    def on_ioreq_event(self, server_id: int, vcpu: int) -> None:
        """The device model signalled vCPU ``vcpu``'s channel of ``server_id``."""
        if 0 <= vcpu < len(self.vcpus):
            self.vcpus[vcpu].io_event()

    def wake_all(self) -> None:
        for v in self.vcpus:
            v.io_event()
