"""The emulated ``/dev/xen/evtchn``: the Linux driver's per-file state over Xen's channels.

An event on a port bound through this file masks the port and queues its
number (drivers/xen/evtchn.c ``evtchn_interrupt``); ``read`` hands out
queued ports and EAGAIN when there are none; ``write`` of a port unmasks
it, and an event that arrived while it was masked is queued again at once.
``IOCTL_EVTCHN_NOTIFY``/``UNBIND`` of a port this file did not bind are
ENOTCONN, of a port number past the ABI's range EINVAL; a file restricted
to one domain binds to no other (EACCES). The queue is signalled through a
real eventfd, so the caller can ``poll`` it like the real device.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections import deque
from typing import TYPE_CHECKING, Any

import attrs

from gvt_xengt import abi
from gvt_xengt.emulated import layouts as L
from gvt_xengt.emulated.evtchn import NR_CHANNELS

if TYPE_CHECKING:
    from gvt_xengt.emulated.xen import EmulatedXen

UNRESTRICTED_DOMID = abi.DOMID_FIRST_RESERVED


def _fail(code: int, what: str) -> OSError:
    return OSError(code, f"emulated evtchn: {what}")


@attrs.define(eq=False)
class Binding:
    port: int
    enabled: bool = True
    #: an event arrived while the port was masked.
    missed: bool = False


class EvtchnFile:
    """One open of the emulated event-channel device."""

    def __init__(self, xen: EmulatedXen, eventfd: int) -> None:
        self.xen = xen
        self.eventfd = eventfd
        self.restrict = UNRESTRICTED_DOMID
        self.bound: dict[int, Binding] = {}
        self.ring: deque[int] = deque()

    # --- events (called by the emulated Xen, under its lock) -------------------------------
    def fire(self, port: int) -> None:
        b = self.bound.get(port)
        if b is None:
            return
        if not b.enabled:
            b.missed = True
            return
        b.enabled = False
        self._queue(port)

    def _queue(self, port: int) -> None:
        self.ring.append(port)
        os.eventfd_write(self.eventfd, 1)

    # --- file operations ------------------------------------------------------------------------
    def read(self, size: int) -> bytes:
        want = size // abi.EVTCHN_PORT_BYTES
        if want == 0:
            return b""
        with self.xen.lock:
            if not self.ring:
                raise BlockingIOError(errno.EAGAIN, "no pending event channel")
            ports = [self.ring.popleft() for _ in range(min(want, len(self.ring)))]
            if not self.ring:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self.eventfd)
        return struct.pack(f"<{len(ports)}I", *ports)

    def write(self, data: bytes) -> int:
        n = len(data) // abi.EVTCHN_PORT_BYTES
        with self.xen.lock:
            for (port,) in struct.iter_unpack("<I", data[: n * abi.EVTCHN_PORT_BYTES]):
                b = self.bound.get(port)
                if b is None or b.enabled:
                    continue
                b.enabled = True
                if b.missed:
                    b.missed = False
                    b.enabled = False
                    self._queue(port)
        return n * abi.EVTCHN_PORT_BYTES

    def ioctl(self, request: int, arg: memoryview | None) -> int:
        handlers = {
            abi.IOCTL_EVTCHN_BIND_INTERDOMAIN: (L.EVTCHN_BIND_INTERDOMAIN, self._bind),
            abi.IOCTL_EVTCHN_UNBIND: (L.EVTCHN_UNBIND, self._unbind),
            abi.IOCTL_EVTCHN_NOTIFY: (L.EVTCHN_NOTIFY, self._notify),
            abi.IOCTL_EVTCHN_RESTRICT_DOMID: (L.EVTCHN_RESTRICT_DOMID, self._restrict_domid),
        }
        if request == abi.IOCTL_EVTCHN_RESET:
            with self.xen.lock:
                self.ring.clear()
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self.eventfd)
            return 0
        entry = handlers.get(request)
        if entry is None:
            raise _fail(errno.ENOSYS, f"unknown ioctl {request:#x}")
        layout, handler = entry
        if arg is None or len(arg) < layout.size:
            raise _fail(errno.EFAULT, "argument shorter than its structure")
        with self.xen.lock:
            return handler(layout.unpack(arg))

    def _bind(self, a: Any) -> int:
        if self.restrict != UNRESTRICTED_DOMID and self.restrict != a.remote_domain:
            raise _fail(errno.EACCES, f"file restricted to domain {self.restrict}")
        port = self.xen.bind_interdomain(a.remote_domain, a.remote_port, self.fire)
        if port < 0:
            raise _fail(-port, "EVTCHNOP_bind_interdomain")
        self.bound[port] = Binding(port)
        return port

    def _bound(self, port: int) -> Binding:
        if port >= NR_CHANNELS:
            raise _fail(errno.EINVAL, f"port {port} is past the event-channel ABI")
        b = self.bound.get(port)
        if b is None:
            raise _fail(errno.ENOTCONN, f"port {port} is not bound by this file")
        return b

    def _unbind(self, a: Any) -> int:
        self._bound(a.port)
        del self.bound[a.port]
        self.xen.evtchn_close(a.port)
        with contextlib.suppress(ValueError):
            self.ring.remove(a.port)
        return 0

    def _notify(self, a: Any) -> int:
        self._bound(a.port)
        self.xen.evtchn_send(a.port)
        return 0

    def _restrict_domid(self, a: Any) -> int:
        if self.restrict != UNRESTRICTED_DOMID:
            raise _fail(errno.EACCES, "already restricted")
        if a.domid == 0 or a.domid >= abi.DOMID_FIRST_RESERVED:
            raise _fail(errno.EINVAL, f"cannot restrict to domain {a.domid}")
        self.restrict = a.domid
        return 0

    def release(self) -> None:
        with self.xen.lock:
            for port in list(self.bound):
                self.xen.evtchn_close(port)
            self.bound.clear()
            self.ring.clear()
