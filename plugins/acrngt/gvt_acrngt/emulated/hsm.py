"""The emulated Hypervisor Service Module behind ``/dev/acrn_hsm``.

A strict model of the upstream driver (``drivers/virt/acrn``: ``hsm.c``,
``vm.c``, ``mm.c``, ``ioreq.c``, ``ioeventfd.c``). It receives each ioctl's
packed argument bytes, decodes them with the structures of
:mod:`gvt_acrngt.abi`, checks them in the driver's order and answers with the
driver's errno:

* a file whose VM was never created (or is destroyed) answers EINVAL to
  everything but CREATE_VM, before even looking at the command; an unknown
  command (or a known one with the wrong size encoded) is ENOTTY; an argument
  shorter than its structure is EFAULT (``copy_from_user``);
* reserved fields must be zero (EINVAL); a second default client is EEXIST;
  ATTACH without a client, or on one being destroyed, is ENODEV; NOTIFY for a
  vCPU the VM does not have is EINVAL; memory segments of another type are
  EINVAL; a RAM segment of no whole page is ENOMEM, one over memory that is
  not mapped (or not writable) EFAULT, the 257th ENOMEM;
* a hypercall's -1 comes back as it does from the real driver: errno EPERM
  (destroying a VM that is not paused, starting one twice, an MSI outside
  0xFEExxxxx); its -EINVAL (a region that is not page sized, not present) as
  EINVAL.

Requests: the upcall (:meth:`Hsm.upcall`) walks the VM's slots like
``acrn_ioreq_dispatch``: PENDING requests are completed at once while the VM
is being cleared, 0xCF8/0xCFC port I/O is folded into PCICFG requests
(``handle_cf8cfc``), everything else goes to the kernel client whose range
holds it (the ioeventfd client) or to the default client, PROCESSING, with
``kernel_handled`` set for kernel clients. NOTIFY completes a slot without
looking at its state, as the driver does; the model also records a
:class:`~gvt_acrngt.emulated.hypervisor.Violation` and stops the vCPU when the
slot was not a request dispatched to that client (a double completion, a
completion of a request never dispatched).

Files are real file descriptors (anonymous memfds standing in for the device
node), so an HSM file can be passed to another process part or thread with
``SCM_RIGHTS`` like the real one; the model knows a file by its inode and
releases it (``acrn_dev_release``) when the last descriptor is closed.
Ioctls the backend has no use for are decoded and checked as far as the HSM
checks them, then refused with :class:`NotModelledError` (ENOSYS, which the
real driver never answers).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable
from typing import Any

import attrs

from gvt_acrngt import abi
from gvt_acrngt.emulated.hypervisor import Hypervisor, Region, Violation
from gvt_acrngt.emulated.service_vm import ServiceVmMemory
from gvt_core.hw.sysmem import PAGE_SHIFT

PCI_LOWREG_MASK = 0xFC
PCI_HIGHREG_MASK = 0xF00
PCI_FUNCMAX, PCI_SLOTMAX, PCI_BUSMAX = 7, 31, 255


class NotModelledError(OSError):
    """An ioctl the emulated HSM checks but does not carry out (ENOSYS)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            errno.ENOSYS,
            f"the emulated ACRN does not model {name} (its argument passed the HSM's checks)",
        )


def _err(code: int, what: str = "") -> OSError:
    """The errno the real driver answers; ``what`` (the emulator's own note on why)
    rides in the filename slot, so ``strerror`` is exactly the kernel's text."""
    return OSError(code, os.strerror(code), what) if what else OSError(code, os.strerror(code))


@attrs.define(eq=False)
class Client:
    """``struct acrn_ioreq_client``."""

    name: str
    is_default: bool
    cond: threading.Condition
    #: (type, start, end inclusive), kernel clients only.
    ranges: list[tuple[int, int, int]] = attrs.field(factory=list)
    #: vCPUs whose slot was dispatched to this client (``ioreqs_map``).
    ioreqs: set[int] = attrs.field(factory=set)
    destroying: bool = False
    #: a kernel client's handler (``ioreq_handler_t``).
    handler: Callable[[Client, abi.acrn_io_request], int] | None = None


