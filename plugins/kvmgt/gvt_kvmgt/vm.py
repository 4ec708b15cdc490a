"""A KVM guest run by this user-space VMM, in the role QEMU + KVMGT play for a vGPU.

One :class:`KvmGuestVm` owns a KVM VM: guest RAM (anonymous memory that KVM
faults in on use; pages are pinned with ``mlock`` when they are DMA-mapped or
their frame is asked for, as KVMGT pins with ``vfio_pin_pages`` at map time
rather than all of RAM up front), the firmware region with the stub, the in-kernel
irqchip and up to :data:`~gvt_kvmgt.stub.MAX_VCPUS` vCPUs. Each vCPU is run by
whichever thread asks it to do something (a :class:`~gvt_kvmgt.port.KvmGuestPort`
call, a guest program): that thread is the vCPU thread while it runs, and
trapped accesses reach the device model on it.

Exit dispatch:

* MMIO inside the vGPU's BAR0 -> the core's per-vGPU accessors
  (``ops.mmio_accessors``, bound when BAR0 is placed, dropped at detach; the
  fast path is one range check and one call);
* MMIO inside a range the core mapped with ``map_gfn_to_mfn`` (the vGPU's
  aperture slice of BAR2) -> those host frames through the host's system
  memory, as QEMU reaches the slice through the VFIO BAR2 region's mmap;
* MMIO inside guest RAM -> a write to a write-tracked page (applied to RAM,
  then ``ops.page_track_write``), or an access racing a memslot update
  (served from RAM);
* MMIO elsewhere -> unassigned: reads all ones, writes dropped (counted);
* port I/O 0xCF8/0xCFC-0xCFF -> PCI configuration mechanism #1 (the vGPU at
  00:02.0, everything else absent) -> ``ops.emulate_cfg_read/write``;
* the stub's private ports; other ports are unassigned like MMIO;
* shutdown, failed entry, internal errors, guest exceptions ->
  :class:`~gvt_core.errors.GuestExitError` naming the exit and address.

BAR0 is learned as QEMU learns it: from the config space itself. A config
write to COMMAND or BAR0 marks the mapping stale; before the next MMIO exit
that needs it, BAR0 and COMMAND are read back through ``emulate_cfg_read``
and the trap range is placed (memory decoding on) or removed. Reading back
lazily keeps the core's call stream exactly the guest's own accesses until
the guest touches memory space.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import mmap
import threading
import time
from typing import Any

import attrs

from gvt_core.errors import (
    AddressSpaceError,
    DmaFault,
    GuestExitError,
    GuestMemoryError,
    HypervisorCallError,
    VgpuStateError,
    VmCreateError,
)
from gvt_core.guest.port import (
    MAX_PENDING_MSIS,
    VGPU_BUS,
    VGPU_DEVICE,
    VGPU_FUNCTION,
    HeldResources,
)
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE, buffer_address
from gvt_core.mpt.ops import CoreOps, HostContext, Msi
from gvt_kvmgt import abi, hostmem, stub
from gvt_kvmgt.dma import SIZE_2M, DmaTable, PinAccount
from gvt_kvmgt.kvm import KvmSystem, KvmVcpu
from gvt_kvmgt.memslots import MemslotMap

PCI_CONFIG_ADDRESS = 0xCF8
PCI_CONFIG_DATA = 0xCFC
PCI_CONFIG_ENABLE = 1 << 31
#: AMD's extension of mechanism #1: bits 27:24 of CONFIG_ADDRESS select the 4 KiB
#: extended register block, so the whole PCIe config space is reachable.
PCI_CONFIG_EXT_SHIFT = 24
VGPU_BDF = (VGPU_BUS << 8) | (VGPU_DEVICE << 3) | VGPU_FUNCTION

#: all-ones value of each access size 0..8 bytes.
MASKS = tuple((1 << (8 * n)) - 1 for n in range(9))
#: progress values one guest program run keeps (PROGRAM_STEP_PORT writes); a
#: program writing more has them counted in ``steps_dropped`` only.
MAX_PROGRAM_STEPS = 4096

# kvm_run indices for the typed views (asserted to be aligned)
_R_REASON = abi.RUN_EXIT_REASON // 4
_R_MMIO_ADDR = abi.RUN_MMIO_PHYS_ADDR // 8
_R_MMIO_DATA = abi.RUN_MMIO_DATA // 8
_R_MMIO_DATA32 = abi.RUN_MMIO_DATA // 4
_R_MMIO_LEN = abi.RUN_MMIO_LEN // 4
_R_MMIO_WRITE = abi.RUN_MMIO_IS_WRITE
_R_IO_DIR = abi.RUN_IO_DIRECTION
_R_IO_SIZE = abi.RUN_IO_SIZE
_R_IO_PORT = abi.RUN_IO_PORT // 2
_R_IO_COUNT = abi.RUN_IO_COUNT // 4
_R_IO_DATA_OFFSET = abi.RUN_IO_DATA_OFFSET // 8
assert abi.RUN_EXIT_REASON % 4 == 0 and abi.RUN_MMIO_PHYS_ADDR % 8 == 0
assert abi.RUN_MMIO_DATA % 8 == 0 and abi.RUN_MMIO_LEN % 4 == 0 and abi.RUN_IO_PORT % 2 == 0
assert abi.RUN_IO_COUNT % 4 == 0 and abi.RUN_IO_DATA_OFFSET % 8 == 0

_vm_ids = itertools.count(1)


@attrs.define(eq=False)
class Attachment:
    """The vGPU bound to a VM and what the backend holds for it."""

    vgpu: Any
    ops: CoreOps
    dma: DmaTable


@attrs.frozen
class ProgramStatus:
    """How a guest program run on a vCPU ended."""

    #: the port it stopped on: PROGRAM_DONE_PORT or PROGRAM_FAIL_PORT.
    port: int
    #: the value written there (the failing step for a failure).
    value: int
    #: every progress value written to PROGRAM_STEP_PORT, in order.
    steps: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return self.port == stub.PROGRAM_DONE_PORT


@attrs.define(eq=False)
class _Pending:
    seq: int
    msi: Msi
    vector: int


class VcpuRunner:
    """One vCPU: its KVM fd, its mailbox and the exit loop."""

    def __init__(self, vm: KvmGuestVm, vcpu: KvmVcpu) -> None:
        self.vm = vm
        self.vcpu = vcpu
        self.index = vcpu.index
        self.lock = threading.Lock()
        off = stub.vcpu_mailbox(self.index) - stub.FW_BASE
        self.mailbox = vm.fw_view[off : off + stub.MAILBOX_SIZE]
        self.mailbox_u64 = self.mailbox.cast("Q")
        #: interrupts taken so far that the VMM has looked at.
        self.irqs_seen = 0
        self.irqs_lost = 0
        #: MSIs the guest took on this vCPU, not yet returned by wait_msi.
        self.delivered: list[_Pending] = []
        self.broken: GuestExitError | None = None
        #: progress values a guest program reported, at most MAX_PROGRAM_STEPS.
        self.steps: list[int] = []
        self.steps_dropped = 0
        self.exits = 0

    # --- state -------------------------------------------------------------------------
    def setup(self) -> None:
        v = self.vcpu
        v.set_cpuid2(self.vm.system.supported_cpuid())
        sregs = v.get_sregs()
        stub.long_mode_sregs(sregs, self.index)
        v.set_sregs(sregs)
        self.enter(stub.FW_BASE + stub.FW_CODE + stub.STUB_ENTRY)
        if self.index:
            v.set_mp_state(abi.KVM_MP_STATE_RUNNABLE)
        with self.lock:
            self.mailbox_u64[stub.MB_COUNT // 8] = 0
            self._run()

    def enter(self, rip: int, rdi: int = 0) -> None:
        regs = abi.kvm_regs()
        stub.entry_regs(regs, self.index, rip=rip, rdi=rdi)
        self.vcpu.set_regs(regs)

    def _recover(self) -> None:
        """Put a vCPU that stopped abnormally back at the stub's entry."""
        self.broken = None
        # finish any exit left half-served (KVM completes it on the next KVM_RUN;
        # immediate_exit makes that run return before guest code executes)
        run = self.vcpu.run
        run.immediate_exit = 1
        try:
            fcntl.ioctl(self.vcpu.fd, abi.KVM_RUN)
        except OSError:
            pass
        finally:
            run.immediate_exit = 0
        # no ctypes view of kvm_run may outlive this frame in a traceback: it would
        # keep the mapping exported and make closing the vCPU fail
        del run
        sregs = self.vcpu.get_sregs()
        stub.long_mode_sregs(sregs, self.index)
        self.vcpu.set_sregs(sregs)
        self.enter(stub.FW_BASE + stub.FW_CODE + stub.STUB_ENTRY)
        self.mailbox_u64[stub.MB_COUNT // 8] = 0
        self._run()

    # --- commands ------------------------------------------------------------------------
    def execute(self, entries: list[tuple[int, int, int, int, int]]) -> list[int]:
        """Run micro-ops on the stub; returns the ``value`` field of each afterwards."""
        mb = self.mailbox
        pack = stub.ENTRY.pack_into
        base = stub.MB_ENTRIES
        with self.lock:
            if self.broken is not None:
                self._recover()
            for i, entry in enumerate(entries):
                pack(mb, base + i * stub.ENTRY_SIZE, *entry)
            self.mailbox_u64[stub.MB_COUNT // 8] = len(entries)
            self._run_guarded()
            u64 = self.mailbox_u64
            first = base // 8 + 2
            return [u64[first + 4 * i] for i in range(len(entries))]

    def run_program(self, entry: int, arg: int) -> ProgramStatus:
        """Run a flat guest program from ``entry`` (first argument ``arg``) until it
        reports through the program ports; then the vCPU goes back to the stub."""
        with self.lock:
            if self.broken is not None:
                self._recover()
            self.steps = []
            self.steps_dropped = 0
            self.enter(entry, arg)
            port, value = self._run_guarded(program=True)
            status = ProgramStatus(port, value, tuple(self.steps))
            self.collect_irqs()
            self.broken = GuestExitError(self.vm.name, "program end", "re-enter the stub")
            self._recover()
            return status

    # --- the exit loop -----------------------------------------------------------------------
    def _run_guarded(self, program: bool = False) -> tuple[int, int]:
        """``_run``, marking the vCPU for re-entry at the stub when anything (a device-model
        error included) left it in the middle of a command."""
        try:
            return self._run(program)
        except BaseException as exc:
            if self.broken is None:
                self.broken = GuestExitError(
                    self.vm.name, "exit handler error", f"{type(exc).__name__}: {exc}"
                )
            raise

    def _run(self, program: bool = False) -> tuple[int, int]:
        # Everything the BAR0 fast path touches is a local: the kvm_run views, the
        # constants, and ``trap`` ([lo, hi, write, read], updated in place by the VM
        # when BAR0 moves or the vGPU leaves). A 4-byte store (the common register
        # write) reads its data through the u32 view and needs no mask.
        fd = self.vcpu.fd
        ioctl = fcntl.ioctl
        kvm_run = abi.KVM_RUN
        v = self.vcpu
        u8, u16, u32, u64 = v.run_u8, v.run_u16, v.run_u32, v.run_u64
        vm = self.vm
        trap = vm.trap
        mmio_slow = vm.mmio_slow
        exit_mmio, exit_io = abi.KVM_EXIT_MMIO, abi.KVM_EXIT_IO
        r_reason, r_addr, r_len, r_write = _R_REASON, _R_MMIO_ADDR, _R_MMIO_LEN, _R_MMIO_WRITE
        r_data, r_data32 = _R_MMIO_DATA, _R_MMIO_DATA32
        done_port = stub.DONE_PORT
        masks = MASKS
        exits = 0
        try:
            while True:
                try:
                    ioctl(fd, kvm_run)
                except InterruptedError:
                    continue
                except OSError as exc:
                    raise HypervisorCallError("kvmgt", "KVM_RUN", exc.errno or 0) from exc
                exits += 1
                if u32[r_reason] == exit_mmio:
                    addr = u64[r_addr]
                    if trap[0] <= addr < trap[1]:
                        n = u32[r_len]
                        if u8[r_write]:
                            if n == 4:
                                trap[2](addr, u32[r_data32], 4)
                            else:
                                trap[2](addr, u64[r_data] & masks[n], n)
                        else:
                            u64[r_data] = trap[3](addr, n) & masks[n]
                        continue
                    mmio_slow(self, addr, u32[r_len], u8[r_write])
                    continue
                reason = u32[r_reason]
                if reason == exit_io:
                    port = u16[_R_IO_PORT]
                    if port == done_port and not program:
                        return port, 0
                    stop = self._pio(port)
                    if stop is not None:
                        return stop
                    continue
                self._other_exit(reason)
        finally:
            self.exits += exits

    def _pio(self, port: int) -> tuple[int, int] | None:
        v = self.vcpu
        u8 = v.run_u8
        size, count = u8[_R_IO_SIZE], v.run_u32[_R_IO_COUNT]
        offset = v.run_u64[_R_IO_DATA_OFFSET]
        out = u8[_R_IO_DIR] == abi.KVM_EXIT_IO_OUT
        buf = v.run_view
        if port >= stub.DONE_PORT and port <= stub.PROGRAM_DONE_PORT:
            value = int.from_bytes(buf[offset : offset + size], "little") if out else 0
            return self._private_port(port, value, out)
        vm = self.vm
        for i in range(count):
            at = offset + i * size
            if out:
                vm.port_out(port, int.from_bytes(buf[at : at + size], "little"), size)
            else:
                buf[at : at + size] = vm.port_in(port, size).to_bytes(size, "little")
        return None

    def _private_port(self, port: int, value: int, out: bool) -> tuple[int, int] | None:
        if port == stub.FAULT_PORT:
            u64 = self.mailbox_u64
            vec, err = u64[stub.MB_FAULT_VEC // 8], u64[stub.MB_FAULT_ERR // 8]
            rip, cr2 = u64[stub.MB_FAULT_RIP // 8], u64[stub.MB_FAULT_CR2 // 8]
            self._fail(
                "guest exception",
                f"vector {vec} error code {err:#x} at rip {rip:#x} (cr2 {cr2:#x}) on vCPU {self.index}",
            )
        if port == stub.BADOP_PORT:
            self._fail("stub error", f"the stub met an unknown micro-op on vCPU {self.index}")
        if not out:
            return None  # reads of private ports: nothing behind them; data left as is
        if port == stub.PROGRAM_STEP_PORT:
            if len(self.steps) < MAX_PROGRAM_STEPS:
                self.steps.append(value)
            else:
                self.steps_dropped += 1
            return None
        if port in (stub.PROGRAM_FAIL_PORT, stub.PROGRAM_DONE_PORT):
            return port, value
        return None

    def _fail(self, reason: str, detail: str) -> None:
        err = GuestExitError(self.vm.name, reason, detail)
        self.broken = err
        raise err

    def _other_exit(self, reason: int) -> None:
        if reason in (abi.KVM_EXIT_IRQ_WINDOW_OPEN, abi.KVM_EXIT_INTR):
            return
        name = abi.EXIT_NAMES.get(reason, f"exit reason {reason}")
        where = ""
        with contextlib.suppress(HypervisorCallError):
            where = f" at rip {self.vcpu.get_regs().rip:#x}"
        self._fail(f"KVM_EXIT_{name}", f"{self._exit_detail(reason)}{where} on vCPU {self.index}")

    def _exit_detail(self, reason: int) -> str:
        """What kvm_run says about an abnormal exit (its own frame: the ctypes view of
        kvm_run must not stay alive in the traceback of the error raised for it)."""
        run = self.vcpu.run
        if reason == abi.KVM_EXIT_FAIL_ENTRY:
            detail = f"hardware entry failure reason {run.exit.fail_entry.hardware_entry_failure_reason:#x}"
        elif reason == abi.KVM_EXIT_INTERNAL_ERROR:
            ie = run.exit.internal
            data = ", ".join(f"{ie.data[i]:#x}" for i in range(min(ie.ndata, 16)))
            detail = f"suberror {ie.suberror} data [{data}]"
        elif reason == abi.KVM_EXIT_SYSTEM_EVENT:
            detail = f"system event type {run.exit.system_event.type}"
        elif reason == abi.KVM_EXIT_SHUTDOWN:
            detail = "the vCPU shut down (triple fault)"
        elif reason == abi.KVM_EXIT_HLT:
            detail = "HLT left the in-kernel irqchip"
        else:
            detail = "unexpected exit"
        return detail

    # --- interrupts -----------------------------------------------------------------------------
    def collect_irqs(self) -> None:
        """Match the vectors the guest took since the last look to injected MSIs."""
        u64 = self.mailbox_u64
        count = u64[stub.MB_IRQ_COUNT // 8]
        seen = self.irqs_seen
        if count == seen:
            return
        ring = stub.MB_IRQ_RING_SIZE
        if count - seen > ring:
            self.irqs_lost += count - seen - ring
            seen = count - ring
        vectors = [u64[stub.MB_IRQ_RING // 8 + (i % ring)] & 0xFF for i in range(seen, count)]
        self.irqs_seen = count
        self.vm.msis_taken(self, vectors)


class KvmGuestVm:
    """A VM this backend launched (``create_vm``); see the module docstring."""

    def __init__(
        self,
        system: KvmSystem,
        host: HostContext,
        mem_size: int,
        name: str,
        vcpus: int = 1,
        max_dma_page: int = PAGE_SIZE,
        pin_quota: int | None = None,
    ) -> None:
        if type(mem_size) is not int or mem_size <= 0 or mem_size % PAGE_SIZE:
            raise VmCreateError(
                "kvmgt", name, mem_size, "guest RAM must be a positive multiple of 4096 bytes"
            )
        if mem_size > stub.RAM_LIMIT:
            raise VmCreateError(
                "kvmgt", name, mem_size,
                f"kvmgt guests have at most {stub.RAM_LIMIT >> 20} MiB of RAM (below the "
                "3 GiB hole holding BARs and the APICs)",
            )
        if not 1 <= vcpus <= stub.MAX_VCPUS:
            raise VmCreateError(
                "kvmgt", name, mem_size,
                f"a kvmgt guest has 1..{stub.MAX_VCPUS} vCPUs, asked for {vcpus}",
            )
        self.system = system
        self.host = host
        self.mem_size = mem_size
        self.name = name
        self.max_dma_page = max_dma_page
        self.kvm = system.create_vm()
        self.vm_id = next(_vm_ids)
        #: guest pages pinned for DMA, against this VM's quota (pages).
        self.pins = PinAccount(
            f"{name!r}#{self.vm_id}", None if pin_quota is None else pin_quota >> PAGE_SHIFT
        )
        self._closed = False
        self._ended = threading.Event()
        self.lock = threading.RLock()
        #: [lo, hi, write(gpa, value, size), read(gpa, size)]: the BAR0 trap range and
        #: the vGPU's bound MMIO accessors the exit fast path calls. Updated in place
        #: (one slice assignment) so running exit loops see it; never holds None: with
        #: nothing trapped the entries are the unassigned-access handlers.
        self.trap: list[Any] = [0, 0, self._unassigned_write, self._unassigned_read]
        self.attachment: Attachment | None = None
        self.bar_stale = False
        self.pci_address = 0
        self.unassigned_accesses = 0
        self.last_unassigned: tuple[str, int] | None = None
        #: guest frame ranges backed by host frames: (gfn, nr, mfn); replaced whole,
        #: so an exit loop reads a consistent tuple without the lock.
        self.gfn_maps: tuple[tuple[int, int, int], ...] = ()
        self._msi_lock = threading.Lock()
        self._msi_seq = 0
        self._pending: list[list[_Pending]] = [[] for _ in range(vcpus)]
        self.msis_injected = 0
        self.msis_coalesced = 0
        #: MSIs dropped because MAX_PENDING_MSIS were already in flight.
        self.msis_dropped = 0
        self.runners: list[VcpuRunner] = []
        try:
            self._build(vcpus)
        except BaseException:
            self.close()
            raise

    # --- construction ------------------------------------------------------------------------
    def _build(self, vcpus: int) -> None:
        kvm = self.kvm
        kvm.set_tss_addr(stub.TSS_ADDR)
        kvm.create_irqchip()
        huge = self.max_dma_page >= SIZE_2M
        extra = SIZE_2M if huge else 0
        self._ram_map = mmap.mmap(-1, self.mem_size + extra)
        raw_base = buffer_address(self._ram_map)
        self._ram_skew = (-raw_base) % SIZE_2M if huge else 0
        self.ram_base = raw_base + self._ram_skew
        self.ram = memoryview(self._ram_map)[self._ram_skew : self._ram_skew + self.mem_size]
        if huge:
            hostmem.madvise(self.ram_base, self.mem_size, hostmem.MADV_HUGEPAGE)
        self._fw_map = mmap.mmap(-1, stub.FW_SIZE)
        self.fw_view = memoryview(self._fw_map)
        stub.build_firmware(self.fw_view)
        self.page_dirs = stub.PageDirectoryPool(self.fw_view)
        kvm.set_user_memory_region(0, 0, stub.FW_BASE, stub.FW_SIZE, buffer_address(self._fw_map))
        max_slots = kvm.check_extension(abi.KVM_CAP_NR_MEMSLOTS) or 32
        self.memslots = MemslotMap(kvm, self.ram_base, self.mem_size >> PAGE_SHIFT, max_slots)
        for i in range(vcpus):
            runner = VcpuRunner(self, kvm.create_vcpu(i))
            self.runners.append(runner)
            runner.setup()

    # --- GuestVm protocol ------------------------------------------------------------------------
    def held(self) -> HeldResources:
        att = self.attachment
        if att is None:
            return HeldResources()
        return HeldResources(
            page_tracks=self.memslots.tracked_count,
            dma_maps=att.dma.maps,
            dma_pins=att.dma.pins,
            gfn_maps=len(self.gfn_maps),
            pinned_pages=att.dma.pinned_pages,
        )

    def port(self, vcpu: int = 0) -> Any:
        from gvt_kvmgt.port import KvmGuestPort

        if self.attachment is None:
            raise VgpuStateError(
                f"kvmgt guest {self.name!r} has no vGPU attached; attach one before using its port"
            )
        if not 0 <= vcpu < len(self.runners):
            raise ValueError(f"guest {self.name!r} has vCPUs 0..{len(self.runners) - 1}, not {vcpu}")
        return KvmGuestPort(self, self.runners[vcpu])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.attachment is not None:
            self.detach()
        for runner in self.runners:
            with runner.lock:
                runner.mailbox_u64.release()
                runner.mailbox.release()
                runner.vcpu.close()
        if getattr(self, "memslots", None) is not None:
            self.memslots.release()
        self.kvm.close()
        if getattr(self, "ram", None) is not None:
            self.ram.release()
            self._ram_map.close()
        if getattr(self, "fw_view", None) is not None:
            self.fw_view.release()
            self._fw_map.close()
        self._ended.set()

    def wait_ended(self, timeout: float) -> bool:
        """The stub guest never powers itself off: it ends when the VMM closes it."""
        return self._ended.wait(timeout)

    # --- binding a vGPU ------------------------------------------------------------------------------
    def attach(self, vgpu: Any) -> Attachment:
        with self.lock:
            if self.attachment is not None:
                raise VgpuStateError(
                    f"kvmgt guest {self.name!r} already has vGPU {self.attachment.vgpu.id}; "
                    "KVMGT allows one vGPU per VM"
                )
            dma = DmaTable(
                sysmem=self.host.sysmem,
                page_of=self.page,
                host_addr_of=lambda gfn: self.ram_base + (gfn << PAGE_SHIFT),
                ram_pages=self.mem_size >> PAGE_SHIFT,
                owner=f"kvmgt:{self.name}#{self.vm_id}",
                max_page=self.max_dma_page,
                account=self.pins,
            )
            att = Attachment(vgpu=vgpu, ops=self.host.ops, dma=dma)
            self.attachment = att
            self.bar_stale = False
            self._set_trap(0, 0, att)
            return att

    def detach(self) -> None:
        """Release every track, DMA mapping and pin and the BAR0 trap."""
        with self.lock:
            att = self.attachment
            if att is None:
                return
            self.memslots.untrack_all()
            att.dma.release()
            self.gfn_maps = ()
            self._set_trap(0, 0, None)
            self.bar_stale = False
            self.attachment = None
            with self._msi_lock:
                for q in self._pending:
                    q.clear()
            for r in self.runners:
                r.delivered.clear()

    # --- guest memory -------------------------------------------------------------------------------
    def check_ram(self, gpa: int, length: int, what: str) -> None:
        if length < 0:
            raise ValueError(f"a guest memory {what} needs a length >= 0, got {length}")
        if gpa < 0 or gpa + length > self.mem_size:
            raise GuestMemoryError(gpa, length, self.mem_size, what)

    def read(self, gpa: int, length: int) -> bytes:
        self.check_ram(gpa, length, "read")
        return bytes(self.ram[gpa : gpa + length])

    def write(self, gpa: int, data: bytes) -> None:
        self.check_ram(gpa, len(data), "write")
        self.ram[gpa : gpa + len(data)] = data

    def page(self, gfn: int) -> memoryview:
        return self.ram[gfn << PAGE_SHIFT : (gfn + 1) << PAGE_SHIFT]

    # --- exits that left the fast path -----------------------------------------------------------------
    def refresh_bar(self) -> None:
        """Read COMMAND and BAR0 back from the vGPU and place (or remove) the BAR0 trap.

        The config reads run without the VM lock: they take the vGPU's lock, and
        destroying a vGPU holds that lock while it detaches (which takes the VM
        lock), so holding both here in the other order could deadlock. The trap
        is placed only if the same attachment is still there afterwards.
        """
        with self.lock:
            att = self.attachment
            self.bar_stale = False
            if att is None:
                return
        ops, vgpu = att.ops, att.vgpu
        command = ops.emulate_cfg_read(vgpu, regs.PCI_COMMAND, 2)
        lo = ops.emulate_cfg_read(vgpu, regs.PCI_BASE_ADDRESS_0, 4)
        hi = 0
        if lo & regs.PCI_BASE_ADDRESS_MEM_TYPE_64:
            hi = ops.emulate_cfg_read(vgpu, regs.PCI_BASE_ADDRESS_1, 4)
        base = ((hi << 32) | lo) & ~0xF & ((1 << 64) - 1)
        with self.lock:
            if self.attachment is not att or self.bar_stale:
                return  # detached meanwhile, or the guest moved BAR0 again: later
            if command & regs.PCI_COMMAND_MEMORY and not lo & regs.PCI_BASE_ADDRESS_SPACE_IO:
                self._set_trap(base, base + regs.BAR0_SIZE, att)
            else:
                self._set_trap(0, 0, att)

    def _set_trap(self, lo: int, hi: int, att: Attachment | None) -> None:
        """Place the BAR0 trap at [lo, hi) for ``att`` (empty range or None: remove it).

        The core's accessors are bound here, once per placement, not per exit;
        a removed trap keeps the unassigned handlers in their place, so an exit
        loop racing the change drops the access instead of calling a stale vGPU.
        """
        if att is None or hi <= lo:
            self.trap[:] = [0, 0, self._unassigned_write, self._unassigned_read]
        else:
            read, write = att.ops.mmio_accessors(att.vgpu)
            self.trap[:] = [lo, hi, write, read]

    def _unassigned_write(self, addr: int, value: int, size: int) -> None:
        self.unassigned_accesses += 1
        self.last_unassigned = ("mmio write", addr)

    def _unassigned_read(self, addr: int, size: int) -> int:
        self.unassigned_accesses += 1
        self.last_unassigned = ("mmio read", addr)
        return MASKS[8]

    # --- host frames shown to the guest (the aperture slice) ------------------------------------
    def map_frames(self, gfn: int, mfn: int, nr: int) -> None:
        """Show host frames ``[mfn, mfn + nr)`` at guest frames ``[gfn, gfn + nr)``."""
        if gfn < 0 or mfn < 0 or nr <= 0:
            raise ValueError(f"bad gfn map: gfn {gfn:#x}, mfn {mfn:#x}, {nr} pages")
        with self.lock:
            start, end = gfn << PAGE_SHIFT, (gfn + nr) << PAGE_SHIFT
            if start < self.mem_size or (start < stub.FW_BASE + stub.FW_SIZE and end > stub.FW_BASE):
                raise AddressSpaceError(
                    f"guest frames [{gfn:#x}, {gfn + nr:#x}) of kvmgt guest {self.name!r} overlap "
                    "its RAM or firmware; host frames are shown only in the MMIO hole and above"
                )
            for g, count, _m in self.gfn_maps:
                if gfn < g + count and g < gfn + nr:
                    raise AddressSpaceError(
                        f"guest frames [{gfn:#x}, {gfn + nr:#x}) overlap the mapping at "
                        f"[{g:#x}, {g + count:#x}) of kvmgt guest {self.name!r}; unmap it first"
                    )
            self.gfn_maps = (*self.gfn_maps, (gfn, nr, mfn))

    def unmap_frames(self, gfn: int, mfn: int, nr: int) -> None:
        with self.lock:
            if (gfn, nr, mfn) not in self.gfn_maps:
                raise AddressSpaceError(
                    f"kvmgt guest {self.name!r} has no mapping of {nr} host frames at {mfn:#x} "
                    f"to guest frame {gfn:#x} to unmap"
                )
            self.gfn_maps = tuple(m for m in self.gfn_maps if m != (gfn, nr, mfn))

    def _host_frame(self, gfn: int) -> int | None:
        for g, count, mfn in self.gfn_maps:
            if g <= gfn < g + count:
                return mfn + gfn - g
        return None

    def _mapped_access(self, addr: int, n: int, data: bytes | None) -> bytes | None:
        """A guest access to mapped host frames, page by page; None when a byte of it
        is not mapped or nothing is behind the host frame (then: unassigned)."""
        out = bytearray()
        pos = 0
        sysmem = self.host.sysmem
        while pos < n:
            a = addr + pos
            frame = self._host_frame(a >> PAGE_SHIFT)
            if frame is None:
                return None
            chunk = min(n - pos, PAGE_SIZE - (a & (PAGE_SIZE - 1)))
            bus = (frame << PAGE_SHIFT) | (a & (PAGE_SIZE - 1))
            try:
                if data is None:
                    out += sysmem.read(bus, chunk)
                else:
                    sysmem.write(bus, data[pos : pos + chunk])
            except DmaFault:
                return None
            pos += chunk
        return bytes(out)

    def mmio_slow(self, runner: VcpuRunner, addr: int, n: int, is_write: int) -> None:
        v = runner.vcpu
        data_at = abi.RUN_MMIO_DATA
        if self.bar_stale and self.attachment is not None:
            self.refresh_bar()
            lo, hi, write, read = self.trap
            if lo <= addr < hi:
                if is_write:
                    write(addr, v.run_u64[_R_MMIO_DATA] & MASKS[n], n)
                else:
                    v.run_u64[_R_MMIO_DATA] = read(addr, n) & MASKS[n]
                return
        if self.gfn_maps:
            if is_write:
                if self._mapped_access(addr, n, bytes(v.run_view[data_at : data_at + n])) is not None:
                    return
            else:
                got = self._mapped_access(addr, n, None)
                if got is not None:
                    v.run_view[data_at : data_at + n] = got
                    return
        if addr >= 0 and addr + n <= self.mem_size:
            if is_write:
                data = bytes(v.run_view[data_at : data_at + n])
                self.ram[addr : addr + n] = data
                att = self.attachment
                if att is not None and self.memslots.is_tracked(addr >> PAGE_SHIFT):
                    att.ops.page_track_write(att.vgpu, addr, data)
            else:
                v.run_view[data_at : data_at + n] = self.ram[addr : addr + n]
            return
        self.unassigned_accesses += 1
        self.last_unassigned = ("mmio write" if is_write else "mmio read", addr)
        if not is_write:
            v.run_u64[_R_MMIO_DATA] = MASKS[8]

    def port_out(self, port: int, value: int, size: int) -> None:
        if port == PCI_CONFIG_ADDRESS and size == 4:
            self.pci_address = value
            return
        if PCI_CONFIG_DATA <= port < PCI_CONFIG_DATA + 4:
            offset = self._cfg_offset(port, size)
            att = self.attachment
            if offset is None or att is None:
                return
            att.ops.emulate_cfg_write(att.vgpu, offset, value, size)
            if (offset < regs.PCI_BASE_ADDRESS_2 and offset + size > regs.PCI_BASE_ADDRESS_0) or (
                offset <= regs.PCI_COMMAND < offset + size
            ):
                self.bar_stale = True
                self.trap[:2] = [0, 0]  # one assignment: never a half-cleared range
            return
        self.unassigned_accesses += 1
        self.last_unassigned = ("port write", port)

    def port_in(self, port: int, size: int) -> int:
        if port == PCI_CONFIG_ADDRESS and size == 4:
            return self.pci_address
        if PCI_CONFIG_DATA <= port < PCI_CONFIG_DATA + 4:
            offset = self._cfg_offset(port, size)
            att = self.attachment
            if offset is None or att is None:
                return MASKS[size]
            return att.ops.emulate_cfg_read(att.vgpu, offset, size) & MASKS[size]
        self.unassigned_accesses += 1
        self.last_unassigned = ("port read", port)
        return MASKS[size]

    def _cfg_offset(self, port: int, size: int) -> int | None:
        """Config offset the latched address selects for the vGPU, or None (absent device,
        disabled mechanism, or an access spilling over the dword)."""
        a = self.pci_address
        if not a & PCI_CONFIG_ENABLE or (port & 3) + size > 4:
            return None
        if (a >> 8) & 0xFFFF != VGPU_BDF:
            return None
        return (((a >> PCI_CONFIG_EXT_SHIFT) & 0xF) << 8) | (a & 0xFC) | (port & 3)

    # --- MSIs -------------------------------------------------------------------------------------------
    def _route(self, address: int, data: int) -> tuple[int, int, int, int]:
        """(vCPU, address, data, vector) KVM is asked to deliver for a requested MSI."""
        vector = data & 0xFF
        dest = (address >> 12) & 0xFF
        deliverable = (
            address >> 20 == stub.LAPIC_BASE >> 20
            and not address & 0x4  # physical destination mode
            and dest < len(self.runners)
            and (data >> 8) & 0x7 == 0  # fixed delivery
            and not data & (1 << 15)  # edge
            and vector >= 0x10
            and vector not in stub.RESERVED_VECTORS
            and not data >> 16
        )
        if deliverable:
            return dest, address, data, vector
        return 0, stub.LAPIC_BASE, stub.DOORBELL_VEC, stub.DOORBELL_VEC

    def inject_msi(self, address: int, data: int) -> None:
        """Send one MSI. One already injected and not yet taken by the guest
        coalesces with it (the LAPIC's IRR holds one bit per vector; KVM would
        coalesce it too), and at most MAX_PENDING_MSIS distinct ones are in
        flight; beyond that an MSI is dropped and counted."""
        target, kaddr, kdata, vector = self._route(address, data)
        msi = Msi(address, data)
        with self._msi_lock:
            queue = self._pending[target]
            if any(p.msi == msi for p in queue):
                self.msis_coalesced += 1
                return
            if sum(len(q) for q in self._pending) >= MAX_PENDING_MSIS:
                self.msis_dropped += 1
                return
            self._msi_seq += 1
            queue.append(_Pending(self._msi_seq, msi, vector))
            self.msis_injected += 1
        self.kvm.signal_msi(kaddr, kdata)

    def msis_taken(self, runner: VcpuRunner, vectors: list[int]) -> None:
        """The guest took ``vectors``: their MSIs move to the vCPU's delivered list
        (where an identical undelivered one coalesces; at most MAX_PENDING_MSIS)."""
        with self._msi_lock:
            queue = self._pending[runner.index]
            taken = set(vectors)
            keep = []
            delivered = runner.delivered
            for p in queue:
                if p.vector not in taken:
                    keep.append(p)
                elif any(d.msi == p.msi for d in delivered):
                    self.msis_coalesced += 1
                elif len(delivered) >= MAX_PENDING_MSIS:
                    self.msis_dropped += 1
                else:
                    delivered.append(p)
            queue[:] = keep
            delivered.sort(key=lambda p: p.seq)

    def _next_delivered(self, runner: VcpuRunner, final: bool) -> Msi | None:
        """The oldest MSI the guest took on ``runner``, unless an older one is still in
        flight (injected, not yet taken: the LAPIC takes higher vectors first)."""
        with self._msi_lock:
            if not runner.delivered:
                return None
            first = runner.delivered[0]
            queue = self._pending[runner.index]
            if not final and queue and queue[0].seq < first.seq:
                return None
            return runner.delivered.pop(0).msi

    def wait_msi(self, runner: VcpuRunner, timeout: float) -> Msi | None:
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            got = self._next_delivered(runner, final=False)
            if got is not None:
                return got
            remaining = deadline - time.monotonic()
            ticks = int(remaining * 1e9) // stub.TIMER_NS_PER_TICK
            runner.execute([(stub.OP_WAIT, 0, runner.irqs_seen, max(1, min(ticks, 0xFFFF_FFFF)), 1)])
            runner.collect_irqs()
            if time.monotonic() >= deadline:
                return self._next_delivered(runner, final=True)
