"""One open file of a Xen device node, as :class:`~gvt_xengt.privcmd.Privcmd`
and :class:`~gvt_xengt.evtchn.EventChannels` both hold it: opened through the
:class:`~gvt_xengt.transport.Transport`, closed once, and every ioctl failure
raised as a :class:`~gvt_core.errors.HypervisorCallError` naming the call."""

from __future__ import annotations

from typing import ClassVar

from gvt_core.errors import HypervisorCallError
from gvt_xengt.transport import IoctlArg, Transport

NAME = "xengt"


class DeviceFile:
    """An open device node; subclasses add the node's typed calls."""

    #: the node's usual path (``device`` overrides it, e.g. in tests).
    DEVICE: ClassVar[str]

    def __init__(self, transport: Transport, device: str | None = None) -> None:
        self.transport = transport
        self.device = device or self.DEVICE
        self.fd = transport.open(self.device)

    def close(self) -> None:
        """Close the file; closing again does nothing."""
        if self.fd >= 0:
            self.transport.close(self.fd)
            self.fd = -1

    def _ioctl(self, call: str, request: int, arg: IoctlArg) -> int:
        try:
            return self.transport.ioctl(self.fd, request, arg)
        except OSError as exc:
            raise HypervisorCallError(NAME, call, exc.errno or 0) from exc