@attrs.define(eq=False)
class IoEventFd:
    """``struct hsm_ioeventfd``."""

    ident: str
    fd: int
    addr: int
    length: int
    type: int
    data: int
    wildcard: bool


@attrs.define(eq=False)
class HsmVm:
    """``struct acrn_vm``: what one HSM file holds."""

    vmid: int = abi.ACRN_INVALID_VMID
    vcpu_num: int = 0
    destroyed: bool = False
    clearing: bool = False
    regions_mapping: list[tuple[int, int]] = attrs.field(factory=list)
    default_client: Client | None = None
    clients: list[Client] = attrs.field(factory=list)
    ioreq_buf: abi.acrn_io_request_buffer | None = None
    ioreq_frame: int = 0
    pci_conf_addr: int = 0
    ioeventfd_client: Client | None = None
    ioeventfds: list[IoEventFd] = attrs.field(factory=list)


def _eventfd_ident(fd: int) -> str:
    """The identity of an eventfd (its ``eventfd-id``); EBADF / EINVAL otherwise."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        raise _err(errno.EBADF, f"fd {fd} is not open") from None
    if target != "anon_inode:[eventfd]":
        raise _err(errno.EINVAL, f"fd {fd} is not an eventfd")
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("eventfd-id:"):
                return line.split(":", 1)[1].strip()
    return f"pos-{os.fstat(fd).st_ino}-{fd}"


class Hsm:
    """The HSM of one emulated Service VM."""

    def __init__(self, hv: Hypervisor, memory: ServiceVmMemory, lock: threading.RLock,
                 violation: Callable[[Violation], None]) -> None:
        self.hv = hv
        self.memory = memory
        self.lock = lock
        self.violation = violation
        self.files: dict[tuple[int, int], HsmVm] = {}
        #: ``acrn_vm_list``: VMs whose requests the upcall dispatches.
        self.vm_list: list[HsmVm] = []
        hv.upcall = self.upcall
        self._ioctls: dict[int, Callable[[HsmVm, Any], int]] = {
            abi.ACRN_IOCTL_CREATE_VM: self._create_vm,
            abi.ACRN_IOCTL_START_VM: lambda vm, a: self.hv.start_vm(vm.vmid),
            abi.ACRN_IOCTL_PAUSE_VM: lambda vm, a: self.hv.pause_vm(vm.vmid),
            abi.ACRN_IOCTL_RESET_VM: lambda vm, a: self.hv.reset_vm(vm.vmid),
            abi.ACRN_IOCTL_DESTROY_VM: lambda vm, a: self._destroy(vm),
            abi.ACRN_IOCTL_SET_VCPU_REGS: self._set_vcpu_regs,
            abi.ACRN_IOCTL_SET_MEMSEG: self._set_memseg,
            abi.ACRN_IOCTL_UNSET_MEMSEG: self._unset_memseg,
            abi.ACRN_IOCTL_INJECT_MSI: self._inject_msi,
            abi.ACRN_IOCTL_CREATE_IOREQ_CLIENT: self._create_client,
            abi.ACRN_IOCTL_DESTROY_IOREQ_CLIENT: self._destroy_client,
            abi.ACRN_IOCTL_ATTACH_IOREQ_CLIENT: self._attach_client,
            abi.ACRN_IOCTL_NOTIFY_REQUEST_FINISH: self._notify,
            abi.ACRN_IOCTL_CLEAR_VM_IOREQ: self._clear,
            abi.ACRN_IOCTL_IOEVENTFD: self._ioeventfd,
        }
        for request, struct in (
            (abi.ACRN_IOCTL_ASSIGN_PCIDEV, abi.acrn_pcidev),
            (abi.ACRN_IOCTL_DEASSIGN_PCIDEV, abi.acrn_pcidev),
            (abi.ACRN_IOCTL_ASSIGN_MMIODEV, abi.acrn_mmiodev),
            (abi.ACRN_IOCTL_DEASSIGN_MMIODEV, abi.acrn_mmiodev),
            (abi.ACRN_IOCTL_SET_PTDEV_INTR, abi.acrn_ptdev_irq),
            (abi.ACRN_IOCTL_RESET_PTDEV_INTR, abi.acrn_ptdev_irq),
            (abi.ACRN_IOCTL_CREATE_VDEV, abi.acrn_vdev),
            (abi.ACRN_IOCTL_DESTROY_VDEV, abi.acrn_vdev),
            (abi.ACRN_IOCTL_IRQFD, abi.acrn_irqfd),
            (abi.ACRN_IOCTL_PM_GET_CPU_STATE, abi.c_u64),
        ):
            self._ioctls[request] = self._not_modelled(request, struct)
        for request in (abi.ACRN_IOCTL_SET_IRQLINE, abi.ACRN_IOCTL_VM_INTR_MONITOR):
            self._ioctls[request] = self._not_modelled(request, None)

    def _record(self, vm: HsmVm, kind: str, detail: str) -> None:
        self.violation(Violation(vm.vmid, kind, detail))

    # --- files ---------------------------------------------------------------------------
    @staticmethod
    def _key(fd: int) -> tuple[int, int]:
        st = os.fstat(fd)
        return st.st_dev, st.st_ino

    def open(self) -> int:
        fd = os.memfd_create("acrn_hsm (emulated)", os.MFD_CLOEXEC)
        with self.lock:
            self.files[self._key(fd)] = HsmVm()
        return fd

    def file_vm(self, fd: int) -> HsmVm:
        try:
            key = self._key(fd)
        except OSError as exc:
            raise _err(errno.EBADF, f"fd {fd}") from exc
        vm = self.files.get(key)
        if vm is None:
            raise _err(errno.ENOTTY, f"fd {fd} is not an HSM file")
        return vm

    def close(self, fd: int) -> None:
        key = self._key(fd)
        os.close(fd)
        with self.lock:
            if key in self.files and not self._still_open(key):
                self._release(self.files.pop(key))

    @staticmethod
    def _still_open(key: tuple[int, int]) -> bool:
        for name in os.listdir("/proc/self/fd"):
            try:
                st = os.stat(f"/proc/self/fd/{name}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == key:
                return True
        return False

    def _release(self, vm: HsmVm) -> None:
        """``acrn_dev_release``: destroy the file's VM (a running one cannot be)."""
        vmid = vm.vmid
        if self._destroy(vm) < 0:
            self._record(vm, "file released with its VM running",
                         f"the last HSM file of User VM {vmid} was closed while the VM was not "
                         "paused: the hypervisor refused to destroy it and keeps it")

    # --- ioctl ------------------------------------------------------------------------------
    def ioctl(self, fd: int, request: int, arg: bytearray | int = 0) -> int:
        with self.lock:
            vm = self.file_vm(fd)
            if vm.vmid == abi.ACRN_INVALID_VMID and request != abi.ACRN_IOCTL_CREATE_VM:
                raise _err(errno.EINVAL, f"{abi.ioctl_name(request)} on a file with no VM")
            handler = self._ioctls.get(request)
            if handler is None:
                raise _err(errno.ENOTTY, f"unknown HSM ioctl {request:#x}")
            ret = handler(vm, arg)
        if ret < 0:
            raise _err(-ret if ret != -1 else errno.EPERM, abi.ioctl_name(request))
        return ret

    @staticmethod
    def _copy_from(arg: bytearray | int, struct: type) -> Any:
        size = ctypes.sizeof(struct)
        if isinstance(arg, int) or len(arg) < size:
            raise _err(errno.EFAULT, f"the argument is not a readable {size}-byte {struct.__name__}")
        return struct.from_buffer_copy(bytes(arg[:size]))

    def _not_modelled(self, request: int, struct: type | None) -> Callable[[HsmVm, Any], int]:
        def handler(vm: HsmVm, arg: Any) -> int:
            if struct is not None:
                self._copy_from(arg, struct)
            raise NotModelledError(abi.ioctl_name(request))

        return handler

    # --- VM management -------------------------------------------------------------------
    def _create_vm(self, vm: HsmVm, arg: Any) -> int:
        param = self._copy_from(arg, abi.acrn_vm_creation)
        if param.reserved0 | param.reserved1:
            return -errno.EINVAL
        ret, vmid, vcpus = self.hv.create_vm(param.cpu_affinity, "")
        param.vmid, param.vcpu_num = vmid, vcpus
        if ret < 0 or vmid == abi.ACRN_INVALID_VMID:
            return -errno.EINVAL
        if vm.vmid != abi.ACRN_INVALID_VMID:
            self._record(vm, "CREATE_VM on a file that has a VM",
                         f"the file held User VM {vm.vmid}; the HSM fails to set up the new "
                         f"VM {vmid}'s request buffer and forgets both (the hypervisor keeps them)")
            vm.vmid = abi.ACRN_INVALID_VMID
            return -errno.EINVAL
        vm.vmid, vm.vcpu_num = vmid, vcpus
        try:
            frame = int(self.memory.pin(param.ioreq_buf, 1, write=True)[0])
        except OSError:
            frame = -1
        if frame < 0 or self.hv.set_ioreq_buffer(vmid, frame << PAGE_SHIFT) < 0:
            self._record(vm, "VM lost at creation",
                         f"the request buffer at {param.ioreq_buf:#x} could not be pinned or set; "
                         f"the hypervisor keeps User VM {vmid} (a created VM cannot be destroyed)")
            vm.vmid = abi.ACRN_INVALID_VMID
            return -errno.EINVAL
        address = self.memory.address_of(frame)
        assert address is not None
        vm.ioreq_buf = abi.acrn_io_request_buffer.from_address(address)
        vm.ioreq_frame = frame
        self.vm_list.append(vm)
        vm.ioeventfd_client = self._new_client(vm, f"ioeventfd-{vmid}", False,
                                               self._ioeventfd_handler)
        if isinstance(arg, int):
            self._destroy(vm)
            return -errno.EFAULT
        ctypes.memmove((ctypes.c_char * ctypes.sizeof(param)).from_buffer(arg),
                       ctypes.addressof(param), ctypes.sizeof(param))
        return 0

    def _destroy(self, vm: HsmVm) -> int:
        """``acrn_vm_destroy``."""
        if vm.vmid == abi.ACRN_INVALID_VMID or vm.destroyed:
            return 0
        vm.destroyed = True
        ret = self.hv.destroy_vm(vm.vmid)
        if ret < 0:
            vm.destroyed = False
            return ret
        if vm in self.vm_list:
            self.vm_list.remove(vm)
        for efd in vm.ioeventfds:
            os.close(efd.fd)
        vm.ioeventfds.clear()
        for client in list(vm.clients):
            self._destroy_client_obj(vm, client)
        if vm.default_client is not None:
            self._destroy_client_obj(vm, vm.default_client)
        vm.ioeventfd_client = None
        vm.ioreq_buf = None
        vm.regions_mapping.clear()
        vm.vmid = abi.ACRN_INVALID_VMID
        return 0

    def _set_vcpu_regs(self, vm: HsmVm, arg: Any) -> int:
        regs = self._copy_from(arg, abi.acrn_vcpu_regs)
        r = regs.vcpu_regs
        if (any(regs.reserved) or any(r.reserved_32) or any(r.reserved_64)
                or any(r.gdt.reserved) or any(r.idt.reserved)):
            return -errno.EINVAL
        raise NotModelledError("ACRN_IOCTL_SET_VCPU_REGS")

    # --- memory ------------------------------------------------------------------------------
    def _set_memseg(self, vm: HsmVm, arg: Any) -> int:
        memmap = self._copy_from(arg, abi.acrn_vm_memmap)
        if memmap.type == abi.ACRN_MEMMAP_RAM:
            return self._ram_map(vm, memmap)
        if memmap.type != abi.ACRN_MEMMAP_MMIO:
            return -errno.EINVAL
        attr = abi.ACRN_MEM_TYPE_UC | (memmap.attr & abi.ACRN_MEM_ACCESS_RIGHT_MASK)
        region = Region(abi.ACRN_MEM_REGION_ADD, attr, memmap.user_vm_pa,
                        memmap.service_vm_pa, memmap.len)
        return self.hv.set_memory_regions(vm.vmid, [region])

    def _ram_map(self, vm: HsmVm, memmap: Any) -> int:
        pages = memmap.len >> PAGE_SHIFT
        if pages == 0:
            return -errno.ENOMEM  # vmap of no page fails
        try:
            frames = self.memory.pin(memmap.vma_base, pages, write=True)
        except OSError:
            return -errno.EFAULT
        if len(vm.regions_mapping) >= abi.ACRN_MEM_MAPPING_MAX:
            return -errno.ENOMEM
        attr = abi.ACRN_MEM_TYPE_WB | (memmap.attr & abi.ACRN_MEM_ACCESS_RIGHT_MASK)
        regions, start = [], 0
        for i in range(1, pages + 1):  # one region per run of consecutive frames
            if i == pages or frames[i] != frames[i - 1] + 1:
                regions.append(Region(abi.ACRN_MEM_REGION_ADD, attr,
                                      memmap.user_vm_pa + (start << PAGE_SHIFT),
                                      int(frames[start]) << PAGE_SHIFT, (i - start) << PAGE_SHIFT))
                start = i
        ret = self.hv.set_memory_regions(vm.vmid, regions)
        if ret < 0:
            return ret
        vm.regions_mapping.append((memmap.user_vm_pa, pages))
        return 0

    def _unset_memseg(self, vm: HsmVm, arg: Any) -> int:
        memmap = self._copy_from(arg, abi.acrn_vm_memmap)
        if memmap.type != abi.ACRN_MEMMAP_MMIO:
            return -errno.EINVAL
        region = Region(abi.ACRN_MEM_REGION_DEL, 0, memmap.user_vm_pa, 0, memmap.len)
        return self.hv.set_memory_regions(vm.vmid, [region])

    # --- interrupts -----------------------------------------------------------------------------
    def _inject_msi(self, vm: HsmVm, arg: Any) -> int:
        msi = self._copy_from(arg, abi.acrn_msi_entry)
        return self.hv.inject_msi(vm.vmid, msi.msi_addr, msi.msi_data)

    # --- ioreq clients ----------------------------------------------------------------------------
    def _new_client(self, vm: HsmVm, name: str, is_default: bool,
                    handler: Callable[[Client, abi.acrn_io_request], int] | None = None) -> Client:
        client = Client(name, is_default, threading.Condition(self.lock), handler=handler)
        if is_default:
            vm.default_client = client
        else:
            vm.clients.append(client)
        return client

    def _create_client(self, vm: HsmVm, arg: Any) -> int:
        if vm.default_client is not None:
            return -errno.EEXIST
        self._new_client(vm, "acrndm", True)
        return 0

    def _destroy_client_obj(self, vm: HsmVm, client: Client) -> None:
        """``acrn_ioreq_client_destroy`` (then ``ioreq_resume`` re-runs the dispatch)."""
        client.destroying = True
        with client.cond:
            client.cond.notify_all()
        if client.is_default:
            vm.default_client = None
            for vcpu in sorted(client.ioreqs):
                self._record(vm, "client destroyed with a request in flight",
                             f"vCPU {vcpu}'s request was dispatched to the default client, "
                             "which was destroyed before completing it; the vCPU waits forever")
        elif client in vm.clients:
            vm.clients.remove(client)
        client.ranges.clear()
        if vm.ioreq_buf is not None:
            self._dispatch(vm)

    def _destroy_client(self, vm: HsmVm, arg: Any) -> int:
        if vm.default_client is not None:
            self._destroy_client_obj(vm, vm.default_client)
        return 0

    def _attach_client(self, vm: HsmVm, arg: Any) -> int:
        client = vm.default_client
        if client is None:
            return -errno.ENODEV
        with client.cond:
            while not client.ioreqs and not client.destroying:
                client.cond.wait()
        if client.destroying:
            return -errno.ENODEV
        return 0

    def _notify(self, vm: HsmVm, arg: Any) -> int:
        notify = self._copy_from(arg, abi.acrn_ioreq_notify)
        if notify.reserved != 0:
            return -errno.EINVAL
        client = vm.default_client
        if client is None:
            return 0
        return self._complete(vm, client, notify.vcpu)

    def _complete(self, vm: HsmVm, client: Client, vcpu: int) -> int:
        """``acrn_ioreq_complete_request``."""
        if vcpu >= vm.vcpu_num or vm.ioreq_buf is None:
            return -errno.EINVAL
        slot = vm.ioreq_buf.req_slot[vcpu]
        dispatched = vcpu in client.ioreqs and slot.processed == abi.ACRN_IOREQ_STATE_PROCESSING
        client.ioreqs.discard(vcpu)
        if not dispatched:
            detail = (f"completion of vCPU {vcpu}'s slot in state {slot.processed}, "
                      f"which was not a request dispatched to {client.name}")
            self._record(vm, "request completed twice or never dispatched", detail)
            hv_vm = self.hv.vm(vm.vmid)
            if hv_vm is not None:
                hv_vm.vcpus[vcpu].poisoned = detail
        return self._complete_slot(vm, vcpu, slot)

    def _complete_slot(self, vm: HsmVm, vcpu: int, slot: abi.acrn_io_request) -> int:
        """``ioreq_complete_request``: COMPLETE, then wake the vCPU unless it polls."""
        polling = slot.completion_polling
        slot.processed = abi.ACRN_IOREQ_STATE_COMPLETE
        if not polling:
            return self.hv.notify_request_finish(vm.vmid, vcpu)
        return 0

    def _clear(self, vm: HsmVm, arg: Any) -> int:
        """``acrn_ioreq_request_clear``: complete whatever the default client holds."""
        vm.clearing = True
        try:
            client = vm.default_client
            if client is not None and vm.ioreq_buf is not None:
                for vcpu in sorted(client.ioreqs):
                    client.ioreqs.discard(vcpu)
                    self._complete_slot(vm, vcpu, vm.ioreq_buf.req_slot[vcpu])
        finally:
            vm.clearing = False
        return 0

    # --- dispatch ------------------------------------------------------------------------------------
    def upcall(self, vmid: int) -> None:
        """The hypervisor's notification: dispatch every VM's pending requests."""
        for vm in list(self.vm_list):
            if vm.ioreq_buf is None:
                break
            self._dispatch(vm)

    def _dispatch(self, vm: HsmVm) -> None:
        buf = vm.ioreq_buf
        assert buf is not None
        for i in range(vm.vcpu_num):
            slot = buf.req_slot[i]
            if slot.processed != abi.ACRN_IOREQ_STATE_PENDING:
                continue
            if vm.clearing:
                self._complete_slot(vm, i, slot)
                continue
            if self._handle_cf8cfc(vm, slot, i):
                continue
            client = self._find_client(vm, slot)
            if client is None:
                self._record(vm, "no ioreq client",
                             f"vCPU {i}'s request (type {slot.type}) found no client: the HSM "
                             "logs 'Failed to find ioreq client!' and leaves it pending")
                return
            slot.kernel_handled = 0 if client.is_default else 1
            slot.processed = abi.ACRN_IOREQ_STATE_PROCESSING
            client.ioreqs.add(i)
            with client.cond:
                client.cond.notify_all()
            # a kernel client's thread handles its request right away
            if client.handler is not None and client.handler(client, slot) >= 0:
                client.ioreqs.discard(i)
                self._complete_slot(vm, i, slot)

    def _handle_cf8cfc(self, vm: HsmVm, slot: abi.acrn_io_request, vcpu: int) -> bool:
        if slot.type != abi.ACRN_IOREQ_TYPE_PORTIO:
            return False
        pio = slot.reqs.pio_request
        handled = False
        if pio.address == abi.PCI_CONFIG_ADDRESS_PORT:
            if pio.direction == abi.ACRN_IOREQ_DIR_WRITE:
                vm.pci_conf_addr = pio.value
            else:
                pio.value = vm.pci_conf_addr
            handled = True
        elif abi.PCI_CONFIG_DATA_PORT <= pio.address < abi.PCI_CONFIG_DATA_PORT + 4:
            if not vm.pci_conf_addr & abi.PCI_CONFIG_ENABLE:
                if pio.direction == abi.ACRN_IOREQ_DIR_READ:
                    pio.value = 0xFFFF_FFFF
                handled = True
            else:
                offset = pio.address - abi.PCI_CONFIG_DATA_PORT
                addr = vm.pci_conf_addr
                slot.type = abi.ACRN_IOREQ_TYPE_PCICFG
                pci = slot.reqs.pci_request
                pci.bus = (addr >> 16) & PCI_BUSMAX
                pci.dev = (addr >> 11) & PCI_SLOTMAX
                pci.func = (addr >> 8) & PCI_FUNCMAX
                pci.reg = (addr & PCI_LOWREG_MASK) + ((addr >> 16) & PCI_HIGHREG_MASK) + offset
        if handled:
            self._complete_slot(vm, vcpu, slot)
        return handled

    @staticmethod
    def _in_range(rng: tuple[int, int, int], slot: abi.acrn_io_request) -> bool:
        kind, start, end = rng
        if kind != slot.type:
            return False
        if kind == abi.ACRN_IOREQ_TYPE_MMIO:
            r: Any = slot.reqs.mmio_request
        elif kind == abi.ACRN_IOREQ_TYPE_PORTIO:
            r = slot.reqs.pio_request
        else:
            return False
        return bool(r.address >= start and r.address + r.size - 1 <= end)

    def _find_client(self, vm: HsmVm, slot: abi.acrn_io_request) -> Client | None:
        for client in vm.clients:
            if any(self._in_range(r, slot) for r in client.ranges):
                return client
        return vm.default_client

    # --- ioeventfd ---------------------------------------------------------------------------------
    def _ioeventfd(self, vm: HsmVm, arg: Any) -> int:
        args = self._copy_from(arg, abi.acrn_ioeventfd)
        if args.reserved != 0:
            return -errno.EINVAL
        if args.flags & abi.ACRN_IOEVENTFD_FLAG_DEASSIGN:
            ident = _eventfd_ident(args.fd)
            for efd in vm.ioeventfds:
                if efd.ident != ident:
                    continue
                client = vm.ioeventfd_client
                if client is not None:
                    rng = (efd.type, efd.addr, efd.addr + efd.length - 1)
                    if rng in client.ranges:
                        client.ranges.remove(rng)
                os.close(efd.fd)
                vm.ioeventfds.remove(efd)
                break
            return 0
        if args.addr + args.len > 1 << 64 or args.len not in (1, 2, 4, 8):
            return -errno.EINVAL
        ident = _eventfd_ident(args.fd)
        kind = (abi.ACRN_IOREQ_TYPE_PORTIO if args.flags & abi.ACRN_IOEVENTFD_FLAG_PIO
                else abi.ACRN_IOREQ_TYPE_MMIO)
        wildcard = not args.flags & abi.ACRN_IOEVENTFD_FLAG_DATAMATCH
        data = 0 if wildcard else args.data
        for p in vm.ioeventfds:
            if (p.ident == ident and p.addr == args.addr and p.type == kind
                    and (p.wildcard or wildcard or p.data == data)):
                return -errno.EEXIST
        client = vm.ioeventfd_client
        assert client is not None
        client.ranges.insert(0, (kind, args.addr, args.addr + args.len - 1))
        vm.ioeventfds.append(IoEventFd(ident, os.dup(args.fd), args.addr, args.len, kind, data,
                                       wildcard))
        return 0

    def _ioeventfd_handler(self, client: Client, slot: abi.acrn_io_request) -> int:
        """``acrn_ioeventfd_handler``: reads answer 0, matching writes signal the eventfd."""
        r: Any = (slot.reqs.mmio_request if slot.type == abi.ACRN_IOREQ_TYPE_MMIO
                  else slot.reqs.pio_request)
        if r.direction == abi.ACRN_IOREQ_DIR_READ:
            r.value = 0
            return 0
        vm = next((v for v in self.vm_list if v.ioeventfd_client is client), None)
        if vm is None:
            return 0
        for p in vm.ioeventfds:
            if (p.type == slot.type and p.addr == r.address and p.length >= r.size
                    and (p.wildcard or p.data == r.value)):
                os.eventfd_write(p.fd, 1)
                break
        return 0

    def shutdown(self) -> None:
        """Release every file's VM (the machine is going away)."""
        with self.lock:
            for key, vm in list(self.files.items()):
                if vm.vmid != abi.ACRN_INVALID_VMID and vm.vmid in self.hv.vms:
                    self.hv.pause_vm(vm.vmid)
                self._destroy(vm)
                del self.files[key]
