"""Handing a launcher-created User VM to gvt: the only way to serve one upstream.

The upstream HSM binds a User VM to the ``/dev/acrn_hsm`` file that created
it (every ioctl on the file acts on its VM, nothing names a VM by id) and
gives that VM's user space one ioreq client, the default one, which receives
every request no kernel client claims. A process other than the launcher can
therefore serve a User VM only with the launcher's file, and the memory
behind the request buffer and guest RAM, handed to it. This module is that
handover, over a UNIX socket per VM (``<dir>/vm<N>.sock``) with the three
descriptors passed by ``SCM_RIGHTS``:

=====================  ==========================================================
gvt -> launcher        ``REQUEST``: magic ``GVTACRN1``, u32 vmid, u32 0
launcher -> gvt        ``OFFER``: magic ``GVTOFFR1``, u32 vmid, u16 vCPUs,
                       u16 regions (1), u64 RAM bytes, u64 request-buffer offset,
                       then per region u64 guest address, u64 size, u64 memfd
                       offset; descriptors: HSM file, request-buffer memfd, RAM memfd.
                       Or ``NACK``: magic ``GVTNACK1``, u32 errno, u32 length, text.
gvt -> launcher        ``READY`` (magic ``GVTREADY``): gvt's default client serves
                       the VM; the launcher may start it.
gvt -> launcher        ``BYE`` (magic ``GVTBYE\\0\\0``, u32 flags, bit 0: gvt paused
                       the VM) when gvt lets go while the VM still exists.
=====================  ==========================================================

The launcher keeps its own descriptors and stays the VM's owner: it destroys
the VM when the guest powers off, which the HSM signals to gvt by destroying
its client (ENODEV from ATTACH). Only one region starting at guest address 0
is accepted (acrn-dm splits RAM above 2 GiB; this backend's guest RAM is one
range, :attr:`GuestVm.mem_size`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
from pathlib import Path

import attrs

MAGIC_REQUEST = b"GVTACRN1"
MAGIC_OFFER = b"GVTOFFR1"
MAGIC_NACK = b"GVTNACK1"
MAGIC_READY = b"GVTREADY"
MAGIC_BYE = b"GVTBYE\0\0"
REQUEST = struct.Struct("<8sII")
OFFER = struct.Struct("<8sIHHQQ")
REGION = struct.Struct("<QQQ")
NACK = struct.Struct("<8sII")
BYE = struct.Struct("<8sI")
#: gvt paused the VM before letting go (it cannot run without its device model).
BYE_PAUSED = 1
#: most text a NACK carries.
MAX_NACK_TEXT = 512
FDS = 3


class HandoverError(Exception):
    """The handover failed; ``errno`` says how (ENOENT: nobody offers that VM)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


def socket_path(directory: str | Path, vmid: int) -> Path:
    return Path(directory) / f"vm{vmid}.sock"


@attrs.frozen
class Offer:
    """A User VM as its launcher hands it over."""

    vmid: int
    vcpu_num: int
    ram_size: int
    ioreq_offset: int
    hsm_fd: int
    ioreq_fd: int
    ram_fd: int


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise HandoverError(errno.EPIPE, "the launcher closed the handover socket")
        data += chunk
    return data


