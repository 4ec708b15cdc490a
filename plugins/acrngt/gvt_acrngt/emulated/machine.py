"""An emulated ACRN machine: hypervisor, Service VM memory and HSM in this process.

:class:`EmulatedAcrn` wires the parts together under one lock and offers
what a real Service VM offers user space, through :class:`EmulatedTransport`
(the same :class:`~gvt_acrngt.transport.HsmTransport` the real device
implements), plus what only an emulator can: the CPU of each User VM as a
:class:`~gvt_acrngt.emulated.port.EmulatedGuestPort`, the host GPU's BARs as
Service VM devices (:meth:`attach_gpu`), and the record of device-model
mistakes it caught (:attr:`violations`).
"""

from __future__ import annotations

import threading

import numpy as np

from gvt_acrngt.emulated.hsm import Hsm, HsmVm
from gvt_acrngt.emulated.hypervisor import MAX_USER_VMS, Hypervisor, UserVm, Violation
from gvt_acrngt.emulated.port import EmulatedGuestPort
from gvt_acrngt.emulated.service_vm import ServiceVmMemory
from gvt_core.hw.sysmem import SystemMemory

#: how long an emulated vCPU waits for its request to be completed (seconds).
DEFAULT_REQUEST_TIMEOUT = 30.0
#: violations kept (later ones are only counted).
MAX_VIOLATIONS = 1000


class EmulatedTransport:
    """:class:`~gvt_acrngt.transport.HsmTransport` onto an emulated machine."""

    label = "emulated ACRN"

    def __init__(self, machine: EmulatedAcrn) -> None:
        self.machine = machine

    def open(self) -> int:
        return self.machine.hsm.open()

    def ioctl(self, fd: int, request: int, arg: bytearray | int = 0) -> int:
        return self.machine.hsm.ioctl(fd, request, arg)

    def close(self, fd: int) -> None:
        self.machine.hsm.close(fd)

    def frames_of(self, vaddr: int, pages: int) -> np.ndarray:
        return self.machine.memory.frames_of(vaddr, pages)


class EmulatedAcrn:
    """One emulated ACRN system: a hypervisor with its Service VM and HSM."""

    def __init__(self, max_vms: int = MAX_USER_VMS, pcpus: int = 4,
                 request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.lock = threading.RLock()
        self.memory = ServiceVmMemory()
        self.violations: list[Violation] = []
        self.violations_dropped = 0
        self.hv = Hypervisor(self.memory, self.lock, self._violation, max_vms=max_vms,
                             pcpus=pcpus, request_timeout=request_timeout)
        self.hsm = Hsm(self.hv, self.memory, self.lock, self._violation)
        self.transport = EmulatedTransport(self)
        self.closed = False

    def _violation(self, violation: Violation) -> None:
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(violation)
        else:
            self.violations_dropped += 1

    def attach_gpu(self, sysmem: SystemMemory) -> None:
        """Make the host GPU's BARs (the aperture) Service VM devices the hypervisor can
        map into User VMs."""
        self.memory.devices = sysmem

    def user_vm(self, vmid: int) -> UserVm:
        vm = self.hv.vm(vmid)
        if vm is None:
            raise LookupError(f"the emulated ACRN has no User VM {vmid}")
        return vm

    def port(self, vmid: int, mem_size: int, vcpu: int = 0) -> EmulatedGuestPort:
        """The CPU of a User VM (``mem_size``: the guest RAM its launcher gave it)."""
        return EmulatedGuestPort(self.hv, self.user_vm(vmid), vcpu, mem_size)

    def hsm_vm(self, fd: int) -> HsmVm:
        """The HSM's view of one file (for tests that look inside)."""
        return self.hsm.file_vm(fd)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.hsm.shutdown()
        self.memory.close()
