"""Ioreq servers as Xen keeps them: ranges, the shared page, one channel per vCPU.

Mirrors ``xen/common/ioreq.c``: at most :data:`MAX_NR_IOREQ_SERVERS` per
domain, each with three rangesets (port, memory, PCI SBDF) limited to
:data:`MAX_NR_IO_RANGES` ranges; overlapping ranges are refused *within* a
server (EEXIST) while two servers may claim the same range, the most
recently created enabled one winning, as in Xen. The synchronous ioreq page
is allocated on first use (resource mapping or ``get_ioreq_server_info``);
``vp_eport`` of each vCPU's slot is written when the server is enabled.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable

import attrs

from gvt_xengt import abi
from gvt_xengt.emulated.evtchn import EventChannelTable
from gvt_xengt.emulated.memory import XenHeap

#: ``MAX_NR_IOREQ_SERVERS`` (xen/include/xen/ioreq.h).
MAX_NR_IOREQ_SERVERS = 8
#: ``MAX_NR_IO_RANGES``: the limit put on each of a server's rangesets.
MAX_NR_IO_RANGES = 256
NR_IO_RANGE_TYPES = 3
#: frames of the ioreq-server resource: the buffered page (0) and one synchronous page.
RESOURCE_FRAMES = 2

_VP_EPORT = struct.Struct("<I")
_VP_EPORT_OFFSET = 24


class Rangeset:
    """Inclusive ranges, kept sorted and disjoint (Xen's ``rangeset``)."""

    def __init__(self, limit: int = MAX_NR_IO_RANGES) -> None:
        self.limit = limit
        self.ranges: list[tuple[int, int]] = []

    def overlaps(self, start: int, end: int) -> bool:
        return any(s <= end and start <= e for s, e in self.ranges)

    def contains(self, start: int, end: int) -> bool:
        return any(s <= start and end <= e for s, e in self.ranges)

    def add(self, start: int, end: int) -> int:
        """Add a range (merging with adjacent ones); -ENOSPC past the limit."""
        merged = [(s, e) for s, e in self.ranges if e + 1 < start or end + 1 < s]
        lo = min([start] + [s for s, e in self.ranges if not (e + 1 < start or end + 1 < s)])
        hi = max([end] + [e for s, e in self.ranges if not (e + 1 < start or end + 1 < s)])
        merged.append((lo, hi))
        if len(merged) > self.limit:
            return -errno.ENOSPC
        self.ranges = sorted(merged)
        return 0

    def remove(self, start: int, end: int) -> int:
        out: list[tuple[int, int]] = []
        for s, e in self.ranges:
            if e < start or end < s:
                out.append((s, e))
                continue
            if s < start:
                out.append((s, start - 1))
            if end < e:
                out.append((end + 1, e))
        if len(out) > self.limit:
            return -errno.ENOSPC
        self.ranges = out
        return 0


@attrs.define(eq=False)
class IoreqServerModel:
    """One ioreq server of one domain."""

    id: int
    #: the domain emulating (always dom0 here) and the target's event channels.
    emulator: int
    bufioreq_handling: int
    ports: list[int]
    ranges: list[Rangeset] = attrs.field(factory=lambda: [Rangeset() for _ in range(NR_IO_RANGE_TYPES)])
    enabled: bool = False
    #: heap page index of the synchronous ioreq page (None until first needed).
    ioreq_page: int | None = None
    bufioreq_page: int | None = None
    #: the legacy gfns the pages were mapped at by get_ioreq_server_info, if any.
    ioreq_gfn: int | None = None
    bufioreq_gfn: int | None = None
    bufioreq_port: int = 0

    @property
    def handles_bufioreq(self) -> bool:
        return self.bufioreq_handling != abi.HVM_IOREQSRV_BUFIOREQ_OFF

    def alloc_pages(self, heap: XenHeap) -> int:
        """``hvm_ioreq_server_alloc_pages``: -EPERM once the pages went to legacy gfns."""
        if self.ioreq_gfn is not None:
            return -errno.EPERM
        try:
            if self.ioreq_page is None:
                self.ioreq_page = heap.alloc()
                heap.page(self.ioreq_page)[:] = bytes(abi.PAGE_SIZE)
                if self.enabled:
                    self.write_ports(heap)
            if self.handles_bufioreq and self.bufioreq_page is None:
                self.bufioreq_page = heap.alloc()
                heap.page(self.bufioreq_page)[:] = bytes(abi.PAGE_SIZE)
        except OSError as exc:
            return -(exc.errno or errno.ENOMEM)
        return 0

    def write_ports(self, heap: XenHeap) -> None:
        """``hvm_update_ioreq_evtchn`` for every vCPU: the slot learns its port."""
        if self.ioreq_page is None:
            return
        page = heap.page(self.ioreq_page)
        for vcpu, port in enumerate(self.ports):
            _VP_EPORT.pack_into(page, vcpu * abi.IOREQ_SIZE + _VP_EPORT_OFFSET, port)

    def slot(self, heap: XenHeap, vcpu: int) -> memoryview:
        assert self.ioreq_page is not None
        page = heap.page(self.ioreq_page)
        return page[vcpu * abi.IOREQ_SIZE : (vcpu + 1) * abi.IOREQ_SIZE]

    def close_ports(self, table: EventChannelTable) -> None:
        for port in self.ports:
            table.close(port)
        if self.handles_bufioreq and self.bufioreq_port:
            table.close(self.bufioreq_port)
        self.ports = []


def new_server(
    server_id: int,
    bufioreq_handling: int,
    vcpus: int,
    table: EventChannelTable,
    on_event: Callable[[int, int], None],
) -> IoreqServerModel | int:
    """``hvm_ioreq_server_init``: one Xen-consumed channel per vCPU, reserved for dom0.

    :returns: the server, or a negative errno (ENOSPC: no ports left).
    """
    ports: list[int] = []
    for vcpu in range(vcpus):
        port = table.alloc_unbound(0, lambda _p, v=vcpu: on_event(server_id, v))
        if port < 0:
            for p in ports:
                table.close(p)
            return port
        ports.append(port)
    server = IoreqServerModel(server_id, 0, bufioreq_handling, ports)
    if server.handles_bufioreq:
        port = table.alloc_unbound(0, lambda _p: None)
        if port < 0:
            server.close_ports(table)
            return port
        server.bufioreq_port = port
    return server
