"""One HSM file, with a typed method per ioctl the backend and launchers issue.

The upstream HSM binds a User VM to the ``/dev/acrn_hsm`` file that created
it: every ioctl on that file acts on that VM, and the last close of the file
releases it. :class:`HsmFile` packs each argument into the structure of
:mod:`gvt_acrngt.abi`, hands the bytes to the transport and turns an errno
into :class:`~gvt_core.errors.HypervisorCallError` naming the ioctl.
"""

from __future__ import annotations

import ctypes
import os
import threading

import attrs

from gvt_acrngt import abi
from gvt_acrngt.transport import HsmTransport
from gvt_core.errors import HypervisorCallError

NAME = "acrngt"


@attrs.frozen
class CreatedVm:
    """What ``ACRN_IOCTL_CREATE_VM`` answered."""

    vmid: int
    vcpu_num: int


def _bytes(struct: ctypes.Structure) -> bytearray:
    return bytearray(bytes(struct))


class HsmFile:
    """An open HSM file (and, once created or handed over, its User VM)."""

    def __init__(self, transport: HsmTransport, fd: int | None = None) -> None:
        self.transport = transport
        self.fd = transport.open() if fd is None else fd
        self.closed = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"HsmFile(fd={self.fd}, on {self.transport.label})"

    def _call(self, request: int, arg: bytearray | int = 0, detail: str = "") -> int:
        try:
            return self.transport.ioctl(self.fd, request, arg)
        except OSError as exc:
            code = exc.errno or 0
            if exc.strerror and exc.strerror != os.strerror(code):  # a note beyond the errno
                detail = f"{detail}; {exc.strerror}" if detail else exc.strerror
            raise HypervisorCallError(NAME, abi.ioctl_name(request), code, detail) from exc

    # --- VM management -----------------------------------------------------------------
    def create_vm(self, ioreq_buf: int, cpu_affinity: int = 0, vm_flag: int = 0,
                  uuid: bytes = bytes(16)) -> CreatedVm:
        """Create a User VM whose request buffer is the page at ``ioreq_buf``."""
        param = abi.acrn_vm_creation(
            vm_flag=vm_flag, ioreq_buf=ioreq_buf, cpu_affinity=cpu_affinity
        )
        ctypes.memmove(param.uuid.b, uuid, 16)
        buf = _bytes(param)
        self._call(abi.ACRN_IOCTL_CREATE_VM, buf,
                   "the hypervisor has no free User VM configuration, refused cpu_affinity "
                   f"{cpu_affinity:#x}, or could not pin the request buffer at {ioreq_buf:#x}")
        answer = abi.acrn_vm_creation.from_buffer(buf)
        return CreatedVm(vmid=answer.vmid, vcpu_num=answer.vcpu_num)

    def start_vm(self) -> None:
        self._call(abi.ACRN_IOCTL_START_VM)

    def pause_vm(self) -> None:
        self._call(abi.ACRN_IOCTL_PAUSE_VM)

    def destroy_vm(self) -> None:
        self._call(abi.ACRN_IOCTL_DESTROY_VM)

    # --- memory --------------------------------------------------------------------------
    def set_ram(self, user_vm_pa: int, vma_base: int, length: int,
                access: int = abi.ACRN_MEM_ACCESS_RWX) -> None:
        """Back guest RAM ``[user_vm_pa, +length)`` with this process's pages at ``vma_base``."""
        memmap = abi.acrn_vm_memmap(
            type=abi.ACRN_MEMMAP_RAM, attr=access, user_vm_pa=user_vm_pa, len=length
        )
        memmap.vma_base = vma_base
        self._call(abi.ACRN_IOCTL_SET_MEMSEG, _bytes(memmap),
                   f"RAM at {user_vm_pa:#x}+{length:#x} from {vma_base:#x}")

    def set_mmio(self, user_vm_pa: int, service_vm_pa: int, length: int, access: int) -> None:
        """Map Service VM physical ``[service_vm_pa, +length)`` at guest ``user_vm_pa``
        (the HSM makes every such segment uncached, ``ACRN_MEM_TYPE_UC``)."""
        memmap = abi.acrn_vm_memmap(
            type=abi.ACRN_MEMMAP_MMIO, attr=access, user_vm_pa=user_vm_pa, len=length
        )
        memmap.service_vm_pa = service_vm_pa
        self._call(abi.ACRN_IOCTL_SET_MEMSEG, _bytes(memmap),
                   f"{length:#x} bytes of {service_vm_pa:#x} at guest {user_vm_pa:#x}")

    def unset(self, user_vm_pa: int, length: int) -> None:
        """Remove the guest's EPT mapping of ``[user_vm_pa, +length)`` (any kind)."""
        memmap = abi.acrn_vm_memmap(type=abi.ACRN_MEMMAP_MMIO, user_vm_pa=user_vm_pa, len=length)
        self._call(abi.ACRN_IOCTL_UNSET_MEMSEG, _bytes(memmap),
                   f"guest {user_vm_pa:#x}+{length:#x}")

    # --- I/O requests -----------------------------------------------------------------------
    def create_client(self) -> None:
        self._call(abi.ACRN_IOCTL_CREATE_IOREQ_CLIENT)

    def attach_client(self) -> None:
        """Block until a request is dispatched to the default client; raises
        HypervisorCallError with errno ENODEV once the client is destroyed."""
        self._call(abi.ACRN_IOCTL_ATTACH_IOREQ_CLIENT)

    def destroy_client(self) -> None:
        self._call(abi.ACRN_IOCTL_DESTROY_IOREQ_CLIENT)

    def notify_finish(self, vmid: int, vcpu: int) -> None:
        notify = abi.acrn_ioreq_notify(vmid=vmid, vcpu=vcpu)
        self._call(abi.ACRN_IOCTL_NOTIFY_REQUEST_FINISH, _bytes(notify), f"vCPU {vcpu}")

    def clear_requests(self) -> None:
        self._call(abi.ACRN_IOCTL_CLEAR_VM_IOREQ)

    # --- interrupts ----------------------------------------------------------------------------
    def inject_msi(self, address: int, data: int) -> None:
        msi = abi.acrn_msi_entry(msi_addr=address, msi_data=data)
        self._call(abi.ACRN_IOCTL_INJECT_MSI, _bytes(msi), f"address {address:#x} data {data:#x}")

    # --- the file ---------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        self.transport.close(self.fd)
