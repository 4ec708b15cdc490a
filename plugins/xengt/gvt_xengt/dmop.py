"""The device-model operations (``HYPERVISOR_dm_op``) the backend issues for one domain.

Each method builds one ``struct xen_dm_op`` and sends it through the
domain's (restricted) privcmd file; Xen's answer comes back in the same
structure or as the errno of a :class:`~gvt_core.errors.HypervisorCallError`.
"""

from __future__ import annotations

from gvt_xengt import abi
from gvt_xengt.privcmd import Privcmd


class DeviceModelOps:
    """dm_ops on domain ``domid``."""

    def __init__(self, privcmd: Privcmd, domid: int) -> None:
        self.privcmd = privcmd
        self.domid = domid

    def _op(self, number: int) -> abi.xen_dm_op:
        return abi.xen_dm_op(op=number)

    # --- ioreq servers ----------------------------------------------------------------
    def create_ioreq_server(self, handle_bufioreq: int = abi.HVM_IOREQSRV_BUFIOREQ_OFF) -> int:
        op = self._op(abi.XEN_DMOP_create_ioreq_server)
        op.u.create_ioreq_server.handle_bufioreq = handle_bufioreq
        self.privcmd.dm_op(self.domid, op)
        return int(op.u.create_ioreq_server.id)

    def get_ioreq_server_info(self, server: int, no_gfns: bool = True) -> abi.xen_dm_op_get_ioreq_server_info:
        op = self._op(abi.XEN_DMOP_get_ioreq_server_info)
        info = op.u.get_ioreq_server_info
        info.id = server
        info.flags = abi.XEN_DMOP_no_gfns if no_gfns else 0
        self.privcmd.dm_op(self.domid, op)
        return abi.xen_dm_op_get_ioreq_server_info.from_buffer_copy(info)

    def map_io_range(self, server: int, type_: int, first: int, last: int) -> None:
        """Claim ``[first, last]`` (inclusive, as Xen takes it) for ``server``."""
        self._range(abi.XEN_DMOP_map_io_range_to_ioreq_server, server, type_, first, last)

    def unmap_io_range(self, server: int, type_: int, first: int, last: int) -> None:
        self._range(abi.XEN_DMOP_unmap_io_range_from_ioreq_server, server, type_, first, last)

    def _range(self, number: int, server: int, type_: int, first: int, last: int) -> None:
        op = self._op(number)
        r = op.u.map_io_range_to_ioreq_server
        r.id, r.type, r.start, r.end = server, type_, first, last
        self.privcmd.dm_op(self.domid, op)

    def set_ioreq_server_state(self, server: int, enabled: bool) -> None:
        op = self._op(abi.XEN_DMOP_set_ioreq_server_state)
        op.u.set_ioreq_server_state.id = server
        op.u.set_ioreq_server_state.enabled = 1 if enabled else 0
        self.privcmd.dm_op(self.domid, op)

    def destroy_ioreq_server(self, server: int) -> None:
        op = self._op(abi.XEN_DMOP_destroy_ioreq_server)
        op.u.destroy_ioreq_server.id = server
        self.privcmd.dm_op(self.domid, op)

    def map_mem_type_to_ioreq_server(self, server: int, flags: int) -> None:
        """Forward the accesses in ``flags`` to ``HVMMEM_ioreq_server`` pages to
        ``server`` (flags 0 releases the type)."""
        op = self._op(abi.XEN_DMOP_map_mem_type_to_ioreq_server)
        m = op.u.map_mem_type_to_ioreq_server
        m.id, m.type, m.flags, m.opaque = server, abi.HVMMEM_ioreq_server, flags, 0
        self.privcmd.dm_op(self.domid, op)

    # --- memory, interrupts, vCPUs -------------------------------------------------------
    def set_mem_type(self, first_pfn: int, nr: int, mem_type: int) -> None:
        op = self._op(abi.XEN_DMOP_set_mem_type)
        m = op.u.set_mem_type
        m.first_pfn, m.nr, m.mem_type = first_pfn, nr, mem_type
        self.privcmd.dm_op(self.domid, op)

    def inject_msi(self, address: int, data: int) -> None:
        op = self._op(abi.XEN_DMOP_inject_msi)
        op.u.inject_msi.addr = address
        op.u.inject_msi.data = data
        self.privcmd.dm_op(self.domid, op)

    def nr_vcpus(self) -> int:
        op = self._op(abi.XEN_DMOP_nr_vcpus)
        self.privcmd.dm_op(self.domid, op)
        return int(op.u.nr_vcpus.vcpus)

    def remote_shutdown(self, reason: int) -> None:
        op = self._op(abi.XEN_DMOP_remote_shutdown)
        op.u.remote_shutdown.reason = reason
        self.privcmd.dm_op(self.domid, op)