class GvtEnd:
    """gvt's end of one handover: the socket stays open while gvt serves the VM."""

    def __init__(self, directory: str | Path, vmid: int, timeout: float = 10.0) -> None:
        path = socket_path(directory, vmid)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self.sock.close()
            raise HandoverError(
                errno.ENOENT, f"no launcher offers User VM {vmid} at {path} ({exc.strerror})"
            ) from exc
        except OSError as exc:
            self.sock.close()
            raise HandoverError(exc.errno or errno.EIO, f"{path}: {exc.strerror}") from exc
        self.vmid = vmid
        self.closed = False

    def request(self) -> Offer:
        self.sock.sendall(REQUEST.pack(MAGIC_REQUEST, self.vmid, 0))
        head = _recv_exact(self.sock, 8)
        if head == MAGIC_NACK:
            code, length = struct.unpack("<II", _recv_exact(self.sock, 8))
            text = _recv_exact(self.sock, min(length, MAX_NACK_TEXT)).decode(errors="replace")
            raise HandoverError(code, f"the launcher refused User VM {self.vmid}: {text}")
        if head != MAGIC_OFFER:
            raise HandoverError(errno.EPROTO, f"the launcher answered {head!r}, not an offer")
        rest_len = OFFER.size - 8 + REGION.size
        msg, fds, _flags, _addr = socket.recv_fds(self.sock, rest_len, FDS)
        while len(msg) < rest_len:
            more = self.sock.recv(rest_len - len(msg))
            if not more:
                break
            msg += more
        if len(fds) != FDS or len(msg) != rest_len:
            for fd in fds:
                os.close(fd)
            raise HandoverError(errno.EPROTO, "the offer lacks its descriptors or region")
        _magic, vmid, vcpus, regions, ram_size, ioreq_offset = OFFER.unpack(head + msg[: OFFER.size - 8])
        gpa, size, offset = REGION.unpack(msg[OFFER.size - 8 :])
        if vmid != self.vmid or regions != 1 or gpa != 0 or size != ram_size or offset != 0:
            for fd in fds:
                os.close(fd)
            raise HandoverError(
                errno.EINVAL,
                f"the offer for User VM {vmid} ({regions} RAM regions, the first at {gpa:#x}, "
                f"{size:#x} bytes) is not one RAM range from guest address 0",
            )
        return Offer(vmid, vcpus, ram_size, ioreq_offset, fds[0], fds[1], fds[2])

    def ready(self) -> None:
        self.sock.sendall(MAGIC_READY)

    def bye(self, paused: bool) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(BYE.pack(MAGIC_BYE, BYE_PAUSED if paused else 0))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()


class LauncherEnd:
    """A launcher's listening socket for one User VM."""

    def __init__(self, directory: str | Path, vmid: int) -> None:
        self.path = socket_path(directory, vmid)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        os.chmod(self.path, 0o600)
        self.sock.listen(1)
        self.vmid = vmid

    def accept(self) -> socket.socket:
        conn, _ = self.sock.accept()
        return conn

    @staticmethod
    def read_request(conn: socket.socket) -> int:
        magic, vmid, _ = REQUEST.unpack(_recv_exact(conn, REQUEST.size))
        if magic != MAGIC_REQUEST:
            raise HandoverError(errno.EPROTO, f"not a handover request: {magic!r}")
        return vmid

    @staticmethod
    def offer(conn: socket.socket, vmid: int, vcpus: int, ram_size: int,
              fds: tuple[int, int, int]) -> None:
        msg = OFFER.pack(MAGIC_OFFER, vmid, vcpus, 1, ram_size, 0) + REGION.pack(0, ram_size, 0)
        conn.sendall(msg[:8])
        socket.send_fds(conn, [msg[8:]], list(fds))

    @staticmethod
    def refuse(conn: socket.socket, code: int, text: str) -> None:
        data = text.encode()[:MAX_NACK_TEXT]
        with contextlib.suppress(OSError):
            conn.sendall(NACK.pack(MAGIC_NACK, code, len(data)) + data)

    @staticmethod
    def read_message(conn: socket.socket) -> tuple[bytes, int]:
        """The next message from gvt: (magic, flags); (b"", 0) when gvt went away."""
        try:
            magic = _recv_exact(conn, 8)
        except (HandoverError, OSError):
            return b"", 0
        if magic == MAGIC_BYE:
            try:
                (flags,) = struct.unpack("<I", _recv_exact(conn, 4))
            except (HandoverError, OSError):
                flags = 0
            return magic, flags
        return magic, 0

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
