"""``HYPERVISOR_dm_op`` as the emulated Xen executes it, checks and errnos included.

Follows ``do_dm_op``/``dm_op`` (xen/arch/x86/hvm/dm.c) and
``ioreq_server_dm_op`` (xen/common/ioreq.c) in the order Xen checks things:
more than two buffers E2BIG; no such domain ESRCH, the caller itself
EPERM; buffer 0 shorter than the header EFAULT; an op number past the table
EOPNOTSUPP; buffer 0 shorter than the op EFAULT; non-zero header padding
EINVAL; then the op's own checks. OUT fields are copied back to the caller
only when the op succeeded and is not read-only (``const_op``).

Ops the backend never issues and whose effect this model has nothing to
act on are validated as Xen does and then answer EOPNOTSUPP with the
reason "not modelled" (``track_dirty_vram``, ``inject_event``,
``relocate_memory``, ``pin_memory_cacheattr``, ``set_irq_level``).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gvt_core.mpt.ops import Msi
from gvt_xengt import abi
from gvt_xengt.emulated import layouts as L
from gvt_xengt.emulated.ioreq import MAX_NR_IOREQ_SERVERS, new_server
from gvt_xengt.emulated.usermem import UserFault

if TYPE_CHECKING:
    from gvt_xengt.emulated.domain import HvmDomain
    from gvt_xengt.emulated.ioreq import IoreqServerModel
    from gvt_xengt.emulated.xen import EmulatedXen

#: ``struct dmop_args.buf``: Xen takes at most two buffers.
MAX_DM_OP_BUFS = 2

#: ``op_size[]``: the body Xen copies in for each op.
OP_LAYOUTS: dict[int, L.Layout] = {
    abi.XEN_DMOP_create_ioreq_server: L.DM_OP_CREATE_IOREQ_SERVER,
    abi.XEN_DMOP_get_ioreq_server_info: L.DM_OP_GET_IOREQ_SERVER_INFO,
    abi.XEN_DMOP_map_io_range_to_ioreq_server: L.DM_OP_IOREQ_SERVER_RANGE,
    abi.XEN_DMOP_unmap_io_range_from_ioreq_server: L.DM_OP_IOREQ_SERVER_RANGE,
    abi.XEN_DMOP_set_ioreq_server_state: L.DM_OP_SET_IOREQ_SERVER_STATE,
    abi.XEN_DMOP_destroy_ioreq_server: L.DM_OP_DESTROY_IOREQ_SERVER,
    abi.XEN_DMOP_track_dirty_vram: L.DM_OP_TRACK_DIRTY_VRAM,
    abi.XEN_DMOP_set_pci_intx_level: L.DM_OP_SET_PCI_INTX_LEVEL,
    abi.XEN_DMOP_set_isa_irq_level: L.DM_OP_SET_ISA_IRQ_LEVEL,
    abi.XEN_DMOP_set_pci_link_route: L.DM_OP_SET_PCI_LINK_ROUTE,
    abi.XEN_DMOP_modified_memory: L.DM_OP_MODIFIED_MEMORY,
    abi.XEN_DMOP_set_mem_type: L.DM_OP_SET_MEM_TYPE,
    abi.XEN_DMOP_inject_event: L.DM_OP_INJECT_EVENT,
    abi.XEN_DMOP_inject_msi: L.DM_OP_INJECT_MSI,
    abi.XEN_DMOP_map_mem_type_to_ioreq_server: L.DM_OP_MAP_MEM_TYPE_TO_IOREQ_SERVER,
    abi.XEN_DMOP_remote_shutdown: L.DM_OP_REMOTE_SHUTDOWN,
    abi.XEN_DMOP_relocate_memory: L.DM_OP_RELOCATE_MEMORY,
    abi.XEN_DMOP_pin_memory_cacheattr: L.DM_OP_PIN_MEMORY_CACHEATTR,
    abi.XEN_DMOP_set_irq_level: L.DM_OP_SET_IRQ_LEVEL,
    abi.XEN_DMOP_nr_vcpus: L.DM_OP_NR_VCPUS,
}
NR_DM_OPS = max(OP_LAYOUTS) + 1

# MSI address/data fields (asm/msi.h)
MSI_ADDR_DEST_ID_SHIFT = 12
MSI_ADDR_DEST_ID_MASK = 0x000F_F000
MSI_ADDR_DESTMODE_LOGICAL = 1 << 2
MSI_DATA_VECTOR_MASK = 0xFF
MSI_DATA_DELIVERY_MODE_SHIFT = 8
MSI_DATA_DELIVERY_MODE_MASK = 0x700
DELIVERY_FIXED = 0
DELIVERY_LOWEST_PRIORITY = 1
APIC_BROADCAST_ID = 0xFF
#: an HVM domain's default pirq space (``nr_pirqs``), for vector-0 "pirq" MSIs.
HVM_NR_PIRQS = 256

#: (rc, body to copy back or None)
Result = tuple[int, bytes | None]


class DmOps:
    """The dm_op handlers of one emulated Xen (``caller`` is the emulating domain)."""

    def __init__(self, xen: EmulatedXen, caller: int = 0) -> None:
        self.xen = xen
        self.caller = caller
        self._handlers: dict[int, Callable[[HvmDomain, Any], Result]] = {
            abi.XEN_DMOP_create_ioreq_server: self._create,
            abi.XEN_DMOP_get_ioreq_server_info: self._get_info,
            abi.XEN_DMOP_map_io_range_to_ioreq_server: self._map_range,
            abi.XEN_DMOP_unmap_io_range_from_ioreq_server: self._unmap_range,
            abi.XEN_DMOP_set_ioreq_server_state: self._set_state,
            abi.XEN_DMOP_destroy_ioreq_server: self._destroy,
            abi.XEN_DMOP_set_pci_intx_level: self._pci_intx,
            abi.XEN_DMOP_set_isa_irq_level: self._isa_irq,
            abi.XEN_DMOP_set_pci_link_route: self._link_route,
            abi.XEN_DMOP_modified_memory: self._modified_memory,
            abi.XEN_DMOP_set_mem_type: self._set_mem_type,
            abi.XEN_DMOP_inject_msi: self._inject_msi,
            abi.XEN_DMOP_map_mem_type_to_ioreq_server: self._map_mem_type,
            abi.XEN_DMOP_remote_shutdown: self._remote_shutdown,
            abi.XEN_DMOP_nr_vcpus: self._nr_vcpus,
            abi.XEN_DMOP_track_dirty_vram: self._not_modelled_pad("pad"),
            abi.XEN_DMOP_inject_event: self._not_modelled_pad("pad0", "pad1"),
            abi.XEN_DMOP_relocate_memory: self._not_modelled_pad("pad"),
            abi.XEN_DMOP_pin_memory_cacheattr: self._not_modelled_pad("pad"),
            abi.XEN_DMOP_set_irq_level: self._not_modelled_pad(),
        }
        #: why the last EOPNOTSUPP was answered (for tests and messages).
        self.last_refusal = ""

    # --- entry --------------------------------------------------------------------------
    def __call__(self, domid: int, bufs: list[tuple[int, int]]) -> int:
        """Run one dm_op; returns 0 or a negative errno."""
        if len(bufs) > MAX_DM_OP_BUFS:
            return -errno.E2BIG
        if domid == self.caller:
            return -errno.EPERM
        d = self.xen.lookup(domid)
        if d is None:
            return -errno.ESRCH
        mem = self.xen.usermem
        uptr, size = bufs[0] if bufs else (0, 0)
        header = L.DM_OP_HEADER
        if size < header.size:
            return -errno.EFAULT
        try:
            op, pad = header.unpack(mem.read(uptr, header.size))
        except UserFault:
            return -errno.EFAULT
        if op >= NR_DM_OPS:
            return -errno.EOPNOTSUPP
        layout = OP_LAYOUTS[op]
        if size < header.size + layout.size:
            return -errno.EFAULT
        try:
            body = layout.unpack(mem.read(uptr + header.size, layout.size))
        except UserFault:
            return -errno.EFAULT
        if pad:
            return -errno.EINVAL
        rc, out = self._handlers[op](d, body)
        if rc == 0 and out is not None:
            try:
                mem.write(uptr + header.size, out)
            except UserFault:
                return -errno.EFAULT
        return rc

    # --- helpers --------------------------------------------------------------------------
    def _server(self, d: HvmDomain, server_id: int) -> IoreqServerModel | int:
        server = d.server(server_id)
        if server is None:
            return -errno.ENOENT
        if server.emulator != self.caller:
            return -errno.EPERM
        return server

    def _not_modelled_pad(self, *pads: str) -> Callable[[HvmDomain, Any], Result]:
        def handler(d: HvmDomain, body: Any) -> Result:
            if any(getattr(body, p) for p in pads):
                return -errno.EINVAL, None
            self.last_refusal = "not modelled by the emulated Xen"
            return -errno.EOPNOTSUPP, None

        return handler

    # --- ioreq servers ------------------------------------------------------------------------
    def _create(self, d: HvmDomain, body: Any) -> Result:
        if any(body.pad):
            return -errno.EINVAL, None
        if body.handle_bufioreq > abi.HVM_IOREQSRV_BUFIOREQ_ATOMIC:
            return -errno.EINVAL, None
        free = [i for i in range(MAX_NR_IOREQ_SERVERS) if d.servers[i] is None]
        if not free:
            return -errno.ENOSPC, None
        sid = free[0]
        server = new_server(sid, body.handle_bufioreq, d.max_vcpus, d.evtchn, d.on_ioreq_event)
        if isinstance(server, int):
            return server, None
        server.emulator = self.caller
        d.servers[sid] = server
        return 0, L.DM_OP_CREATE_IOREQ_SERVER.pack(body.handle_bufioreq, body.pad, sid)

    def _get_info(self, d: HvmDomain, body: Any) -> Result:
        if body.flags & ~abi.XEN_DMOP_no_gfns:
            return -errno.EINVAL, None
        server = self._server(d, body.id)
        if isinstance(server, int):
            return server, None
        ioreq_gfn, bufioreq_gfn, port = body.ioreq_gfn, body.bufioreq_gfn, body.bufioreq_port
        if not body.flags & abi.XEN_DMOP_no_gfns:
            rc = self.xen.map_legacy_ioreq_gfns(d, server)
            if rc:
                return rc, None
            ioreq_gfn = server.ioreq_gfn
            if server.handles_bufioreq:
                bufioreq_gfn = server.bufioreq_gfn
        if server.handles_bufioreq:
            port = server.bufioreq_port
        return 0, L.DM_OP_GET_IOREQ_SERVER_INFO.pack(body.id, body.flags, port, ioreq_gfn,
                                                     bufioreq_gfn)

    def _range_args(self, d: HvmDomain, body: Any) -> tuple[int, IoreqServerModel | None]:
        if body.pad:
            return -errno.EINVAL, None
        if body.start > body.end:
            return -errno.EINVAL, None
        server = self._server(d, body.id)
        if isinstance(server, int):
            return server, None
        if body.type > abi.XEN_DMOP_IO_RANGE_PCI:
            return -errno.EINVAL, None
        return 0, server

    def _map_range(self, d: HvmDomain, body: Any) -> Result:
        rc, server = self._range_args(d, body)
        if rc or server is None:
            return rc, None
        ranges = server.ranges[body.type]
        if ranges.overlaps(body.start, body.end):
            return -errno.EEXIST, None
        return ranges.add(body.start, body.end), None

    def _unmap_range(self, d: HvmDomain, body: Any) -> Result:
        rc, server = self._range_args(d, body)
        if rc or server is None:
            return rc, None
        ranges = server.ranges[body.type]
        if not ranges.contains(body.start, body.end):
            return -errno.ENOENT, None
        return ranges.remove(body.start, body.end), None

    def _set_state(self, d: HvmDomain, body: Any) -> Result:
        if body.pad:
            return -errno.EINVAL, None
        server = self._server(d, body.id)
        if isinstance(server, int):
            return server, None
        if body.enabled and not server.enabled:
            server.enabled = True
            server.write_ports(self.xen.heap)
        elif not body.enabled:
            server.enabled = False
        return 0, None

    def _destroy(self, d: HvmDomain, body: Any) -> Result:
        if body.pad:
            return -errno.EINVAL, None
        server = self._server(d, body.id)
        if isinstance(server, int):
            return server, None
        self.xen.destroy_ioreq_server(d, server)
        return 0, None

    def _map_mem_type(self, d: HvmDomain, body: Any) -> Result:
        rc = 0
        if body.opaque == 0:
            rc = self._p2m_set_ioreq_server(d, body)
        if rc == 0 and body.flags == 0:
            self.xen.finish_ioreq_type_change(d, body.opaque)
        return rc, (L.DM_OP_MAP_MEM_TYPE_TO_IOREQ_SERVER.pack(*body) if rc == 0 else None)

    def _p2m_set_ioreq_server(self, d: HvmDomain, body: Any) -> int:
        if body.type != abi.HVMMEM_ioreq_server:
            return -errno.EINVAL
        if body.flags & ~abi.XEN_DMOP_IOREQ_MEM_ACCESS_WRITE:
            return -errno.EINVAL
        server = self._server(d, body.id)
        if isinstance(server, int):
            return server
        if body.flags == 0:
            if d.ioreq_owner is not server:
                return -errno.EINVAL
            d.ioreq_owner, d.ioreq_flags = None, 0
            return 0
        if d.ioreq_owner is not None or d.ioreq_entries:
            return -errno.EBUSY
        d.ioreq_owner, d.ioreq_flags = server, body.flags
        return 0

    # --- memory --------------------------------------------------------------------------------
    def _set_mem_type(self, d: HvmDomain, body: Any) -> Result:
        if body.pad:
            return -errno.EINVAL, None
        first, nr = body.first_pfn, body.nr
        last = (first + nr - 1) & ((1 << 64) - 1)
        if first > last or last > d.max_gpfn:
            return -errno.EINVAL, None
        if body.mem_type > abi.HVMMEM_ioreq_server or body.mem_type == abi.HVMMEM_unused:
            return -errno.EINVAL, None
        new = body.mem_type
        if new == abi.HVMMEM_ioreq_server and d.ioreq_owner is None:
            return -errno.EINVAL, None
        for gfn in range(first, last + 1):
            rc = self.xen.change_type(d, gfn, new)
            if rc:
                return rc, None
        return 0, L.DM_OP_SET_MEM_TYPE.pack(*body)

    def _modified_memory(self, d: HvmDomain, body: Any) -> Result:
        # log-dirty mode is never enabled in this model: Xen returns at once
        return 0, None

    # --- interrupts -------------------------------------------------------------------------------
    def _inject_msi(self, d: HvmDomain, body: Any) -> Result:
        if body.pad:
            return -errno.EINVAL, None
        return self.inject_msi(d, body.addr, body.data), None

    def inject_msi(self, d: HvmDomain, addr: int, data: int) -> int:
        """``hvm_inject_msi`` + ``vmsi_deliver`` for physical and broadcast destinations."""
        lo = addr & 0xFFFF_FFFF
        dest = (lo & MSI_ADDR_DEST_ID_MASK) >> MSI_ADDR_DEST_ID_SHIFT
        logical = bool(lo & MSI_ADDR_DESTMODE_LOGICAL)
        mode = (data & MSI_DATA_DELIVERY_MODE_MASK) >> MSI_DATA_DELIVERY_MODE_SHIFT
        vector = data & MSI_DATA_VECTOR_MASK
        if vector == 0:
            pirq = ((addr >> 32) & 0xFFFF_FF00) | dest
            if pirq <= 0:
                return -errno.ERANGE
            # an emulated pirq for PV-on-HVM guests: this model's guests bind no
            # pirq event channel, so the event goes nowhere (as in Xen)
            return 0 if pirq < HVM_NR_PIRQS else -errno.EINVAL
        msi = Msi(addr, data)
        # the flat logical model: with LDRs left at 0 no vCPU matches a logical destination
        targets = [v for v in d.vcpus
                   if not logical and (dest == APIC_BROADCAST_ID or dest == v.lapic.apic_id)]
        if mode == DELIVERY_LOWEST_PRIORITY:
            if not targets:
                return -errno.ESRCH
            targets[0].lapic.accept(vector, msi)
            return 0
        if mode == DELIVERY_FIXED:
            for v in targets:
                v.lapic.accept(vector, msi)
            return 0
        return -errno.EINVAL  # "Unsupported MSI delivery mode"

    def _pci_intx(self, d: HvmDomain, body: Any) -> Result:
        if body.domain != 0 or body.bus != 0 or body.device > 0x1F or body.intx > 3:
            return -errno.EINVAL, None
        if body.level not in (0, 1):
            return -errno.EINVAL, None
        return 0, None  # this model wires no INTx lines to a guest interrupt controller

    def _isa_irq(self, d: HvmDomain, body: Any) -> Result:
        if body.isa_irq > 15 or body.level not in (0, 1):
            return -errno.EINVAL, None
        return 0, None

    def _link_route(self, d: HvmDomain, body: Any) -> Result:
        if body.link > 3 or body.isa_irq > 15:
            return -errno.EINVAL, None
        return 0, None

    # --- domain --------------------------------------------------------------------------------------
    def _remote_shutdown(self, d: HvmDomain, body: Any) -> Result:
        self.xen.shutdown(d, body.reason)
        return 0, None

    def _nr_vcpus(self, d: HvmDomain, body: Any) -> Result:
        return 0, L.DM_OP_NR_VCPUS.pack(d.max_vcpus)


def resource_frames(d: HvmDomain, server: IoreqServerModel, first: int, count: int) -> list[int] | int:
    """``hvm_get_ioreq_server_frame`` for ``count`` frames: heap pages or a negative errno."""
    pages: list[int] = []
    for idx in range(first, first + count):
        if idx == abi.XENMEM_resource_ioreq_server_frame_bufioreq:
            if not server.handles_bufioreq or server.bufioreq_page is None:
                return -errno.ENOENT
            pages.append(server.bufioreq_page)
        elif idx == abi.XENMEM_resource_ioreq_server_frame_ioreq(0):
            assert server.ioreq_page is not None
            pages.append(server.ioreq_page)
        else:
            return -errno.EINVAL
    return pages

