"""User VMs made by a launcher of the emulated Service VM, for ``gvt serve``.

On an ACRN system the launcher (acrn-dm) creates a User VM on its own HSM
file, gives it RAM and a request buffer, and starts it. The emulated
launcher does the same through the same transport and the same
:class:`~gvt_acrngt.hsm.HsmFile`, then offers the VM for handover
(:mod:`gvt_acrngt.handover`) on a UNIX socket. It starts the VM once gvt said
READY, and runs the guest: a Python program on the VM's vCPU 0 that waits for
a GPU at 00:02.0 (config reads of an absent device read all ones), loads the
guest-driver model, keeps using the vGPU (PVINFO reads, framebuffer writes
the GPU reads through the GGTT) for ``guest_seconds``, and powers off: the
launcher pauses and destroys the VM, which ends gvt's client.

If gvt lets go of a running VM (``BYE``), the launcher powers it off: no
device model serves it any more.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from gvt_acrngt.emulated.machine import EmulatedAcrn
from gvt_acrngt.handover import MAGIC_BYE, MAGIC_READY, HandoverError, LauncherEnd
from gvt_acrngt.hsm import HsmFile
from gvt_acrngt.memory import GuestRam, SharedMemory
from gvt_core.errors import GvtError, VgpuStateError
from gvt_core.guest.driver import GuestDriver
from gvt_core.guest.port import GuestPort
from gvt_core.hw import regs

log = logging.getLogger(__name__)

#: how often the guest looks for its GPU, and for how long.
PROBE_INTERVAL_S = 0.02
PROBE_TIMEOUT_S = 60.0
#: the guest's framebuffer (small: every GGTT entry is a trapped write).
GUEST_FB = (128, 64)


@attrs.define(eq=False)
class LaunchedVm:
    """One User VM the launcher made."""

    vmid: int
    vcpu_num: int
    hsm: HsmFile
    ram: GuestRam
    ioreq: SharedMemory
    end: LauncherEnd
    guest_seconds: float
    state: str = "created"
    #: what the guest program did (or why it stopped).
    log: list[str] = attrs.field(factory=list)
    error: str = ""
    handed_over: bool = False
    #: set once the launcher started powering the VM off (the guest's errors after
    #: that are the power-off's doing, not the guest's).
    stopping: bool = False
    #: set when the VM is powered off and everything of it released.
    ended: threading.Event = attrs.field(factory=threading.Event)
    thread: threading.Thread | None = None


GuestProgram = Callable[[GuestPort, LaunchedVm], None]


def driver_program(port: GuestPort, vm: LaunchedVm) -> None:
    """Wait for the vGPU, load the driver model, use the GPU for a while."""
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    while port.cfg_read(regs.PCI_VENDOR_ID, 2) != regs.INTEL_VENDOR_ID:
        if time.monotonic() > deadline:
            raise GvtError(f"no GPU appeared at 00:02.0 within {PROBE_TIMEOUT_S:g} s")
        time.sleep(PROBE_INTERVAL_S)
    vm.log.append("GPU found at 00:02.0")
    driver = GuestDriver(port, fb_width=GUEST_FB[0], fb_height=GUEST_FB[1])
    report = driver.load()
    vm.log.append(f"driver loaded: vGPU {report.vgt_id}")
    stop = time.monotonic() + vm.guest_seconds
    frame = 0
    while time.monotonic() < stop:
        vgt_id = driver.mmio_read(regs.VGT_PVINFO_PAGE + regs.PVINFO_VGT_ID)
        if vgt_id != report.vgt_id:
            raise GvtError(f"PVINFO vgt_id changed from {report.vgt_id} to {vgt_id}")
        port.mem_write(report.framebuffer_gpa, bytes([frame & 0xFF]) * regs.GTT_PAGE_SIZE)
        frame += 1
        time.sleep(0.05)
    vm.log.append(f"drew {frame} frames; powering off")


class Launcher:
    """The emulated Service VM's launcher: makes User VMs and hands them to gvt."""

    def __init__(self, machine: EmulatedAcrn, directory: str | Path,
                 ready: Callable[[], bool], program: GuestProgram = driver_program) -> None:
        self.machine = machine
        self.directory = Path(directory)
        self.ready = ready
        self.program = program
        self.vms: dict[int, LaunchedVm] = {}
        self._lock = threading.Lock()

    def boot(self, mem_size: int, vcpus: int = 1, guest_seconds: float = 3.0) -> LaunchedVm:
        """Create a User VM (not started) and offer it for handover."""
        transport = self.machine.transport
        hsm = HsmFile(transport)
        ioreq = SharedMemory(4096, "launcher-ioreq")
        ram = GuestRam(mem_size, "launcher-ram")
        try:
            created = hsm.create_vm(ioreq.address, cpu_affinity=((1 << vcpus) - 1) << 1)
            hsm.set_ram(0, ram.address, mem_size)
            end = LauncherEnd(self.directory, created.vmid)
        except BaseException:
            hsm.close()
            ram.close()
            ioreq.close()
            raise
        vm = LaunchedVm(created.vmid, created.vcpu_num, hsm, ram, ioreq, end, guest_seconds)
        with self._lock:
            self.vms[vm.vmid] = vm
        threading.Thread(target=self._serve, args=(vm,), name=f"launcher-vm{vm.vmid}",
                         daemon=True).start()
        return vm

    # --- the handover side ----------------------------------------------------------------
    def _serve(self, vm: LaunchedVm) -> None:
        """Accept peers until the VM is gone; each is answered on a thread of its own
        (one may be served while another asks and is refused)."""
        while not vm.stopping:
            try:
                conn = vm.end.accept()
            except OSError:
                return  # the socket was closed: the VM is gone
            threading.Thread(target=self._peer, args=(vm, conn), daemon=True,
                             name=f"launcher-vm{vm.vmid}-peer").start()

    def _peer(self, vm: LaunchedVm, conn: socket.socket) -> None:
        with conn:
            self._one_peer(vm, conn)

    def _one_peer(self, vm: LaunchedVm, conn: socket.socket) -> None:
        try:
            vmid = LauncherEnd.read_request(conn)
        except (HandoverError, OSError):
            return
        if vmid != vm.vmid:
            LauncherEnd.refuse(conn, errno.ENOENT, f"this socket offers User VM {vm.vmid}")
            return
        if not self.ready():
            LauncherEnd.refuse(conn, errno.EAGAIN, "GVT is not ready (no GVT_DOM0_READY yet)")
            return
        with self._lock:
            taken = vm.handed_over or vm.state != "created"
            vm.handed_over = True
        if taken:
            LauncherEnd.refuse(conn, errno.EBUSY,
                               f"User VM {vm.vmid} is {vm.state} and served by gvt already")
            return
        LauncherEnd.offer(conn, vm.vmid, vm.vcpu_num, vm.ram.size,
                          (vm.hsm.fd, vm.ioreq.fd, vm.ram.fd))
        magic, _ = LauncherEnd.read_message(conn)
        if magic != MAGIC_READY:
            vm.handed_over = False  # gvt went away before serving it: offer it again
            return
        self._start(vm)
        magic, _flags = LauncherEnd.read_message(conn)
        if not vm.stopping:
            why = "gvt let go of it" if magic == MAGIC_BYE else "gvt went away"
            vm.log.append(f"{why} while the guest ran; powering off")
            self.power_off(vm)

    # --- the guest ---------------------------------------------------------------------------
    def _start(self, vm: LaunchedVm) -> None:
        vm.hsm.start_vm()
        vm.state = "running"
        vm.thread = threading.Thread(target=self._run_guest, args=(vm,),
                                     name=f"guest-vm{vm.vmid}", daemon=True)
        vm.thread.start()

    def _run_guest(self, vm: LaunchedVm) -> None:
        try:
            port = self.machine.port(vm.vmid, vm.ram.size)
            self.program(port, vm)
        except VgpuStateError as exc:  # the VM was paused or destroyed under the guest
            vm.log.append(f"the guest was stopped: {exc}")
        except Exception as exc:  # the guest crashed: it powers off all the same
            if not vm.stopping:
                vm.error = f"{type(exc).__name__}: {exc}"
                log.warning("emulated guest of User VM %d stopped: %s", vm.vmid, vm.error)
        self.power_off(vm)

    def power_off(self, vm: LaunchedVm) -> None:
        """The guest is gone: pause and destroy the VM, release what the launcher held."""
        with self._lock:
            if vm.stopping:
                return
            vm.stopping = True
            self.vms.pop(vm.vmid, None)
        try:
            with contextlib.suppress(GvtError):
                vm.hsm.pause_vm()
            with contextlib.suppress(GvtError):
                vm.hsm.destroy_vm()
            vm.state = "powered off"
            vm.end.close()
            vm.hsm.close()
            vm.ram.close()
            vm.ioreq.close()
        finally:
            vm.ended.set()

    def close(self) -> None:
        for vm in list(self.vms.values()):
            self.power_off(vm)
