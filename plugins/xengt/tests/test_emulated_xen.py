"""The emulated Xen is strict: it checks what Xen and the Linux drivers check and
answers with their errnos.

Malformed dm_ops, overlapping ranges, a second ioreq server on the same
BDF and page type, ioreq state violations by the device model, event
channels of a dead domain, privcmd's mapping rules and the domctls XenGT
uses, each driven through the same ABI wrappers the backend uses.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import struct
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gvt_core.errors import GuestExitError, VgpuStateError
from gvt_core.mpt.ops import Msi
from gvt_xengt import abi
from gvt_xengt.control import HostControl
from gvt_xengt.dmop import DeviceModelOps
from gvt_xengt.emulated import EmulatedTransport, EmulatedXen
from gvt_xengt.emulated import vcpu as vcpu_module
from gvt_xengt.emulated.domain import HvmDomain
from gvt_xengt.emulated.ioreq import Rangeset
from gvt_xengt.evtchn import EventChannels
from gvt_xengt.port import XenGuestPort
from gvt_xengt.privcmd import Privcmd

MMIO = 0xF000_0000
HEADER = struct.Struct("<II")


def _op(number: int, body: bytes, pad: int = 0) -> bytes:
    return HEADER.pack(number, pad) + body


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, out


# --- malformed dm_ops --------------------------------------------------------------------------


def test_malformed_dm_op_buffers_get_xen_and_linux_errnos(
    transport: EmulatedTransport, domain: HvmDomain, raw_dm_op: Any
) -> None:
    p = Privcmd(transport)
    fd, dom = p.fd, domain.domid
    nr_vcpus = _op(abi.XEN_DMOP_nr_vcpus, bytes(4))
    assert raw_dm_op(transport, fd, dom, nr_vcpus) == 0
    assert raw_dm_op(transport, fd, dom, nr_vcpus[:6]) == errno.EFAULT  # shorter than the header
    assert raw_dm_op(transport, fd, dom, nr_vcpus[:10]) == errno.EFAULT  # shorter than the op
    assert raw_dm_op(transport, fd, dom, _op(21, bytes(24))) == errno.EOPNOTSUPP
    assert raw_dm_op(transport, fd, dom, _op(abi.XEN_DMOP_nr_vcpus, bytes(4), pad=1)) == errno.EINVAL
    assert raw_dm_op(transport, fd, dom, nr_vcpus, bufs=3) == errno.E2BIG  # Xen takes two
    assert raw_dm_op(transport, fd, dom, nr_vcpus, bufs=17) == errno.E2BIG  # privcmd takes 16
    assert raw_dm_op(transport, fd, dom, nr_vcpus, size=4097) == errno.E2BIG
    assert raw_dm_op(transport, fd, dom, nr_vcpus, uptr=8) == errno.EFAULT
    assert raw_dm_op(transport, fd, dom, nr_vcpus, bufs=0) == 0  # nothing to do
    assert raw_dm_op(transport, fd, 0x1234, nr_vcpus) == errno.ESRCH
    assert raw_dm_op(transport, fd, 0, nr_vcpus) == errno.EPERM  # dom0 itself
    p.close()


def test_malformed_ioreq_server_ops(transport: EmulatedTransport, domain: HvmDomain,
                                    errno_of: Any, raw_dm_op: Any) -> None:
    p = Privcmd(transport)
    dm = DeviceModelOps(p, domain.domid)
    create = struct.pack("<B3sH", 0, b"\0\x01\0", 0)  # non-zero padding
    assert raw_dm_op(transport, p.fd, domain.domid, _op(abi.XEN_DMOP_create_ioreq_server, create)) == errno.EINVAL
    assert errno_of(dm.create_ioreq_server, 3) == errno.EINVAL  # no such bufioreq mode
    ids = [dm.create_ioreq_server() for _ in range(8)]
    assert ids == list(range(8))
    assert errno_of(dm.create_ioreq_server) == errno.ENOSPC  # MAX_NR_IOREQ_SERVERS
    assert errno_of(dm.set_ioreq_server_state, 9, True) == errno.ENOENT
    assert errno_of(dm.get_ioreq_server_info, 0, False) == 0  # legacy gfns
    bad_flags = struct.pack("<HHIQQ", 1, 2, 0, 0, 0)
    assert raw_dm_op(transport, p.fd, domain.domid,
                     _op(abi.XEN_DMOP_get_ioreq_server_info, bad_flags)) == errno.EINVAL
    # a server whose page was acquired as a resource cannot also get legacy gfns
    region = p.map_resource(domain.domid, abi.XENMEM_resource_ioreq_server, 1,
                            abi.XENMEM_resource_ioreq_server_frame_ioreq(0), 1)
    assert errno_of(dm.get_ioreq_server_info, 1, False) == errno.EPERM
    # ... and the other way round
    assert errno_of(p.map_resource, domain.domid, abi.XENMEM_resource_ioreq_server, 0,
                    abi.XENMEM_resource_ioreq_server_frame_ioreq(0), 1) == errno.EPERM
    # no buffered page on a server without buffered ioreqs; frame 2 does not exist
    assert errno_of(p.map_resource, domain.domid, abi.XENMEM_resource_ioreq_server, 2,
                    abi.XENMEM_resource_ioreq_server_frame_bufioreq, 1) == errno.ENOENT
    assert errno_of(p.map_resource, domain.domid, abi.XENMEM_resource_ioreq_server, 2, 2, 1) == errno.EINVAL
    assert errno_of(p.map_resource, domain.domid, 7, 2, 1, 1) == errno.EOPNOTSUPP
    dm.destroy_ioreq_server(3)
    assert errno_of(dm.destroy_ioreq_server, 3) == errno.ENOENT
    assert dm.create_ioreq_server() == 3  # the freed slot is reused
    region.close()
    p.close()


def test_malformed_memory_and_interrupt_ops(transport: EmulatedTransport, domain: HvmDomain,
                                            errno_of: Any) -> None:
    p = Privcmd(transport)
    dm = DeviceModelOps(p, domain.domid)
    pages = domain.pages
    # a type change before any server owns HVMMEM_ioreq_server, bad types, bad ranges
    assert errno_of(dm.set_mem_type, 10, 1, abi.HVMMEM_ioreq_server) == errno.EINVAL
    assert errno_of(dm.set_mem_type, 10, 1, abi.HVMMEM_unused) == errno.EINVAL
    assert errno_of(dm.set_mem_type, 10, 1, 9) == errno.EINVAL
    assert errno_of(dm.set_mem_type, pages, 1, abi.HVMMEM_ram_ro) == errno.EINVAL
    assert errno_of(dm.set_mem_type, 10, 0, abi.HVMMEM_ram_ro) == errno.EINVAL
    sid = dm.create_ioreq_server()
    assert errno_of(dm.map_mem_type_to_ioreq_server, sid, abi.XEN_DMOP_IOREQ_MEM_ACCESS_READ) == errno.EINVAL
    assert errno_of(dm.map_mem_type_to_ioreq_server, sid, 0) == errno.EINVAL  # not the owner
    dm.map_mem_type_to_ioreq_server(sid, abi.XEN_DMOP_IOREQ_MEM_ACCESS_WRITE)
    # ram_rw <-> ioreq_server only: a read-only page cannot become ioreq_server
    dm.set_mem_type(20, 1, abi.HVMMEM_ram_ro)
    assert errno_of(dm.set_mem_type, 19, 3, abi.HVMMEM_ioreq_server) == errno.EINVAL
    assert int(domain.p2m[19]) == abi.HVMMEM_ioreq_server  # Xen stops at the bad page
    assert errno_of(dm.set_mem_type, 19, 1, abi.HVMMEM_ram_ro) == errno.EINVAL
    dm.set_mem_type(19, 1, abi.HVMMEM_ram_rw)
    assert domain.ioreq_entries == 0
    # MSIs Xen refuses: vector 0 without a pirq, SMI delivery, nobody at APIC 5
    assert errno_of(dm.inject_msi, 0xFEE0_0000, 0x0) == errno.ERANGE
    assert errno_of(dm.inject_msi, 0xFEE0_0000, 0x241) == errno.EINVAL
    assert errno_of(dm.inject_msi, 0xFEE0_5000, 0x141) == errno.ESRCH  # lowest priority
    dm.inject_msi(0xFEE0_0000, 0x7)  # accepted, dropped by the LAPIC: illegal vector
    assert domain.vcpus[0].lapic.pending() == [] and domain.vcpus[0].lapic.illegal_vectors == 1
    dm.inject_msi(0xFEE0_1000, 0x51)  # APIC 1 is vCPU 1
    assert domain.vcpus[1].lapic.pending() == [0x51] and domain.vcpus[0].lapic.pending() == []
    dm.inject_msi(0xFEE0_1000, 0x51)  # pending already: absorbed
    assert domain.vcpus[1].lapic.coalesced == 1
    dm.inject_msi(0xFEE0_0000 | (0xFF << 12), 0x62)  # broadcast
    assert 0x62 in domain.vcpus[0].lapic.pending() and 0x62 in domain.vcpus[1].lapic.pending()
    assert dm.nr_vcpus() == 2
    p.close()


# --- ranges and a second server ----------------------------------------------------------------


def test_overlapping_ranges_within_a_server_are_refused(transport: EmulatedTransport,
                                                        domain: HvmDomain, errno_of: Any) -> None:
    p = Privcmd(transport)
    dm = DeviceModelOps(p, domain.domid)
    sid = dm.create_ioreq_server()
    mem = abi.XEN_DMOP_IO_RANGE_MEMORY
    dm.map_io_range(sid, mem, MMIO, MMIO + 0xFFF)
    assert errno_of(dm.map_io_range, sid, mem, MMIO + 0xFFF, MMIO + 0x1FFF) == errno.EEXIST
    assert errno_of(dm.map_io_range, sid, mem, MMIO - 0x1000, MMIO) == errno.EEXIST
    assert errno_of(dm.map_io_range, sid, mem, MMIO + 0x2000, MMIO + 0x1000) == errno.EINVAL
    assert errno_of(dm.map_io_range, sid, 3, 0, 1) == errno.EINVAL  # no such range type
    assert errno_of(dm.unmap_io_range, sid, mem, MMIO, MMIO + 0x1FFF) == errno.ENOENT
    dm.unmap_io_range(sid, mem, MMIO + 0x800, MMIO + 0xFFF)  # a part of a range is fine
    dm.map_io_range(sid, mem, MMIO + 0x800, MMIO + 0xFFF)
    # the per-server limit of 256 ranges
    for i in range(256):
        dm.map_io_range(sid, abi.XEN_DMOP_IO_RANGE_PORT, 4 * i, 4 * i + 1)
    assert errno_of(dm.map_io_range, sid, abi.XEN_DMOP_IO_RANGE_PORT, 0x1000, 0x1001) == errno.ENOSPC
    p.close()


def test_a_second_server_on_the_same_bdf_and_page_type(
    transport: EmulatedTransport, domain: HvmDomain, errno_of: Any
) -> None:
    """Xen lets two servers claim one SBDF (the newest enabled one gets the accesses),
    but only one server can own HVMMEM_ioreq_server (EBUSY)."""
    p1, p2 = Privcmd(transport), Privcmd(transport)
    dm1, dm2 = DeviceModelOps(p1, domain.domid), DeviceModelOps(p2, domain.domid)
    sbdf = abi.XEN_DMOP_PCI_SBDF(0, 0, 2, 0)
    first, second = dm1.create_ioreq_server(), dm2.create_ioreq_server()
    dm1.map_io_range(first, abi.XEN_DMOP_IO_RANGE_PCI, sbdf, sbdf)
    dm2.map_io_range(second, abi.XEN_DMOP_IO_RANGE_PCI, sbdf, sbdf)
    pci = abi.XEN_DMOP_IO_RANGE_PCI
    assert domain.select_server(pci, sbdf, sbdf) is None  # neither is enabled yet
    dm1.set_ioreq_server_state(first, True)
    assert domain.select_server(pci, sbdf, sbdf) is domain.server(first)
    dm2.set_ioreq_server_state(second, True)
    assert domain.select_server(pci, sbdf, sbdf) is domain.server(second)
    dm1.map_mem_type_to_ioreq_server(first, abi.XEN_DMOP_IOREQ_MEM_ACCESS_WRITE)
    assert errno_of(dm2.map_mem_type_to_ioreq_server, second,
                    abi.XEN_DMOP_IOREQ_MEM_ACCESS_WRITE) == errno.EBUSY
    # pages still typed for the first server block a new owner until reset
    dm1.set_mem_type(100, 4, abi.HVMMEM_ioreq_server)
    dm1.destroy_ioreq_server(first)  # releases the type, leaves the pages typed
    assert domain.ioreq_owner is None and domain.ioreq_entries == 4
    assert errno_of(dm2.map_mem_type_to_ioreq_server, second,
                    abi.XEN_DMOP_IOREQ_MEM_ACCESS_WRITE) == errno.EBUSY
    for gfn in range(100, 104):
        dm2.set_mem_type(gfn, 1, abi.HVMMEM_ram_rw)
    dm2.map_mem_type_to_ioreq_server(second, abi.XEN_DMOP_IOREQ_MEM_ACCESS_WRITE)
    p1.close()
    p2.close()


def test_a_server_belongs_to_its_device_model_domain(xen: EmulatedXen, domain: HvmDomain) -> None:
    """``s->emulator != current->domain`` is EPERM: checked on a server made by another emulator."""
    srv = domain.servers
    t = EmulatedTransport(xen)
    p = Privcmd(t)
    dm = DeviceModelOps(p, domain.domid)
    sid = dm.create_ioreq_server()
    server = srv[sid]
    assert server is not None
    server.emulator = 7  # as if a stub domain made it
    with pytest.raises(Exception) as exc:
        dm.set_ioreq_server_state(sid, True)
    assert getattr(exc.value, "errno", None) == errno.EPERM
    p.close()


# --- the ioreq protocol ------------------------------------------------------------------------


@pytest.fixture
def mmio_model(model: Any) -> Any:
    model.dm.map_io_range(model.server, abi.XEN_DMOP_IO_RANGE_MEMORY, MMIO, MMIO + 0xFFF)
    return model


def test_a_well_behaved_device_model_round_trip(mmio_model: Any, domain: HvmDomain) -> None:
    t, out = _in_thread(lambda: domain.vcpus[1].load(MMIO + 0x10, 4))
    ports = mmio_model.wait_pending()
    assert ports == [mmio_model.ports[1]]
    req = mmio_model.request(1)
    assert (req.type, req.addr, req.size, req.count, req.dir, req.state) == (
        abi.IOREQ_TYPE_COPY, MMIO + 0x10, 4, 1, abi.IOREQ_READ, abi.STATE_IOREQ_READY)
    assert req.vp_eport == mmio_model.vp_eport(1)
    mmio_model.set_state(1, abi.STATE_IOREQ_INPROCESS, notify=False)
    mmio_model.answer(1, 0x1234_5678)
    t.join(5)
    assert out == [0x1234_5678]
    assert mmio_model.request(1).state == abi.STATE_IOREQ_NONE  # Xen consumed the answer


def test_a_device_model_that_sets_the_slot_idle_gives_all_ones(mmio_model: Any,
                                                               domain: HvmDomain) -> None:
    t, out = _in_thread(lambda: domain.vcpus[0].load(MMIO, 4))
    mmio_model.wait_pending()
    mmio_model.set_state(0, abi.STATE_IOREQ_NONE)
    t.join(5)
    assert out == [0xFFFF_FFFF]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([abi.STATE_IOREQ_INPROCESS, abi.STATE_IOREQ_READY], "Weird HVM ioreq state transition 2 -> 1"),
        ([7], "Weird HVM iorequest state 7"),
    ],
    ids=["backwards", "unknown-state"],
)
def test_ioreq_state_violations_crash_the_domain(
    mmio_model: Any, domain: HvmDomain, xen: EmulatedXen, steps: list[int], message: str
) -> None:
    t, out = _in_thread(lambda: domain.vcpus[0].load(MMIO, 4))
    mmio_model.wait_pending()
    for state in steps:
        mmio_model.set_state(0, state)
        time.sleep(0.2)  # the vCPU looks at the slot when the event arrives
    t.join(5)
    assert isinstance(out[0], GuestExitError) and message in str(out[0])
    assert domain.shutdown_reason == abi.SHUTDOWN_crash and xen.lookup(domain.domid) is None


def test_a_busy_slot_or_a_forged_port_crash_the_domain(mmio_model: Any, domain: HvmDomain,
                                                       xen: EmulatedXen) -> None:
    # the device model scribbles on an idle slot: the next request finds it busy
    mmio_model.set_state(0, abi.STATE_IORESP_READY, notify=False)
    with pytest.raises(GuestExitError, match="device model set bad IO state 3"):
        domain.vcpus[0].load(MMIO, 4)
    assert xen.lookup(domain.domid) is None


def test_a_forged_event_channel_crashes_the_domain(mmio_model: Any, domain: HvmDomain) -> None:
    mmio_model.slot(1)[24:28] = (0x77).to_bytes(4, "little")
    with pytest.raises(GuestExitError, match="bad event channel 119"):
        domain.vcpus[1].store(MMIO, 4, 1)


def test_an_unanswered_request_times_out(mmio_model: Any, domain: HvmDomain,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vcpu_module, "IOREQ_TIMEOUT_S", 0.3)
    with pytest.raises(GuestExitError, match="no ioreq response"):
        domain.vcpus[0].store(MMIO, 4, 1)


def test_requests_follow_xens_routing(mmio_model: Any, domain: HvmDomain, xen: EmulatedXen) -> None:
    """Null handler, page splits and power-of-two chunks, PCI via 0xCF8/0xCFC."""
    v = domain.vcpus[0]
    assert v.load(MMIO + 0x1000, 8) == (1 << 64) - 1  # nobody claims it: all ones
    # a 4-byte load at the end of a claimed page: 2 bytes claimed, 2 bytes null
    t, out = _in_thread(lambda: v.load(MMIO + 0xFFE, 4))
    mmio_model.wait_pending()
    assert (mmio_model.request(0).addr, mmio_model.request(0).size) == (MMIO + 0xFFE, 2)
    mmio_model.answer(0, 0xBEEF)
    t.join(5)
    assert out == [0xFFFF_BEEF]
    # config space: only with 0xCF8's enable bit, only for the claimed SBDF
    sbdf = abi.XEN_DMOP_PCI_SBDF(0, 0, 2, 0)
    mmio_model.dm.map_io_range(mmio_model.server, abi.XEN_DMOP_IO_RANGE_PCI, sbdf, sbdf)
    v.outp(0xCF8, 4, 0x0000_1000)  # enable bit clear
    assert v.inp(0xCFC, 2) == 0xFFFF
    v.outp(0xCF8, 4, 0x8000_0800 | 0x0F04)  # 00:01.0 is not claimed
    assert v.inp(0xCFE, 2) == 0xFFFF
    t, out = _in_thread(lambda: v.inp(0xCFE, 2) if v.outp(0xCF8, 4, 0x8000_1004) is None else 0)
    mmio_model.wait_pending()
    req = mmio_model.request(0)
    assert (req.type, req.addr, req.size) == (abi.IOREQ_TYPE_PCI_CONFIG, (sbdf << 32) | 0x6, 2)
    mmio_model.answer(0, 0x0290)
    t.join(5)
    assert out == [0x0290]


# --- event channels -----------------------------------------------------------------------------


def test_event_channels_of_a_dead_domain(transport: EmulatedTransport, xen: EmulatedXen,
                                         model: Any, errno_of: Any) -> None:
    domain = model.domain
    ev = EventChannels(transport)
    remote = model.vp_eport(0)
    # the port is taken by the model already; a port Xen never allocated; a huge port
    assert errno_of(ev.bind_interdomain, domain.domid, remote) == errno.EINVAL
    assert errno_of(ev.bind_interdomain, domain.domid, 999) == errno.EINVAL
    assert errno_of(ev.notify, 5000) == errno.EINVAL
    assert errno_of(ev.notify, model.ports[0]) == errno.ENOTCONN  # another file's port
    restricted = EventChannels(transport)
    restricted.restrict(domain.domid)
    other = xen.create_domain(1 << 20)
    assert errno_of(restricted.bind_interdomain, other.domid, 1) == errno.EACCES
    assert errno_of(restricted.restrict, other.domid) == errno.EACCES
    xen.destroy_domain(domain.domid)
    # binding to a domain that no longer exists
    assert errno_of(ev.bind_interdomain, domain.domid, remote) == errno.ESRCH
    # the model's ports are unbound now: notifying them is silently dropped
    model.evtchn.notify(model.ports[0])
    assert errno_of(model.dm.nr_vcpus) == errno.ESRCH
    region, errs = model.privcmd.map_foreign(domain.domid, [0, 1])
    assert list(errs) == [-errno.ESRCH, -errno.ESRCH]
    region.close()
    model.evtchn.unbind(model.ports[0])
    assert errno_of(model.evtchn.unbind, model.ports[0]) == errno.ENOTCONN
    ev.close()
    restricted.close()


def test_a_masked_port_queues_its_event_again_when_unmasked(model: Any, domain: HvmDomain) -> None:
    ev = model.evtchn
    port = domain.servers[model.server].ports[0]
    domain.evtchn.send(port)
    assert model.wait_pending(1.0) == [model.ports[0]]  # delivered, unmasked again
    domain.evtchn.send(port)
    assert ev.pending() == [model.ports[0]]  # now masked
    domain.evtchn.send(port)  # arrives while masked
    assert ev.pending() == []
    ev.unmask([model.ports[0]])
    assert ev.pending() == [model.ports[0]]


# --- privcmd ------------------------------------------------------------------------------------


def test_privcmd_restriction_and_mapping_rules(transport: EmulatedTransport, domain: HvmDomain,
                                               xen: EmulatedXen, errno_of: Any) -> None:
    other = xen.create_domain(1 << 20)
    p = Privcmd(transport)
    p.restrict(domain.domid)
    assert errno_of(p.restrict, other.domid) == errno.EINVAL
    p.restrict(domain.domid)  # the same domain again is fine
    assert errno_of(DeviceModelOps(p, other.domid).nr_vcpus) == errno.EPERM
    assert errno_of(p.map_foreign, other.domid, [0]) == errno.EPERM
    with pytest.raises(ValueError, match="unrestricted"):
        HostControl(p)
    assert errno_of(p.hypercall, "memory_op", abi.HYPERVISOR_memory_op, abi.XENMEM_maximum_gpfn, 0) == errno.EPERM
    # frames past RAM fail one by one; the region maps the others for real
    region, errs = p.map_foreign(domain.domid, [3, domain.pages, 4])
    assert list(errs) == [0, -errno.EINVAL, 0]
    region[0:5] = b"hello"
    assert bytes(domain.ram.view[3 << 12 : (3 << 12) + 5]) == b"hello"
    region.close()
    # a mapping must target a privcmd region and cover a fresh one exactly
    arr = (ctypes.c_uint64 * 2)(0, 1)
    errs2 = (ctypes.c_int * 2)()
    fresh = transport.mmap(p.fd, 4)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(fresh))
    for target, n in ((addr + 4096, 2), (addr, 2), (addr, 0)):
        arg = abi.privcmd_mmapbatch_v2(num=n, dom=domain.domid, addr=target,
                                       arr=ctypes.addressof(arr), err=ctypes.addressof(errs2))
        assert errno_of(transport.ioctl, p.fd, abi.IOCTL_PRIVCMD_MMAPBATCH_V2, arg) == errno.EINVAL
    plain = ctypes.create_string_buffer(8192)
    arg = abi.privcmd_mmapbatch_v2(num=2, dom=domain.domid, addr=ctypes.addressof(plain),
                                   arr=ctypes.addressof(arr), err=ctypes.addressof(errs2))
    assert errno_of(transport.ioctl, p.fd, abi.IOCTL_PRIVCMD_MMAPBATCH_V2, arg) == errno.EINVAL
    assert errno_of(transport.ioctl, p.fd, 0x1234, None) == errno.ENOTTY
    fresh.close()
    p.close()


def test_domctls_xengt_uses(transport: EmulatedTransport, domain: HvmDomain, errno_of: Any) -> None:
    p = Privcmd(transport)
    ctl = HostControl(p)
    assert ctl.maximum_gpfn(domain.domid) == domain.pages - 1
    assert errno_of(ctl.maximum_gpfn, 0x777) == errno.ESRCH
    gfn, mfn = 0xC0000, 0x123400
    assert errno_of(ctl.memory_mapping, domain.domid, gfn, mfn, 4, True) == errno.EPERM
    ctl.iomem_permission(domain.domid, mfn, 128, True)
    ctl.memory_mapping(domain.domid, gfn, mfn, 100, True)  # 64, then 36 frames
    assert domain.mmio[gfn + 99] == mfn + 99 and domain.max_gpfn == gfn + 99
    ctl.memory_mapping(domain.domid, gfn, mfn, 4, True)  # the same mapping again
    assert errno_of(ctl.memory_mapping, domain.domid, gfn, mfn + 1, 1, True) == errno.EBUSY
    assert errno_of(ctl.memory_mapping, domain.domid, 5, mfn, 1, True) == errno.EBUSY  # RAM
    assert errno_of(ctl.memory_mapping, domain.domid, gfn, 1 << 40, 1, True) == errno.EINVAL
    ctl.memory_mapping(domain.domid, gfn, mfn, 100, False)
    assert not domain.mmio
    # a raw domctl beyond the chunk limit, and one of another interface version
    d = abi.xen_domctl(cmd=abi.XEN_DOMCTL_memory_mapping,
                       interface_version=abi.XEN_DOMCTL_INTERFACE_VERSION, domain=domain.domid)
    d.u.memory_mapping.first_gfn, d.u.memory_mapping.first_mfn = gfn, mfn
    d.u.memory_mapping.nr_mfns, d.u.memory_mapping.add_mapping = 65, 1
    assert errno_of(p.hypercall, "domctl", abi.HYPERVISOR_domctl, ctypes.addressof(d)) == errno.E2BIG
    d.interface_version = 0x14
    assert errno_of(p.hypercall, "domctl", abi.HYPERVISOR_domctl, ctypes.addressof(d)) == errno.EACCES
    # pause counts; a paused domain's vCPUs do not run
    assert errno_of(ctl.unpause, domain.domid) == errno.EINVAL
    ctl.pause(domain.domid)
    ctl.pause(domain.domid)
    with pytest.raises(VgpuStateError, match="paused"):
        domain.vcpus[0].load(0, 4)
    ctl.unpause(domain.domid)
    with pytest.raises(VgpuStateError):
        domain.vcpus[0].load(0, 4)
    ctl.unpause(domain.domid)
    assert domain.vcpus[0].load(0, 4) == 0
    assert errno_of(ctl.pause, 0) == errno.EINVAL  # dom0 does not pause itself
    p.close()


def test_guest_port_on_the_bare_machine(domain: HvmDomain) -> None:
    """Without any device model: no device at 00:02.0, RAM is plain, MSIs arrive."""
    port = XenGuestPort(domain, 1)
    assert port.cfg_read(0, 2) == 0xFFFF
    with pytest.raises(ValueError, match="first 256 bytes"):
        port.cfg_read(0x100, 4)
    port.mem_write(0x1FFE, b"abcd")
    assert port.mem_read(0x1FFE, 4) == b"abcd" and port.mmio_read(0x1FFE, 4) == int.from_bytes(b"abcd", "little")
    domain.vcpus[1].lapic.accept(0x40, Msi(0xFEE0_1000, 0x40))
    assert port.wait_msi(1.0) == Msi(0xFEE0_1000, 0x40)
    assert port.wait_msi(0.01) is None


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 60), st.integers(0, 12)), max_size=30))
def test_rangesets_behave_like_sets_of_addresses(ops: list[tuple[bool, int, int]]) -> None:
    """Xen's map/unmap rules over a rangeset, against a plain set of addresses."""
    ranges, model = Rangeset(limit=1000), set()
    for add, start, length in ops:
        end = start + length
        span = set(range(start, end + 1))
        if add:
            if ranges.overlaps(start, end):
                assert span & model
                continue
            assert not span & model
            assert ranges.add(start, end) == 0
            model |= span
        else:
            if not ranges.contains(start, end):
                assert not span <= model
                continue
            assert span <= model
            assert ranges.remove(start, end) == 0
            model -= span
        covered = {a for s, e in ranges.ranges for a in range(s, e + 1)}
        assert covered == model
        assert all(e1 + 1 < s2 for (_, e1), (s2, _) in itertools.pairwise(ranges.ranges))
