"""The emulated ACRN hypervisor: User VMs, their EPTs and vCPUs, I/O requests, MSIs.

What is modelled, each after the ACRN source it follows:

* VM life cycle (``hcall_create_vm``/``start``/``pause``/``reset``/``destroy``):
  CREATED -> RUNNING -> PAUSED -> (reset: CREATED) -> POWEROFF, a hypercall in
  the wrong state answers -1 (the HSM passes it on: errno EPERM). VM ids come
  from :attr:`Hypervisor.max_vms` post-launched configurations whose vCPUs may
  run on pCPUs 1..n (``cpu_affinity`` must be a subset; its bits give the vCPU
  count).
* EPT (``hcall_set_vm_memory_regions``): MR_ADD needs the Service VM address
  present in the Service VM's EPT, MR_DEL needs the whole guest range present
  (else -EINVAL); adding over a present page keeps the old entry (the
  hypervisor logs "already present"; recorded as a violation).
* A vCPU's memory access walks the EPT: allowed accesses go to the Service VM
  page behind; an access the rights refuse (or a hole) is an EPT violation
  that becomes an MMIO request, or a WP request (type 3) for a write to an R-X
  page (``ept_violation_vmexit_handler``). Port I/O becomes a PORTIO request,
  except what vPCI handles itself (``vpci_pio_cfgaddr_*``/``cfgdata_*``: the
  0xCF8 latch, and data accesses with the latch disabled or misaligned).
* A request goes into the vCPU's slot of the shared buffer only when the slot
  is FREE (else ``acrn_insert_request`` fails and the vCPU takes a #GP); the
  slot goes PENDING, the HSM upcall runs, the vCPU waits for its IOREQ event;
  on COMPLETE it copies the value back and frees the slot
  (``dm_emulate_io_complete``).
* MSIs (``hcall_inject_msi``/``vlapic_inject_msi``): address bits 31:20 must be
  0xFEE, else -1; an accepted message goes to the vLAPICs of its destination
  (:mod:`gvt_acrngt.emulated.vlapic`), which set the vector in their IRR
  unless it is set already: identical interrupts coalesce until the guest
  takes them, highest vector first.

Where the real hypervisor would let a device model's mistake pass silently
(a vCPU resumed with a request that was never completed, completion of a slot
it never saw), the vCPU stops with :class:`~gvt_core.errors.GuestExitError`
and the machine records a :class:`Violation`. A vCPU waits at most
``request_timeout`` seconds for a completion (the real one waits forever).
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable

import attrs

from gvt_acrngt import abi
from gvt_acrngt.emulated.ept import Ept
from gvt_acrngt.emulated.service_vm import ServiceVmMemory
from gvt_acrngt.emulated.vlapic import MsiStats, VLapic, deliver
from gvt_core.errors import GuestExitError, VgpuStateError
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE
from gvt_core.mpt.ops import Msi

R, W, X = abi.ACRN_MEM_ACCESS_READ, abi.ACRN_MEM_ACCESS_WRITE, abi.ACRN_MEM_ACCESS_EXEC
MASKS = tuple((1 << (8 * n)) - 1 for n in range(9))
#: vPCI keeps the enable bit, bus/device/function and register of a 0xCF8 write
#: (``cfg_addr->value = val & ~0x7f000003``).
VPCI_ADDR_KEEP = ~0x7F00_0003 & 0xFFFF_FFFF
#: the hypervisor's MR_ADD / MR_DEL.
MR_ADD, MR_DEL = abi.ACRN_MEM_REGION_ADD, abi.ACRN_MEM_REGION_DEL
#: post-launched VM configurations: ``CONFIG_MAX_VM_NUM`` of ACRN's shipped scenarios
#: (16) less the Service VM (vmid 0).
MAX_USER_VMS = 15


class VmState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    POWEROFF = "powered off"


@attrs.frozen
class Violation:
    """A device-model mistake the emulated ACRN caught (see the module docstring)."""

    vmid: int
    kind: str
    detail: str


@attrs.frozen
class IoReq:
    """One access a vCPU could not complete on its own."""

    type: int
    direction: int
    address: int
    size: int
    value: int = 0


@attrs.define(eq=False)
class Region:
    """One ``vm_memory_region_op``."""

    type: int
    attr: int
    gpa: int
    service_pa: int
    size: int


class Vcpu:
    """One vCPU: executes one access at a time, waits on its IOREQ event."""

    def __init__(self, vm: UserVm, index: int) -> None:
        self.vm = vm
        self.index = index
        #: one instruction at a time: accesses from several threads on one vCPU queue up.
        self.lock = threading.Lock()
        self.ioreq_event = threading.Event()
        self.waiting = False
        #: a violation that makes the vCPU's current or next request fail.
        self.poisoned = ""
        self.requests = 0
        self.vlapic = VLapic(index)


class UserVm:
    """A post-launched VM as the hypervisor holds it."""

    def __init__(self, vmid: int, vcpus: int, name: str) -> None:
        self.vmid = vmid
        self.name = name
        self.state = VmState.CREATED
        self.ept = Ept()
        self.vcpus = [Vcpu(self, i) for i in range(vcpus)]
        #: address of the shared request buffer page (``io_shared_page``), or 0.
        self.io_page = 0
        self.slots: abi.acrn_io_request_buffer | None = None
        #: vPCI's 0xCF8 latch.
        self.vpci_addr = 0
        #: signalled when a vLAPIC gains a vector or the VM ends (guest models wait on it).
        self.msi_ready = threading.Condition()
        self.msi_stats = MsiStats()
        #: why the VM stopped for good (destroyed), for its blocked vCPUs.
        self.ended = ""

    @property
    def vcpu_num(self) -> int:
        return len(self.vcpus)


class Hypervisor:
    """The hypercall side and the guest side of the emulated ACRN."""

    def __init__(
        self,
        memory: ServiceVmMemory,
        lock: threading.RLock,
        violation: Callable[[Violation], None],
        max_vms: int = MAX_USER_VMS,
        pcpus: int = 4,
        request_timeout: float = 30.0,
    ) -> None:
        if not 1 <= max_vms <= MAX_USER_VMS or not 2 <= pcpus <= 64:
            raise ValueError(f"max_vms 1..{MAX_USER_VMS} and pcpus 2..64, got {max_vms} "
                             f"and {pcpus}")
        self.memory = memory
        self.lock = lock
        self.violation = violation
        self.max_vms = max_vms
        #: post-launched VMs may use every pCPU but the Service VM's pCPU 0.
        self.post_launched_affinity = ((1 << pcpus) - 1) & ~1
        self.request_timeout = request_timeout
        self.vms: dict[int, UserVm] = {}
        #: the HSM's upcall handler (``acrn_setup_intr_handler``): vmid -> None.
        self.upcall: Callable[[int], None] = lambda vmid: None

    def _record(self, vm: UserVm | None, kind: str, detail: str) -> None:
        self.violation(Violation(vm.vmid if vm is not None else -1, kind, detail))

    def vm(self, vmid: int) -> UserVm | None:
        return self.vms.get(vmid)

    # --- hypercalls (the caller holds self.lock) -------------------------------------
    def create_vm(self, cpu_affinity: int, name: str) -> tuple[int, int, int]:
        """(ret, vmid, vcpu_num); vmid ACRN_INVALID_VMID on failure."""
        if cpu_affinity & ~self.post_launched_affinity:
            return -1, abi.ACRN_INVALID_VMID, 0
        free = [i for i in range(1, self.max_vms + 1) if i not in self.vms]
        if not free:
            return 0, abi.ACRN_INVALID_VMID, 0
        affinity = cpu_affinity or self.post_launched_affinity
        vm = UserVm(free[0], affinity.bit_count(), name or f"vm{free[0]}")
        self.vms[vm.vmid] = vm
        return 0, vm.vmid, vm.vcpu_num

    def set_ioreq_buffer(self, vmid: int, service_pa: int) -> int:
        vm = self.vms.get(vmid)
        if vm is None or vm.state is not VmState.CREATED:
            return -1
        if not self.memory.is_mapped(service_pa, PAGE_SIZE):
            vm.io_page = 0
            return -1
        address = self.memory.address_of(service_pa >> PAGE_SHIFT)
        if address is None:
            return -1
        vm.io_page = address
        vm.slots = abi.acrn_io_request_buffer.from_address(address)
        for slot in vm.slots.req_slot:
            slot.processed = abi.ACRN_IOREQ_STATE_FREE
        return 0

    def start_vm(self, vmid: int) -> int:
        vm = self.vms.get(vmid)
        if vm is None or vm.state is not VmState.CREATED or not vm.io_page:
            return -1
        vm.state = VmState.RUNNING
        return 0

    def pause_vm(self, vmid: int) -> int:
        vm = self.vms.get(vmid)
        if vm is None or vm.state is VmState.POWEROFF:
            return -1
        vm.state = VmState.PAUSED
        return 0

    def reset_vm(self, vmid: int) -> int:
        vm = self.vms.get(vmid)
        if vm is None or vm.state is not VmState.PAUSED:
            return -1
        if vm.slots is not None:
            for slot in vm.slots.req_slot:
                slot.processed = abi.ACRN_IOREQ_STATE_FREE
        vm.state = VmState.CREATED
        with vm.msi_ready:
            for vcpu in vm.vcpus:
                vcpu.vlapic.reset()
        for vcpu in vm.vcpus:
            vcpu.ioreq_event.set()  # a vCPU blocked in a request sees the reset
        return 0

    def destroy_vm(self, vmid: int) -> int:
        vm = self.vms.get(vmid)
        if vm is None or vm.state is not VmState.PAUSED:
            return -1
        vm.state = VmState.POWEROFF
        vm.ended = f"User VM {vmid} was destroyed"
        vm.ept.clear()
        vm.io_page = 0
        vm.slots = None
        del self.vms[vmid]
        for vcpu in vm.vcpus:
            vcpu.ioreq_event.set()
        with vm.msi_ready:
            for vcpu in vm.vcpus:
                vcpu.vlapic.reset()
            vm.msi_ready.notify_all()
        return 0

    def set_memory_regions(self, vmid: int, regions: list[Region]) -> int:
        vm = self.vms.get(vmid)
        if vm is None or vm.state is VmState.POWEROFF:
            return -1
        ret = -1
        for region in regions:
            ret = self._set_region(vm, region)
            if ret < 0:
                break
        return ret

    def _set_region(self, vm: UserVm, region: Region) -> int:
        einval = -22
        if region.size & PAGE_MASK:
            return einval
        gfn = -(-region.gpa // PAGE_SIZE)  # the page tables round addresses up
        pages = region.size >> PAGE_SHIFT
        if region.type == MR_ADD:
            if not self.memory.is_mapped(region.service_pa, region.size):
                return einval
            frame = -(-region.service_pa // PAGE_SIZE)
            kept = vm.ept.add(gfn, pages, frame, region.attr)
            for g, n in kept:
                self._record(vm, "EPT entry already present",
                             f"MR_ADD of guest frames {g:#x}+{n} kept their old mapping")
            return 0
        if not vm.ept.present(gfn, pages):
            return einval
        vm.ept.delete(gfn, pages)
        return 0

    def notify_request_finish(self, vmid: int, vcpu_id: int) -> int:
        vm = self.vms.get(vmid)
        if vm is None or vm.state is VmState.POWEROFF or not vm.io_page:
            return -1
        if vcpu_id >= vm.vcpu_num:
            return -1
        vm.vcpus[vcpu_id].ioreq_event.set()
        return 0

    def inject_msi(self, vmid: int, address: int, data: int) -> int:
        vm = self.vms.get(vmid)
        if vm is None or vm.state is VmState.POWEROFF:
            return -1
        if (address >> 20) & 0xFFF != abi.MSI_ADDR_BASE:
            vm.msi_stats.refused += 1
            return -1
        with vm.msi_ready:
            lapics = [vcpu.vlapic for vcpu in vm.vcpus]
            if deliver(lapics, address & 0xFFFF_FFFF, data & 0xFFFF_FFFF, vm.msi_stats):
                vm.msi_ready.notify_all()
        return 0

    # --- the guest side -----------------------------------------------------------------
    def _runnable(self, vm: UserVm) -> None:
        if vm.state is not VmState.RUNNING:
            why = vm.ended or f"User VM {vm.vmid} ({vm.name}) is {vm.state.value}"
            raise VgpuStateError(f"{why}: its vCPUs do not run")

    def writable(self, vm: UserVm, gpa: int) -> bool:
        """Whether the EPT lets the vCPU store to ``gpa`` without an exit."""
        with self.lock:
            extent = vm.ept.lookup(gpa >> PAGE_SHIFT)
            return extent is not None and bool(extent.attr & W)

    def access_memory(self, vcpu: Vcpu, gpa: int, data: bytearray, write: bool) -> None:
        """An access of ``len(data)`` bytes within one guest page: straight to memory
        where the EPT allows it, else one MMIO (or WP) request of that size at that
        address (as the hypervisor decodes one instruction), or, for a bulk copy
        (more than 8 bytes or an odd size), one per naturally aligned piece."""
        vm = vcpu.vm
        size = len(data)
        with self.lock:
            self._runnable(vm)
            extent = vm.ept.lookup(gpa >> PAGE_SHIFT)
            rights = extent.attr & abi.ACRN_MEM_ACCESS_RIGHT_MASK if extent is not None else 0
            if extent is not None and rights & (W if write else R):
                frame = extent.frame + ((gpa >> PAGE_SHIFT) - extent.gfn)
                page = self.memory.page(frame)
                off = gpa & PAGE_MASK
                if page is None:  # a BAR page nothing backs: reads float high
                    if not write:
                        data[:] = b"\xff" * size
                    return
                if write:
                    page[off : off + size] = data
                else:
                    data[:] = page[off : off + size]
                return
        req_type = abi.ACRN_IOREQ_TYPE_MMIO
        if write and rights & (R | X) == (R | X):
            req_type = abi.ACRN_IOREQ_TYPE_WP  # a write to an R-X page
        direction = abi.ACRN_IOREQ_DIR_WRITE if write else abi.ACRN_IOREQ_DIR_READ
        pos = 0
        while pos < size:
            n = size if size in (1, 2, 4, 8) else 8
            while n != size and ((gpa + pos) % n or n > size - pos):
                n >>= 1
            piece = data[pos : pos + n]
            value = int.from_bytes(piece, "little") if write else 0
            got = self.request(vcpu, IoReq(req_type, direction, gpa + pos, n, value))
            if not write:
                data[pos : pos + n] = (got & MASKS[n]).to_bytes(n, "little")
            pos += n

    def port_io(self, vcpu: Vcpu, port: int, size: int, value: int, write: bool) -> int:
        """One ``in``/``out``: vPCI's own ports first, everything else to the device model."""
        vm = vcpu.vm
        with self.lock:
            self._runnable(vm)
            if port == abi.PCI_CONFIG_ADDRESS_PORT:
                if size != 4:
                    return MASKS[size] if not write else 0  # vPCI: not a CONFIG_ADDRESS access
                if not write:
                    return vm.vpci_addr
                vm.vpci_addr = value & VPCI_ADDR_KEEP
                # no device the hypervisor emulates sits at that BDF: the DM decides
            elif abi.PCI_CONFIG_DATA_PORT <= port < abi.PCI_CONFIG_DATA_PORT + 4:
                latch, vm.vpci_addr = vm.vpci_addr, 0
                offset = (latch & 0xFC) + (port - abi.PCI_CONFIG_DATA_PORT)
                aligned = size in (1, 2, 4) and not offset & (size - 1)
                if not latch & abi.PCI_CONFIG_ENABLE or not aligned:
                    return MASKS[size] if not write else 0
        direction = abi.ACRN_IOREQ_DIR_WRITE if write else abi.ACRN_IOREQ_DIR_READ
        return self.request(
            vcpu, IoReq(abi.ACRN_IOREQ_TYPE_PORTIO, direction, port, size, value if write else 0)
        ) & MASKS[size]

    def request(self, vcpu: Vcpu, req: IoReq) -> int:
        """``acrn_insert_request`` + ``dm_emulate_io_complete``: the value read."""
        vm = vcpu.vm
        with self.lock:
            self._runnable(vm)
            if vcpu.poisoned:
                why, vcpu.poisoned = vcpu.poisoned, ""
                raise GuestExitError(vm.name, "ACRN protocol violation", why)
            slots = vm.slots
            if slots is None:
                raise GuestExitError(vm.name, "#GP", "the VM has no I/O request buffer")
            slot = slots.req_slot[vcpu.index]
            if slot.processed != abi.ACRN_IOREQ_STATE_FREE:
                raise GuestExitError(
                    vm.name, "#GP",
                    f"vCPU {vcpu.index}'s request slot is in state {slot.processed}, not FREE: "
                    "acrn_insert_request failed and the hypervisor injected #GP(0)",
                )
            slot.type = req.type
            reqs = slot.reqs
            if req.type in (abi.ACRN_IOREQ_TYPE_MMIO, abi.ACRN_IOREQ_TYPE_WP):
                m = reqs.mmio_request
                m.direction, m.address, m.size, m.value = (
                    req.direction, req.address, req.size, req.value)
            else:
                p = reqs.pio_request
                p.direction, p.address, p.size, p.value = (
                    req.direction, req.address, req.size, req.value & 0xFFFF_FFFF)
            slot.completion_polling = 0
            vcpu.requests += 1
            slot.processed = abi.ACRN_IOREQ_STATE_PENDING
            vcpu.waiting = True
            self.upcall(vm.vmid)
        try:
            woke = vcpu.ioreq_event.wait(self.request_timeout)
            vcpu.ioreq_event.clear()
        finally:
            vcpu.waiting = False
        with self.lock:
            if vm.ended:
                raise GuestExitError(
                    vm.name, "VM destroyed",
                    f"{vm.ended} while vCPU {vcpu.index} waited for its request to "
                    f"{req.address:#x}",
                )
            if vm.state is VmState.CREATED:
                raise VgpuStateError(f"User VM {vm.vmid} ({vm.name}) was reset")
            if not woke:
                detail = (
                    f"vCPU {vcpu.index} waited {self.request_timeout:g} s for its request to "
                    f"{req.address:#x} (state {slot.processed}); the real hypervisor waits forever"
                )
                self._record(vm, "request never completed", detail)
                raise GuestExitError(vm.name, "ACRN protocol violation", detail)
            if slot.processed != abi.ACRN_IOREQ_STATE_COMPLETE:
                detail = (
                    f"vCPU {vcpu.index} was signalled while its request was in state "
                    f"{slot.processed}, not COMPLETE"
                )
                self._record(vm, "resumed before completion", detail)
                raise GuestExitError(vm.name, "ACRN protocol violation", detail)
            if req.type in (abi.ACRN_IOREQ_TYPE_MMIO, abi.ACRN_IOREQ_TYPE_WP):
                value = slot.reqs.mmio_request.value
            else:
                value = slot.reqs.pio_request.value
            slot.processed = abi.ACRN_IOREQ_STATE_FREE
            if vm.state is VmState.PAUSED:
                raise VgpuStateError(
                    f"User VM {vm.vmid} ({vm.name}) was paused while vCPU {vcpu.index} waited"
                )
            if vcpu.poisoned:
                why, vcpu.poisoned = vcpu.poisoned, ""
                raise GuestExitError(vm.name, "ACRN protocol violation", why)
            return value & MASKS[min(req.size, 8)] if req.size else 0

    def wait_msi(self, vcpu: Vcpu, timeout: float) -> Msi | None:
        """The vCPU takes its highest pending interrupt, waiting up to ``timeout``
        seconds for one; None when none came (or the VM ended)."""
        vm, lapic = vcpu.vm, vcpu.vlapic
        with vm.msi_ready:
            if not lapic.irr:
                vm.msi_ready.wait_for(lambda: bool(lapic.irr) or bool(vm.ended),
                                      timeout=max(timeout, 0.0))
            return lapic.take()
