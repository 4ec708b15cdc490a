"""Fixtures of the acrngt tests: an emulated ACRN, raw User VMs on it, and hosts.

``raw_vm`` is a User VM made the way a launcher makes one, through
:class:`~gvt_acrngt.hsm.HsmFile` alone, with the test itself playing the
default ioreq client (:class:`TestClient`): the emulator's strictness tests
need a client that can misbehave on purpose.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from gvt_acrngt import abi
from gvt_acrngt.backend import AcrngtBackend
from gvt_acrngt.emulated import EmulatedAcrn
from gvt_acrngt.hsm import HsmFile
from gvt_acrngt.memory import GuestRam, SharedMemory
from gvt_core.device.gvt import Gvt
from gvt_core.errors import HypervisorCallError
from gvt_core.hw.sysmem import SystemMemory
from gvt_core.mpt.loader import register_plugin
from gvt_core.mpt.ops import HostContext
from gvt_core.testing.recording import RecordingOps

RAM = 4 << 20
#: how long a vCPU waits for a completion here (a test that expects the wait to run
#: out lowers ``machine.hv.request_timeout`` itself).
REQUEST_TIMEOUT = 10.0


@pytest.fixture
def machine() -> Iterator[EmulatedAcrn]:
    m = EmulatedAcrn(request_timeout=REQUEST_TIMEOUT)
    yield m
    m.close()


@attrs.define(eq=False)
class RawVm:
    """A User VM made through the HSM by hand."""

    machine: EmulatedAcrn
    hsm: HsmFile
    ioreq: SharedMemory
    ram: GuestRam
    vmid: int
    vcpu_num: int
    #: test clients serving this VM (joined before its memory is unmapped).
    clients: list[TestClient] = attrs.field(factory=list)

    @property
    def slots(self) -> Any:
        return abi.acrn_io_request_buffer.from_buffer(self.ioreq.map).req_slot

    def port(self, vcpu: int = 0) -> Any:
        return self.machine.port(self.vmid, self.ram.size, vcpu)

    def frame(self, gfn: int) -> int:
        return int(self.machine.transport.frames_of(self.ram.address + (gfn << 12), 1)[0])


def make_raw_vm(machine: EmulatedAcrn, vcpus: int = 1, client: bool = True,
                start: bool = True) -> RawVm:
    hsm = HsmFile(machine.transport)
    ioreq = SharedMemory(4096, "test-ioreq")
    ram = GuestRam(RAM, "test-ram")
    created = hsm.create_vm(ioreq.address, cpu_affinity=((1 << vcpus) - 1) << 1)
    hsm.set_ram(0, ram.address, RAM)
    if client:
        hsm.create_client()
    if start:
        hsm.start_vm()
    return RawVm(machine, hsm, ioreq, ram, created.vmid, created.vcpu_num)


def teardown_raw_vm(vm: RawVm) -> None:
    for call in (vm.hsm.pause_vm, vm.hsm.destroy_vm):
        with contextlib.suppress(HypervisorCallError):
            call()
    vm.hsm.close()


@pytest.fixture
def make_vm(machine: EmulatedAcrn) -> Iterator[Callable[..., RawVm]]:
    """Factory of raw User VMs (``vcpus``, ``client``, ``start``); torn down after the test."""
    made: list[RawVm] = []

    def make(**kwargs: Any) -> RawVm:
        vm = make_raw_vm(machine, **kwargs)
        made.append(vm)
        return vm

    yield make
    for vm in made:
        if not vm.hsm.closed:
            teardown_raw_vm(vm)
        for c in vm.clients:  # their VM is gone: ATTACH answers ENODEV and they end
            c.join()
        vm.ram.close()
        vm.ioreq.close()


@pytest.fixture
def raw_vm(make_vm: Callable[..., RawVm]) -> RawVm:
    return make_vm()


@pytest.fixture
def client() -> Callable[..., TestClient]:
    """``client(vm, answer=...)``: the test plays the VM's default ioreq client."""
    return TestClient


class TestClient:
    """The default ioreq client, played by the test: answers MMIO reads with
    ``answer(address)``, records every request, and can be told to hold requests."""

    __test__ = False  # not a test class

    def __init__(self, vm: RawVm, answer: Callable[[int], int] = lambda a: 0xC0DE) -> None:
        self.vm = vm
        self.answer = answer
        self.seen: list[tuple[int, int, int, int]] = []
        #: while cleared, requests are not completed (they stay PROCESSING).
        self.go = threading.Event()
        self.go.set()
        self.ended = ""
        self._thread = threading.Thread(target=self._run, daemon=True)
        vm.clients.append(self)
        self._thread.start()

    def _run(self) -> None:
        vm = self.vm
        while True:
            try:
                vm.hsm.attach_client()
            except HypervisorCallError as exc:
                self.ended = str(exc)
                return
            self.go.wait()
            for i in range(vm.vcpu_num):
                slot = vm.slots[i]
                if slot.processed != abi.ACRN_IOREQ_STATE_PROCESSING or slot.kernel_handled:
                    continue
                if slot.type == abi.ACRN_IOREQ_TYPE_PCICFG:
                    p = slot.reqs.pci_request
                    self.seen.append((slot.type, p.direction, p.reg, p.value))
                    if p.direction == abi.ACRN_IOREQ_DIR_READ:
                        p.value = (p.bus << 16) | (p.dev << 8) | p.func
                else:
                    m = slot.reqs.mmio_request
                    self.seen.append((slot.type, m.direction, m.address, m.value))
                    if m.direction == abi.ACRN_IOREQ_DIR_READ:
                        m.value = self.answer(m.address)
                try:
                    vm.hsm.notify_finish(vm.vmid, i)
                except HypervisorCallError as exc:
                    self.ended = str(exc)
                    return

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


@pytest.fixture
def ops() -> RecordingOps:
    return RecordingOps()


@pytest.fixture
def backend() -> Iterator[AcrngtBackend]:
    b = AcrngtBackend(hypervisor="emulated", request_timeout=10)
    yield b
    if b.host is not None:
        b.host_exit(b.host)


@pytest.fixture
def host(backend: AcrngtBackend, ops: RecordingOps) -> HostContext:
    ctx = HostContext(ops=ops, sysmem=SystemMemory(), name="acrngt-test")
    backend.host_init(ctx)
    backend.dom0_ready()
    return ctx


@pytest.fixture
def gvt_factory() -> Iterator[Callable[..., Gvt]]:
    """Hosts on the emulated ACRN with options (``vcpus=2``, ``launch=1``, ...)."""
    made: list[Gvt] = []

    def make(**options: Any) -> Gvt:
        plugin = AcrngtBackend(hypervisor="emulated", request_timeout=10, **options)
        gvt = Gvt(register_plugin(plugin, "acrngt"))
        made.append(gvt)
        return gvt

    yield make
    for gvt in made:
        gvt.close()
