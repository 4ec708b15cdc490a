"""The emulated HSM and hypervisor answer every ioctl as the real ones do.

Each test issues packed ioctl arguments through the transport (the bytes the
real ``/dev/acrn_hsm`` would receive) and checks the errno the upstream
driver answers, or the request life cycle it enforces: malformed ioctls,
overlapping client ranges, a request completed twice, a slot in the wrong
state, a VM destroyed with requests pending.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from gvt_acrngt import abi
from gvt_acrngt.emulated import EmulatedAcrn
from gvt_acrngt.emulated.hsm import NotModelledError
from gvt_acrngt.hsm import HsmFile
from gvt_acrngt.memory import SharedMemory
from gvt_core.errors import GuestExitError, HypervisorCallError, VgpuStateError
from gvt_core.hostabi import ioctl
from gvt_core.testing.threads import wait_until

RWX = abi.ACRN_MEM_ACCESS_RWX
RX = abi.ACRN_MEM_ACCESS_READ | abi.ACRN_MEM_ACCESS_EXEC
OUTSIDE = 0xC000_0000


def _ioctl_errno(machine: EmulatedAcrn, fd: int, request: int, arg: bytearray | int = 0) -> int:
    with pytest.raises(OSError) as err:
        machine.transport.ioctl(fd, request, arg)
    return err.value.errno


def _memmap(kind: int, attr: int, gpa: int, pa: int, length: int) -> bytearray:
    m = abi.acrn_vm_memmap(type=kind, attr=attr, user_vm_pa=gpa, len=length)
    m.service_vm_pa = pa
    return bytearray(bytes(m))


# --- malformed ioctls ------------------------------------------------------------------------


def test_a_file_without_a_vm_refuses_everything_but_create(machine: EmulatedAcrn) -> None:
    f = HsmFile(machine.transport)
    try:
        for request in (abi.ACRN_IOCTL_START_VM, abi.ACRN_IOCTL_CREATE_IOREQ_CLIENT,
                        abi.ACRN_IOCTL_ATTACH_IOREQ_CLIENT, 0xA2FF):
            assert _ioctl_errno(machine, f.fd, request) == errno.EINVAL
    finally:
        f.close()


def test_unknown_commands_and_wrong_sizes_are_enotty(raw_vm: Any) -> None:
    m, fd = raw_vm.machine, raw_vm.hsm.fd
    assert _ioctl_errno(m, fd, ioctl.IO(abi.ACRN_IOCTL_TYPE, 0x7F)) == errno.ENOTTY

    class Short(ctypes.Structure):
        _fields_ = [("type", ctypes.c_uint32)]

    wrong = ioctl.IOW(abi.ACRN_IOCTL_TYPE, 0x41, Short)  # SET_MEMSEG with a 4-byte argument
    assert _ioctl_errno(m, fd, wrong, bytearray(4)) == errno.ENOTTY
    assert _ioctl_errno(m, fd, ioctl.IO(0xAE, 0x12)) == errno.ENOTTY  # a KVM number


def test_short_or_missing_arguments_are_efault(raw_vm: Any) -> None:
    m, fd = raw_vm.machine, raw_vm.hsm.fd
    assert _ioctl_errno(m, fd, abi.ACRN_IOCTL_SET_MEMSEG, bytearray(16)) == errno.EFAULT
    assert _ioctl_errno(m, fd, abi.ACRN_IOCTL_INJECT_MSI, 0) == errno.EFAULT
    assert _ioctl_errno(m, fd, abi.ACRN_IOCTL_NOTIFY_REQUEST_FINISH, bytearray(7)) == errno.EFAULT


def test_reserved_fields_must_be_zero(machine: EmulatedAcrn, raw_vm: Any) -> None:
    f = HsmFile(machine.transport)
    io = SharedMemory(4096, "t")
    try:
        param = abi.acrn_vm_creation(ioreq_buf=io.address, reserved1=1)
        assert _ioctl_errno(machine, f.fd, abi.ACRN_IOCTL_CREATE_VM,
                            bytearray(bytes(param))) == errno.EINVAL
    finally:
        f.close()
        io.close()
    notify = bytearray(bytes(abi.acrn_ioreq_notify(vmid=raw_vm.vmid, reserved=1)))
    assert _ioctl_errno(machine, raw_vm.hsm.fd, abi.ACRN_IOCTL_NOTIFY_REQUEST_FINISH,
                        notify) == errno.EINVAL
    efd = os.eventfd(0)
    try:
        ev = bytearray(bytes(abi.acrn_ioeventfd(fd=efd, addr=OUTSIDE, len=4, reserved=9)))
        assert _ioctl_errno(machine, raw_vm.hsm.fd, abi.ACRN_IOCTL_IOEVENTFD, ev) == errno.EINVAL
    finally:
        os.close(efd)


def test_create_vm_checks(machine: EmulatedAcrn) -> None:
    f = HsmFile(machine.transport)
    io = SharedMemory(4096, "t")
    try:
        # pCPU 0 is the Service VM's: a User VM may not ask for it
        with pytest.raises(HypervisorCallError) as err:
            f.create_vm(io.address, cpu_affinity=0b1)
        assert err.value.errno == errno.EINVAL
        # a request buffer nobody mapped cannot be pinned: the VM is lost
        hole = mmap.mmap(-1, 4096)
        address = ctypes.addressof(ctypes.c_char.from_buffer(hole))
        hole.close()
        with pytest.raises(HypervisorCallError) as err:
            f.create_vm(address)
        assert err.value.errno == errno.EINVAL
        assert machine.violations[-1].kind == "VM lost at creation"
        # a good one; then a second one on the same file loses both
        f2 = HsmFile(machine.transport)
        vm = f2.create_vm(io.address, cpu_affinity=0b110)
        assert vm.vcpu_num == 2
        with pytest.raises(HypervisorCallError) as err:
            f2.create_vm(io.address)
        assert err.value.errno == errno.EINVAL
        assert machine.violations[-1].kind == "CREATE_VM on a file that has a VM"
        with pytest.raises(HypervisorCallError):  # the file has no VM now
            f2.start_vm()
        f2.close()
    finally:
        f.close()
        io.close()


def test_vm_state_machine_answers_eperm(machine: EmulatedAcrn, make_vm: Callable[..., Any]) -> None:
    vm = make_vm(start=False)
    with pytest.raises(HypervisorCallError) as err:
        vm.hsm.destroy_vm()  # created, not paused: the hypervisor refuses (-1)
    assert err.value.errno == errno.EPERM
    vm.hsm.start_vm()
    with pytest.raises(HypervisorCallError) as err:
        vm.hsm.start_vm()
    assert err.value.errno == errno.EPERM
    with pytest.raises(HypervisorCallError) as err:
        vm.hsm.destroy_vm()  # running
    assert err.value.errno == errno.EPERM
    vm.hsm.pause_vm()
    vm.hsm.pause_vm()  # pausing a paused VM is fine
    with pytest.raises(VgpuStateError, match="paused"):
        vm.port().mmio_read(0x1000, 4)
    vm.hsm.destroy_vm()
    assert _ioctl_errno(machine, vm.hsm.fd, abi.ACRN_IOCTL_START_VM) == errno.EINVAL


def test_memory_segment_checks(raw_vm: Any) -> None:
    m, fd, hsm = raw_vm.machine, raw_vm.hsm.fd, raw_vm.hsm
    frame = raw_vm.frame(0)
    # neither RAM nor MMIO
    assert _ioctl_errno(m, fd, abi.ACRN_IOCTL_SET_MEMSEG, _memmap(7, RWX, OUTSIDE, 0, 4096)) \
        == errno.EINVAL
    # only MMIO segments can be unset
    assert _ioctl_errno(m, fd, abi.ACRN_IOCTL_UNSET_MEMSEG,
                        _memmap(abi.ACRN_MEMMAP_RAM, 0, 0, 0, 4096)) == errno.EINVAL
    # a region that is not whole pages, or not mapped, cannot be removed
    with pytest.raises(HypervisorCallError) as err:
        hsm.unset(0, 100)
    assert err.value.errno == errno.EINVAL
    with pytest.raises(HypervisorCallError) as err:
        hsm.unset(OUTSIDE, 4096)
    assert err.value.errno == errno.EINVAL
    # MMIO segments must point at Service VM memory the Service VM has (not the hypervisor's)
    with pytest.raises(HypervisorCallError) as err:
        hsm.set_mmio(OUTSIDE, 0xB000_0000, 4096, RWX)
    assert err.value.errno == errno.EINVAL
    # RAM segments: no whole page, memory nobody mapped, read-only memory
    with pytest.raises(HypervisorCallError) as err:
        hsm.set_ram(OUTSIDE, raw_vm.ram.address, 100)
    assert err.value.errno == errno.ENOMEM
    hole = mmap.mmap(-1, 8192)
    address = ctypes.addressof(ctypes.c_char.from_buffer(hole))
    hole.close()
    with pytest.raises(HypervisorCallError) as err:
        hsm.set_ram(OUTSIDE, address, 8192)
    assert err.value.errno == errno.EFAULT
    ro = mmap.mmap(-1, 4096, prot=mmap.PROT_READ)
    try:
        ro_addr = np.frombuffer(ro, dtype=np.uint8).ctypes.data
        with pytest.raises(HypervisorCallError) as err:
            hsm.set_ram(OUTSIDE, ro_addr, 4096)
        assert err.value.errno == errno.EFAULT
    finally:
        ro.close()
    # mapping over a present page keeps the old mapping (and is recorded)
    hsm.set_mmio(0, frame << 12, 4096, RWX)
    assert m.violations[-1].kind == "EPT entry already present"


def test_ram_segments_are_limited_to_256(machine: EmulatedAcrn, make_vm: Callable[..., Any]) -> None:
    vm = make_vm()  # one RAM segment already
    for i in range(abi.ACRN_MEM_MAPPING_MAX - 1):
        vm.hsm.set_ram(OUTSIDE + i * 4096, vm.ram.address, 4096)
    with pytest.raises(HypervisorCallError) as err:
        vm.hsm.set_ram(0x1_0000_0000, vm.ram.address, 4096)
    assert err.value.errno == errno.ENOMEM
def test_msi_outside_the_lapic_window_is_refused(raw_vm: Any) -> None:
    with pytest.raises(HypervisorCallError) as err:
        raw_vm.hsm.inject_msi(0x1234_0000, 0x41)
    assert err.value.errno == errno.EPERM
    raw_vm.hsm.inject_msi(0xFEE0_0000, 0x41)
    assert raw_vm.port().wait_msi(1.0) is not None


def test_ioctls_the_backend_never_needs_are_checked_then_not_modelled(raw_vm: Any) -> None:
    m, fd = raw_vm.machine, raw_vm.hsm.fd
    with pytest.raises(NotModelledError):
        m.transport.ioctl(fd, abi.ACRN_IOCTL_ASSIGN_PCIDEV, bytearray(bytes(abi.acrn_pcidev())))
    assert _ioctl_errno(m, fd, abi.ACRN_IOCTL_ASSIGN_PCIDEV, bytearray(3)) == errno.EFAULT
    regs = abi.acrn_vcpu_regs()
    regs.vcpu_regs.reserved_32[1] = 1
    assert _ioctl_errno(m, fd, abi.ACRN_IOCTL_SET_VCPU_REGS, bytearray(bytes(regs))) \
        == errno.EINVAL


def test_a_descriptor_that_is_not_an_hsm_file(machine: EmulatedAcrn) -> None:
    r, w = os.pipe()
    try:
        assert _ioctl_errno(machine, r, abi.ACRN_IOCTL_START_VM) == errno.ENOTTY
    finally:
        os.close(r)
        os.close(w)
    assert _ioctl_errno(machine, w, abi.ACRN_IOCTL_START_VM) == errno.EBADF


# --- overlapping client ranges ----------------------------------------------------------------------


def test_one_default_client_per_vm(raw_vm: Any) -> None:
    with pytest.raises(HypervisorCallError) as err:
        raw_vm.hsm.create_client()
    assert err.value.errno == errno.EEXIST
    raw_vm.hsm.destroy_client()
    raw_vm.hsm.destroy_client()  # nothing to destroy: fine
    with pytest.raises(HypervisorCallError) as err:
        raw_vm.hsm.attach_client()
    assert err.value.errno == errno.ENODEV
    raw_vm.hsm.create_client()


def _ioeventfd(vm: Any, efd: int, addr: int, length: int, flags: int = 0,
               data: int = 0) -> None:
    arg = bytearray(bytes(abi.acrn_ioeventfd(fd=efd, flags=flags, addr=addr, len=length,
                                             data=data)))
    vm.machine.transport.ioctl(vm.hsm.fd, abi.ACRN_IOCTL_IOEVENTFD, arg)


def test_ioeventfd_ranges_conflict_and_take_precedence(raw_vm: Any, client: Callable[..., Any]) -> None:
    tc = client(raw_vm)
    a, b = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0, os.EFD_NONBLOCK)
    try:
        _ioeventfd(raw_vm, a, OUTSIDE, 4)
        # the same eventfd at the same address: EEXIST (wildcard against anything)
        for flags, data in ((0, 0), (abi.ACRN_IOEVENTFD_FLAG_DATAMATCH, 5)):
            with pytest.raises(OSError) as err:
                _ioeventfd(raw_vm, a, OUTSIDE, 4, flags, data)
            assert err.value.errno == errno.EEXIST
        # another eventfd over the same range: the HSM does not check overlaps
        _ioeventfd(raw_vm, b, OUTSIDE, 8, abi.ACRN_IOEVENTFD_FLAG_DATAMATCH, 7)
        for bad_len in (0, 3, 16):
            with pytest.raises(OSError) as err:
                _ioeventfd(raw_vm, a, OUTSIDE + 0x100, bad_len)
            assert err.value.errno == errno.EINVAL
        r, w = os.pipe()
        with pytest.raises(OSError) as err:
            _ioeventfd(raw_vm, r, OUTSIDE + 0x100, 4)
        assert err.value.errno == errno.EINVAL
        os.close(r)
        os.close(w)
        with pytest.raises(OSError) as err:
            _ioeventfd(raw_vm, 999, OUTSIDE + 0x100, 4)
        assert err.value.errno == errno.EBADF
        port = raw_vm.port()
        # a kernel client's range wins over the default client: writes signal, reads are 0
        port.mmio_write(OUTSIDE, 7, 4)
        assert port.mmio_read(OUTSIDE, 4) == 0
        assert os.eventfd_read(a) == 1
        assert tc.seen == []
        # an access not inside any ioeventfd range goes to the default client
        assert port.mmio_read(OUTSIDE + 0x1000, 4) == 0xC0DE
        _ioeventfd(raw_vm, a, 0, 4, abi.ACRN_IOEVENTFD_FLAG_DEASSIGN)
        _ioeventfd(raw_vm, b, 0, 8, abi.ACRN_IOEVENTFD_FLAG_DEASSIGN)
        port.mmio_write(OUTSIDE, 7, 4)
        assert tc.seen[-1] == (abi.ACRN_IOREQ_TYPE_MMIO, abi.ACRN_IOREQ_DIR_WRITE, OUTSIDE, 7)
    finally:
        os.close(a)
        os.close(b)


# --- the request life cycle -------------------------------------------------------------------------


def test_cf8_cfc_become_pcicfg_requests(raw_vm: Any, client: Callable[..., Any]) -> None:
    tc = client(raw_vm)
    port = raw_vm.port()
    assert port.cfg_read(0x10, 4) == (0 << 16) | (2 << 8) | 0  # bus 0, dev 2, fn 0
    port.cfg_write(0x104, 0xAB, 1)  # an extended register: CF8 bits 27:24
    assert tc.seen == [
        (abi.ACRN_IOREQ_TYPE_PCICFG, abi.ACRN_IOREQ_DIR_READ, 0x10, 0),
        (abi.ACRN_IOREQ_TYPE_PCICFG, abi.ACRN_IOREQ_DIR_WRITE, 0x104, 0xAB),
    ]
    # a data access with the latch disabled never leaves the hypervisor
    assert port.port_read(abi.PCI_CONFIG_DATA_PORT, 4) == 0xFFFF_FFFF
    assert len(tc.seen) == 2


def test_write_protected_pages_send_wp_requests(raw_vm: Any, client: Callable[..., Any]) -> None:
    tc = client(raw_vm)
    port, hsm = raw_vm.port(), raw_vm.hsm
    raw_vm.ram.write(0x2000, b"\x11" * 8)
    hsm.unset(0x2000, 4096)
    hsm.set_mmio(0x2000, raw_vm.frame(2) << 12, 4096, RX)
    assert port.mem_read(0x2000, 8) == b"\x11" * 8  # reads need no exit
    port.store(0x2008, 0xAABB, 2)
    assert tc.seen == [(abi.ACRN_IOREQ_TYPE_WP, abi.ACRN_IOREQ_DIR_WRITE, 0x2008, 0xAABB)]
    assert raw_vm.ram.read(0x2008, 2) == b"\x00\x00"  # forwarded, not landed
    # read-only without execute: the same store is an ordinary MMIO request
    hsm.unset(0x2000, 4096)
    hsm.set_mmio(0x2000, raw_vm.frame(2) << 12, 4096, abi.ACRN_MEM_ACCESS_READ)
    port.store(0x2008, 1, 1)
    assert tc.seen[-1][0] == abi.ACRN_IOREQ_TYPE_MMIO


def test_a_request_completed_twice_faults_the_vcpu(raw_vm: Any, client: Callable[..., Any]) -> None:
    tc = client(raw_vm)
    port = raw_vm.port()
    assert port.mmio_read(OUTSIDE, 4) == 0xC0DE
    raw_vm.hsm.notify_finish(raw_vm.vmid, 0)  # the same request again
    assert raw_vm.machine.violations[-1].kind == "request completed twice or never dispatched"
    # the slot is COMPLETE, not FREE: the next request fails, the vCPU takes a #GP
    with pytest.raises(GuestExitError, match=r"#GP|protocol violation"):
        port.mmio_read(OUTSIDE, 4)
    assert tc.ended == ""


def test_a_slot_the_client_sets_itself_never_completes(raw_vm: Any) -> None:
    """The client must not write ``processed``: COMPLETE without NOTIFY wakes nobody."""
    done = threading.Event()

    def bad_client() -> None:
        raw_vm.hsm.attach_client()
        raw_vm.slots[0].reqs.mmio_request.value = 1
        raw_vm.slots[0].processed = abi.ACRN_IOREQ_STATE_COMPLETE
        done.set()

    raw_vm.machine.hv.request_timeout = 0.5
    threading.Thread(target=bad_client, daemon=True).start()
    with pytest.raises(GuestExitError, match="waited"):
        raw_vm.port().mmio_read(OUTSIDE, 4)
    assert done.is_set()
    assert raw_vm.machine.violations[-1].kind == "request never completed"


def test_completing_a_request_never_dispatched(machine: EmulatedAcrn, make_vm: Callable[..., Any]) -> None:
    vm = make_vm(client=False)
    t, got = _guest_reading(vm)
    assert wait_until(lambda: bool(machine.violations), 5, 0.01)
    assert vm.slots[0].processed == abi.ACRN_IOREQ_STATE_PENDING  # nobody to give it to
    assert machine.violations[-1].kind == "no ioreq client"
    vm.hsm.create_client()
    vm.hsm.notify_finish(vm.vmid, 0)  # completes a slot the HSM never dispatched
    t.join(5)
    assert got and isinstance(got[0], GuestExitError)
    assert machine.violations[-1].kind == "request completed twice or never dispatched"
    with pytest.raises(HypervisorCallError) as err:
        vm.hsm.notify_finish(vm.vmid, 5)  # a vCPU the VM does not have
    assert err.value.errno == errno.EINVAL


def test_a_vm_destroyed_with_requests_pending(machine: EmulatedAcrn, make_vm: Callable[..., Any], client: Callable[..., Any]) -> None:
    vm = make_vm()
    tc = client(vm)
    tc.go.clear()  # the client takes requests but does not complete them
    t, got = _guest_reading(vm)
    assert wait_until(lambda: vm.slots[0].processed == abi.ACRN_IOREQ_STATE_PROCESSING, 5, 0.01)
    with pytest.raises(HypervisorCallError) as err:
        vm.hsm.destroy_vm()  # a running VM cannot be destroyed
    assert err.value.errno == errno.EPERM
    vm.hsm.pause_vm()
    vm.hsm.destroy_vm()
    t.join(5)
    assert got and isinstance(got[0], GuestExitError) and "destroyed" in str(got[0])
    # the client's ATTACH either saw the client destroyed (ENODEV) or returned for the
    # request before the VM went, and then completing it fails: the file has no VM
    # anymore (EINVAL for everything but CREATE_VM)
    tc.go.set()
    tc.join()
    assert ("ATTACH_IOREQ_CLIENT failed with errno 19" in tc.ended
            or "NOTIFY_REQUEST_FINISH failed with errno 22" in tc.ended), tc.ended
    with pytest.raises(HypervisorCallError) as err:
        vm.hsm.attach_client()
    assert err.value.errno == errno.EINVAL
    vm.hsm.close()


def test_clear_completes_what_the_default_client_holds(machine: EmulatedAcrn, make_vm: Callable[..., Any], client: Callable[..., Any]) -> None:
    vm = make_vm()
    tc = client(vm)
    tc.go.clear()
    t, got = _guest_reading(vm)
    assert wait_until(lambda: vm.slots[0].processed == abi.ACRN_IOREQ_STATE_PROCESSING, 5, 0.01)
    vm.hsm.pause_vm()
    vm.hsm.clear_requests()
    t.join(5)
    assert isinstance(got[0], VgpuStateError)  # completed, but the vCPU is paused
    assert vm.slots[0].processed == abi.ACRN_IOREQ_STATE_FREE
    tc.go.set()


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BaseException as exc:
        return exc


def _guest_reading(vm: Any) -> tuple[threading.Thread, list[object]]:
    """A started vCPU thread reading unclaimed MMIO; ``got`` receives what the read
    returned or raised once it ends."""
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(_try(lambda: vm.port().mmio_read(OUTSIDE, 4))))
    t.start()
    return t, got


# --- files ---------------------------------------------------------------------------------------------


def test_the_last_close_releases_the_vm(machine: EmulatedAcrn, make_vm: Callable[..., Any]) -> None:
    vm = make_vm()
    dup = os.dup(vm.hsm.fd)  # what a handover leaves: two descriptors, one file
    vm.hsm.pause_vm()
    vm.hsm.close()
    assert vm.vmid in machine.hv.vms  # the other descriptor keeps the file
    machine.transport.close(dup)
    assert vm.vmid not in machine.hv.vms


def test_closing_a_running_vms_file_leaks_it_and_says_so(machine: EmulatedAcrn, make_vm: Callable[..., Any]) -> None:
    vm = make_vm()
    vm.hsm.close()
    assert machine.violations[-1].kind == "file released with its VM running"
    assert vm.vmid in machine.hv.vms


def test_two_vms_at_once_are_apart(machine: EmulatedAcrn, make_vm: Callable[..., Any], client: Callable[..., Any]) -> None:
    a, b = make_vm(), make_vm()
    ca = client(a, answer=lambda addr: 0xA)
    cb = client(b, answer=lambda addr: 0xB)
    assert (a.vmid, b.vmid) == (1, 2)
    a.port().store(0x1000, 0x1111, 4)
    b.port().store(0x1000, 0x2222, 4)
    assert a.ram.read(0x1000, 4) == (0x1111).to_bytes(4, "little")
    assert b.ram.read(0x1000, 4) == (0x2222).to_bytes(4, "little")
    assert (a.port().mmio_read(OUTSIDE, 4), b.port().mmio_read(OUTSIDE, 4)) == (0xA, 0xB)
    assert len(ca.seen) == len(cb.seen) == 1
