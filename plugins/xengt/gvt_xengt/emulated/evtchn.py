"""Xen's event channels, as the hypervisor keeps them per domain.

A port is free, unbound (allocated for a named remote domain to bind),
or interdomain (linked to a port of another domain). Xen's own channels
(the ioreq channels of an ioreq server, ``alloc_unbound_xen_event_channel``)
have Xen as their consumer in the guest: an event on them wakes the vCPU
waiting for its ioreq. Closing one end of an interdomain channel leaves the
other end unbound again, as ``evtchn_close`` does; a send on an unbound
port is silently dropped, a send on a free port is EINVAL.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import Callable

import attrs

#: ports of the 2-level event-channel ABI on a 64-bit guest (``EVTCHN_2L_NR_CHANNELS``).
NR_CHANNELS = 64 * 64


class ChannelState(enum.Enum):
    FREE = "free"
    UNBOUND = "unbound"
    INTERDOMAIN = "interdomain"


@attrs.define(eq=False)
class Channel:
    port: int
    state: ChannelState = ChannelState.FREE
    #: for an unbound port: the domain allowed to bind to it.
    remote_domid: int = 0
    #: for an interdomain port: the other end.
    peer: tuple[EventChannelTable, int] | None = None
    #: who learns of an event set pending on this port (the port number is passed).
    consumer: Callable[[int], None] | None = None


class EventChannelTable:
    """The event channels of one domain."""

    def __init__(self, domid: int) -> None:
        self.domid = domid
        self.channels: dict[int, Channel] = {}

    @staticmethod
    def valid(port: int) -> bool:
        return 0 <= port < NR_CHANNELS

    def _alloc(self) -> int:
        """Lowest free port; port 0 is reserved (``ECS_RESERVED``)."""
        for port in range(1, NR_CHANNELS):
            if port not in self.channels:
                return port
        return -errno.ENOSPC

    def alloc_unbound(self, remote_domid: int, consumer: Callable[[int], None]) -> int:
        """A port that ``remote_domid`` may bind to (Xen's own channels)."""
        port = self._alloc()
        if port < 0:
            return port
        self.channels[port] = Channel(
            port, ChannelState.UNBOUND, remote_domid=remote_domid, consumer=consumer
        )
        return port

    def close(self, port: int) -> int:
        """``EVTCHNOP_close``: the peer, if any, becomes unbound for this domain."""
        ch = self.channels.get(port)
        if ch is None:
            return -errno.EINVAL
        if ch.state is ChannelState.INTERDOMAIN and ch.peer is not None:
            table, rport = ch.peer
            rch = table.channels.get(rport)
            if rch is not None:
                rch.state = ChannelState.UNBOUND
                rch.remote_domid = self.domid
                rch.peer = None
        del self.channels[port]
        return 0

    def close_all(self) -> None:
        for port in list(self.channels):
            self.close(port)

    def send(self, port: int) -> int:
        """``EVTCHNOP_send`` from this domain's ``port``."""
        if not self.valid(port):
            return -errno.EINVAL
        ch = self.channels.get(port)
        if ch is None:
            return -errno.EINVAL
        if ch.state is ChannelState.UNBOUND:
            return 0  # nobody at the other end: dropped
        if ch.peer is not None:
            table, rport = ch.peer
            table.raise_event(rport)
        return 0

    def raise_event(self, port: int) -> None:
        """Set ``port`` pending: its consumer learns of it."""
        ch = self.channels.get(port)
        if ch is not None and ch.consumer is not None:
            ch.consumer(port)


def bind_interdomain(
    local: EventChannelTable,
    remote: EventChannelTable | None,
    remote_port: int,
    consumer: Callable[[int], None],
) -> int:
    """``EVTCHNOP_bind_interdomain``: a new local port linked to ``remote_port``.

    :returns: the local port, or a negative errno: ESRCH (no such domain),
        ENOSPC (local ports used up), EINVAL (remote port invalid, not
        unbound, or reserved for another domain).
    """
    if remote is None:
        return -errno.ESRCH
    lport = local._alloc()
    if lport < 0:
        return lport
    if not remote.valid(remote_port):
        return -errno.EINVAL
    rch = remote.channels.get(remote_port)
    if rch is None or rch.state is not ChannelState.UNBOUND or rch.remote_domid != local.domid:
        return -errno.EINVAL
    local.channels[lport] = Channel(
        lport, ChannelState.INTERDOMAIN, remote_domid=remote.domid, peer=(remote, remote_port),
        consumer=consumer,
    )
    rch.state = ChannelState.INTERDOMAIN
    rch.peer = (local, lport)
    return lport
