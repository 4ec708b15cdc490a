"""The emulated hypervisor: domains, event channels, dm_ops, the hypercalls XenGT uses.

One :class:`EmulatedXen` is one machine: dom0 (the caller of every
hypercall, domid 0, where the backend runs) and the HVM domains its
toolstack creates. Everything is guarded by one lock, Xen's big locks
folded into one; a vCPU never holds it while it waits for its device
model, so the device model's dm_ops can always proceed.

Hypercalls reach it only through the emulated ``/dev/xen/privcmd``
(:mod:`gvt_xengt.emulated.privcmd`), as packed bytes read from the caller's
memory. Modelled beyond the dm_ops: ``XENMEM_maximum_gpfn``;
``XEN_DOMCTL_pausedomain``/``unpausedomain``, ``iomem_permission`` and
``memory_mapping`` (at most 64 frames per call, else E2BIG, nothing
mapped; the target needs iomem permission for the frames, else EPERM; a
frame already mapped differently, RAM included, is EBUSY). Other
hypercalls answer ENOSYS ("not modelled").
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable

from gvt_xengt import abi
from gvt_xengt.emulated import layouts as L
from gvt_xengt.emulated.dmop import DmOps, resource_frames
from gvt_xengt.emulated.domain import HvmDomain
from gvt_xengt.emulated.evtchn import EventChannelTable, bind_interdomain
from gvt_xengt.emulated.ioreq import RESOURCE_FRAMES, IoreqServerModel
from gvt_xengt.emulated.memory import MachineMemory, XenHeap
from gvt_xengt.emulated.usermem import UserFault, UserMemory

#: pages Xen may allocate for itself (ioreq pages): 2 per server, never reused.
HEAP_PAGES = 4096
#: ``MAP_MMIO_MAX_ITER``: frames one XEN_DOMCTL_memory_mapping call may map.
MEMORY_MAPPING_MAX = 64
#: the host's physical address width (frames at or above 2**(46-12) are refused).
PADDR_BITS = 46
#: ``MEMOP_CMD_MASK``: the low bits of a memory_op command select the op.
MEMOP_CMD_MASK = 0x3F
#: the emulator's own limit on vCPUs per domain (one ioreq page holds 128 slots).
MAX_VCPUS = 16
DOM0 = 0


class EmulatedXen:
    """A strict model of the Xen hypervisor behind the two device nodes."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.domains: dict[int, HvmDomain] = {}
        self.dom0_evtchn = EventChannelTable(DOM0)
        self.heap = XenHeap(HEAP_PAGES)
        self.machine = MachineMemory()
        self.usermem = UserMemory()
        self.dm_op = DmOps(self)
        self._rover = 0
        #: called with (domain, reason) after a domain shut down; the toolstack's
        #: policy (xl's on_poweroff/on_crash=destroy) is the default.
        self.on_shutdown: Callable[[HvmDomain, int], None] = lambda d, _r: self.destroy_domain(d.domid)
        self.closed = False

    def close(self) -> None:
        with self.lock:
            for domid in list(self.domains):
                self.destroy_domain(domid)
            self.closed = True
        self.usermem.close()
        self.heap.release_fd()

    # --- domains ------------------------------------------------------------------------------
    def create_domain(self, mem_size: int, vcpus: int = 1, name: str = "",
                      domid: int | None = None, paused: bool = False,
                      holes: tuple[tuple[int, int], ...] = ()) -> HvmDomain:
        """``XEN_DOMCTL_createdomain`` and the toolstack's build of an HVM guest.

        ``holes`` are (first gfn, count) ranges left unpopulated inside RAM, as
        hvmloader leaves the legacy VGA window 0xA0000-0xBFFFF.
        """
        if mem_size <= 0 or mem_size % abi.PAGE_SIZE:
            raise ValueError(f"guest memory must be a positive multiple of 4096 bytes, got {mem_size}")
        if not 1 <= vcpus <= MAX_VCPUS:
            raise ValueError(f"an emulated domain has 1..{MAX_VCPUS} vCPUs, asked for {vcpus}")
        with self.lock:
            if domid is None:
                domid = self._next_domid()
            elif not 0 < domid < abi.DOMID_FIRST_RESERVED or domid in self.domains:
                raise ValueError(f"domain id {domid} is taken or reserved")
            d = HvmDomain(self, domid, name, mem_size, vcpus, paused)
            for first, count in holes:
                d.p2m[first : first + count] = abi.HVMMEM_mmio_dm
            self.domains[domid] = d
            return d

    def _next_domid(self) -> int:
        dom = self._rover
        while True:
            dom = dom + 1 if dom + 1 < abi.DOMID_FIRST_RESERVED else 1
            if dom not in self.domains:
                self._rover = dom
                return dom
            if dom == self._rover:
                raise OSError(errno.ENOMEM, "no free domain id")

    def lookup(self, domid: int) -> HvmDomain | None:
        return self.domains.get(domid)

    def shutdown(self, d: HvmDomain, reason: int) -> None:
        """``domain_shutdown``: the vCPUs stop; the toolstack is told."""
        with self.lock:
            if d.shutdown_reason is not None or d.dying:
                return
            d.shutdown_reason = reason
            d.wake_all()
        self.on_shutdown(d, reason)

    def destroy_domain(self, domid: int) -> None:
        """``XEN_DOMCTL_destroydomain``: servers, channels and mappings go away."""
        with self.lock:
            d = self.domains.pop(domid, None)
            if d is None:
                return
            d.dying = True
            for server in d.servers:
                if server is not None:
                    self.destroy_ioreq_server(d, server)
            d.evtchn.close_all()
            d.wake_all()
            d.ram.release_fd()
            d.ended.set()

    # --- p2m ------------------------------------------------------------------------------------
    def change_type(self, d: HvmDomain, gfn: int, new: int) -> int:
        """``p2m_change_type_one`` under ``allow_p2m_type_change``."""
        kind, old = d.route(gfn)
        if kind != "ram":
            # a hole may only become mmio_dm (it is already); mappings never change type
            return 0 if kind == "hole" and new == abi.HVMMEM_mmio_dm else -errno.EINVAL
        if new == abi.HVMMEM_ioreq_server and old != abi.HVMMEM_ram_rw:
            return -errno.EINVAL
        if old == abi.HVMMEM_ioreq_server and new != abi.HVMMEM_ram_rw:
            return -errno.EINVAL
        if old == abi.HVMMEM_mmio_dm:
            return -errno.EINVAL  # a hole now: only mmio_dm, handled above for real holes
        if old == abi.HVMMEM_ioreq_server and new != old:
            d.ioreq_entries -= 1
        if new == abi.HVMMEM_ioreq_server and new != old:
            d.ioreq_entries += 1
        d.p2m[gfn] = new
        return 0

    def finish_ioreq_type_change(self, d: HvmDomain, first_gfn: int) -> None:
        """``p2m_finish_type_change``: pages left ioreq_server become ram_rw again."""
        typed = (d.p2m == abi.HVMMEM_ioreq_server)
        typed[: min(first_gfn, d.pages)] = False
        d.ioreq_entries -= int(typed.sum())
        d.p2m[typed] = abi.HVMMEM_ram_rw

    # --- ioreq servers ------------------------------------------------------------------------------
    def destroy_ioreq_server(self, d: HvmDomain, server: IoreqServerModel) -> None:
        if d.ioreq_owner is server:  # arch_ioreq_server_destroy: the type is released
            d.ioreq_owner, d.ioreq_flags = None, 0
        server.enabled = False
        server.close_ports(d.evtchn)
        for gfn in (server.ioreq_gfn, server.bufioreq_gfn):
            if gfn is not None:
                d.special.pop(gfn, None)
                d.legacy_gfns_free.append(gfn)
        d.servers[server.id] = None
        d.wake_all()

    def map_legacy_ioreq_gfns(self, d: HvmDomain, server: IoreqServerModel) -> int:
        """``arch_ioreq_server_map_pages``: the pages become guest frames (EPERM once
        they were acquired as a resource, ENOMEM when the reserved gfns ran out)."""
        if server.ioreq_gfn is not None:
            return 0
        if server.ioreq_page is not None:
            return -errno.EPERM
        need = 2 if server.handles_bufioreq else 1
        if len(d.legacy_gfns_free) < need:
            return -errno.ENOMEM
        try:
            server.ioreq_page = self.heap.alloc()
            if server.handles_bufioreq:
                server.bufioreq_page = self.heap.alloc()
        except OSError:
            return -errno.ENOMEM
        server.ioreq_gfn = d.legacy_gfns_free.pop(0)
        d.special[server.ioreq_gfn] = server.ioreq_page
        if server.handles_bufioreq:
            assert server.bufioreq_page is not None
            server.bufioreq_gfn = d.legacy_gfns_free.pop(0)
            d.special[server.bufioreq_gfn] = server.bufioreq_page
        if server.enabled:
            server.write_ports(self.heap)
        return 0

    def acquire_resource(self, domid: int, type_: int, id_: int, frame: int,
                         count: int) -> list[int] | int:
        """``XENMEM_acquire_resource``: heap pages of a resource, or a negative errno.
        ``count == 0`` asks for the resource's size (returned as a one-item list)."""
        d = self.lookup(domid)
        if d is None:
            return -errno.ESRCH
        if type_ != abi.XENMEM_resource_ioreq_server:
            return -errno.EOPNOTSUPP
        if count == 0:
            return [RESOURCE_FRAMES]
        server = d.server(id_)
        if server is None:
            return -errno.ENOENT
        if server.emulator != DOM0:
            return -errno.EPERM
        rc = server.alloc_pages(self.heap)
        if rc:
            return rc
        return resource_frames(d, server, frame, count)

    # --- event channels (dom0's side) -------------------------------------------------------------
    def bind_interdomain(self, remote_domid: int, remote_port: int,
                         consumer: Callable[[int], None]) -> int:
        remote = self.lookup(remote_domid)
        return bind_interdomain(self.dom0_evtchn, None if remote is None else remote.evtchn,
                                remote_port, consumer)

    def evtchn_close(self, port: int) -> int:
        return self.dom0_evtchn.close(port)

    def evtchn_send(self, port: int) -> int:
        return self.dom0_evtchn.send(port)

    # --- hypercalls --------------------------------------------------------------------------------
    def hypercall(self, op: int, args: tuple[int, ...]) -> int:
        """One hypercall from dom0: its return value, or a negative errno."""
        with self.lock:
            if op == abi.HYPERVISOR_memory_op:
                return self._memory_op(args[0] & MEMOP_CMD_MASK, args[1])
            if op == abi.HYPERVISOR_domctl:
                return self._domctl(args[0])
            return -errno.ENOSYS

    def _memory_op(self, cmd: int, arg: int) -> int:
        if cmd != abi.XENMEM_maximum_gpfn:
            return -errno.ENOSYS
        try:
            (domid,) = L.DOMID.unpack(self.usermem.read(arg, L.DOMID.size))
        except UserFault:
            return -errno.EFAULT
        d = self.lookup(domid)
        if d is None:
            return -errno.ESRCH
        return d.max_gpfn

    def _domctl(self, ptr: int) -> int:
        try:
            raw = self.usermem.read(ptr, L.DOMCTL_SIZE)
        except UserFault:
            return -errno.EFAULT
        head = L.DOMCTL_HEADER.unpack(raw)
        if head.interface_version != abi.XEN_DOMCTL_INTERFACE_VERSION:
            return -errno.EACCES
        body = raw[L.DOMCTL_HEADER.size :]
        handlers = {
            abi.XEN_DOMCTL_pausedomain: self._pause,
            abi.XEN_DOMCTL_unpausedomain: self._unpause,
            abi.XEN_DOMCTL_iomem_permission: self._iomem_permission,
            abi.XEN_DOMCTL_memory_mapping: self._memory_mapping,
        }
        handler = handlers.get(head.cmd)
        if handler is None:
            return -errno.ENOSYS
        if head.domain == DOM0:
            # dom0 itself is not a domain this model runs
            return -errno.EINVAL if head.cmd == abi.XEN_DOMCTL_pausedomain else -errno.ESRCH
        d = self.lookup(head.domain)
        if d is None:
            return -errno.ESRCH
        return handler(d, body)

    def _pause(self, d: HvmDomain, body: bytes) -> int:
        d.pause_count += 1
        return 0

    def _unpause(self, d: HvmDomain, body: bytes) -> int:
        if d.pause_count == 0:
            return -errno.EINVAL
        d.pause_count -= 1
        return 0

    def _iomem_permission(self, d: HvmDomain, body: bytes) -> int:
        p = L.DOMCTL_IOMEM_PERMISSION.unpack(body)
        last = p.first_mfn + p.nr_mfns - 1
        if last < p.first_mfn:
            return -errno.EINVAL
        if p.allow_access:
            return d.iomem.add(p.first_mfn, last)
        return d.iomem.remove(p.first_mfn, last)

    def _memory_mapping(self, d: HvmDomain, body: bytes) -> int:
        m = L.DOMCTL_MEMORY_MAPPING.unpack(body)
        gfn, mfn, nr = m.first_gfn, m.first_mfn, m.nr_mfns
        mfn_end = mfn + nr - 1
        if mfn_end < mfn or (mfn | mfn_end) >> (PADDR_BITS - abi.PAGE_SHIFT) or gfn + nr - 1 < gfn:
            return -errno.EINVAL
        if nr > MEMORY_MAPPING_MAX:
            return -errno.E2BIG
        if not d.iomem.contains(mfn, mfn_end):
            return -errno.EPERM
        if m.add_mapping:
            for i in range(nr):
                kind, have = d.route(gfn + i)
                if kind == "mmio" and have == mfn + i:
                    continue
                if kind != "hole":
                    return -errno.EBUSY
            for i in range(nr):
                d.mmio[gfn + i] = mfn + i
            return 0
        for i in range(nr):
            if d.mmio.get(gfn + i) != mfn + i:
                return -errno.EBUSY
        for i in range(nr):
            del d.mmio[gfn + i]
        return 0
