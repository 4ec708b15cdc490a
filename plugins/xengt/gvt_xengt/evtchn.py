"""``/dev/xen/evtchn``: event channels bound to a domain's ioreq ports.

The protocol of the Linux device: an event on a bound port masks it and
queues its number; ``read`` returns queued ports (4 bytes each), and
writing a port number back unmasks it (an event that arrived meanwhile is
queued again then). ``IOCTL_EVTCHN_NOTIFY`` signals the remote end.
"""

from __future__ import annotations

import struct

from gvt_core.errors import HypervisorCallError
from gvt_xengt import abi
from gvt_xengt.devicefile import NAME, DeviceFile
from gvt_xengt.transport import EVTCHN_DEVICE

#: ports read per ``read`` call (the device's ring holds a page of them).
READ_BATCH = 64


class EventChannels(DeviceFile):
    """One open file of ``/dev/xen/evtchn``."""

    DEVICE = EVTCHN_DEVICE

    def restrict(self, domid: int) -> None:
        """Bind interdomain channels to ``domid`` only, from now on."""
        self._ioctl(f"IOCTL_EVTCHN_RESTRICT_DOMID to domain {domid}",
                    abi.IOCTL_EVTCHN_RESTRICT_DOMID, abi.ioctl_evtchn_restrict_domid(domid))

    def bind_interdomain(self, domid: int, remote_port: int) -> int:
        """Bind a local port to ``remote_port`` of ``domid``; returns the local port."""
        return self._ioctl(
            f"IOCTL_EVTCHN_BIND_INTERDOMAIN to port {remote_port} of domain {domid}",
            abi.IOCTL_EVTCHN_BIND_INTERDOMAIN,
            abi.ioctl_evtchn_bind_interdomain(remote_domain=domid, remote_port=remote_port),
        )

    def unbind(self, port: int) -> None:
        self._ioctl(f"IOCTL_EVTCHN_UNBIND of port {port}", abi.IOCTL_EVTCHN_UNBIND,
                    abi.ioctl_evtchn_unbind(port=port))

    def notify(self, port: int) -> None:
        self._ioctl(f"IOCTL_EVTCHN_NOTIFY of port {port}", abi.IOCTL_EVTCHN_NOTIFY,
                    abi.ioctl_evtchn_notify(port=port))

    def pending(self) -> list[int]:
        """Ports with an event (each now masked); empty when none is queued."""
        try:
            raw = self.transport.read(self.fd, READ_BATCH * abi.EVTCHN_PORT_BYTES)
        except BlockingIOError:
            return []
        except OSError as exc:
            raise HypervisorCallError(NAME, f"read of {self.device}", exc.errno or 0) from exc
        n = len(raw) // abi.EVTCHN_PORT_BYTES
        return list(struct.unpack(f"<{n}I", raw[: n * abi.EVTCHN_PORT_BYTES]))

    def unmask(self, ports: list[int]) -> None:
        if not ports:
            return
        try:
            self.transport.write(self.fd, struct.pack(f"<{len(ports)}I", *ports))
        except OSError as exc:
            raise HypervisorCallError(NAME, f"write of {self.device}", exc.errno or 0) from exc

    def pollable(self) -> int:
        return self.transport.pollable(self.fd)
