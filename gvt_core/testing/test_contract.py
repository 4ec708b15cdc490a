"""The MPT contract suite: every hook's documented behaviour, on any backend.

Run on an installed backend with::

    pytest --pyargs gvt_core.testing --gvt-backend NAME

Tests decide what to expect from the backend's declared
:class:`~gvt_core.mpt.info.Capabilities`, never from its name. Guest-side
tests need a backend that can launch guests (``can_create_vm``) and are
skipped, saying so, on one that cannot.
"""

from __future__ import annotations

import mmap
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gvt_core.errors import (
    AddressSpaceError,
    DmaFault,
    DmaMapError,
    GuestMemoryError,
    GvtError,
    HookUnsupportedError,
    InvalidGfnError,
    PageTrackError,
    VgpuStateError,
    VmCreateError,
)
from gvt_core.guest.port import (
    CFG_SPACE_SIZE,
    GUEST_PHYS_LIMIT,
    MAX_PENDING_MSIS,
    GuestPort,
    GuestVm,
)
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE, HostPagePool, buffer_address
from gvt_core.mpt import hookspecs
from gvt_core.mpt.info import BackendInfo, Capabilities, DmaMode, HypervisorType, PageTrackMode
from gvt_core.mpt.loader import load_backend
from gvt_core.mpt.ops import Msi
from gvt_core.testing.plugin import GUEST_MEM_SIZE, AttachedVgpu, MptHost, VgpuToken
from gvt_core.testing.threads import Worker, wait_until

SIZE_2M = 2 << 20


def _work_gfn(att: AttachedVgpu, index: int = 0) -> int:
    """Guest frames the tests scribble on: the upper half of RAM, clear of any
    code or tables a backend keeps low in its guests."""
    return (att.vm.mem_size >> PAGE_SHIFT) // 2 + index


def _outside_gpa(att: AttachedVgpu) -> int:
    """A guest-physical address above RAM, 1 GiB aligned (where firmware puts BARs)."""
    return (att.vm.mem_size + (1 << 30)) & ~((1 << 30) - 1)


def _faults(att: AttachedVgpu, dma_addr: int) -> bool:
    try:
        att.host.sysmem.page(dma_addr >> PAGE_SHIFT)
    except DmaFault:
        return True
    return False


# --- identity and loading -----------------------------------------------------------------------


def test_backend_info_is_well_formed(mpt_host: MptHost, gvt_backend_name: str) -> None:
    info = mpt_host.loaded.info
    assert isinstance(info, BackendInfo)
    assert info.name == gvt_backend_name
    assert isinstance(info.version, str) and info.version
    assert info.usable is True and info.reason == ""
    caps = info.capabilities
    assert isinstance(caps, Capabilities)
    assert isinstance(caps.hypervisor, HypervisorType)
    assert isinstance(caps.page_track, PageTrackMode)
    assert isinstance(caps.dma, DmaMode)
    assert caps.max_dma_page in (PAGE_SIZE, SIZE_2M)
    # backend_info is cheap and stable: asking again gives the same answer
    assert mpt_host.loaded.pm.hook.backend_info() == info


def test_mandatory_hooks_are_implemented(mpt_host: MptHost) -> None:
    missing = [h for h in hookspecs.MANDATORY_HOOKS if not mpt_host.mpt.has(h)]
    assert missing == []
    if mpt_host.caps.can_create_vm:
        assert mpt_host.mpt.has("create_vm")


def test_each_host_gets_its_own_plugin_object(
    gvt_backend_name: str, gvt_backend_options: dict[str, Any]
) -> None:
    a = load_backend(gvt_backend_name, **gvt_backend_options)
    b = load_backend(gvt_backend_name, **gvt_backend_options)
    assert a.plugin is not b.plugin
    assert a.pm is not b.pm


# --- the guest VM ------------------------------------------------------------------------------------


def test_guest_vm_protocol(guest_vm: GuestVm) -> None:
    assert isinstance(guest_vm, GuestVm)
    assert guest_vm.mem_size == 64 << 20
    assert guest_vm.held().total == 0


def test_guest_ends_when_closed(mpt_host: MptHost) -> None:
    """``wait_ended`` is what ``gvt serve`` waits on: False while the guest lives."""
    if not mpt_host.caps.can_create_vm:
        pytest.skip(f"gvt backend {mpt_host.name!r} cannot launch guests (can_create_vm=False)")
    vm = mpt_host.mpt.create_vm(mpt_host.context, GUEST_MEM_SIZE, "contract-ends")
    try:
        assert vm.wait_ended(0.01) is False
    finally:
        vm.close()
    assert vm.wait_ended(0.01) is True


def test_port_needs_an_attached_vgpu(guest_vm: GuestVm) -> None:
    with pytest.raises(VgpuStateError):
        guest_vm.port()


def test_attached_port_is_a_guest_port(attached: AttachedVgpu) -> None:
    assert isinstance(attached.port, GuestPort)
    assert attached.port.mem_size == attached.vm.mem_size


def test_create_vm_rejects_a_size_that_is_not_whole_pages(mpt_host: MptHost) -> None:
    if not mpt_host.caps.can_create_vm:
        with pytest.raises(HookUnsupportedError):
            mpt_host.mpt.create_vm(mpt_host.context, 1 << 20, "contract-none")
        return
    with pytest.raises((ValueError, GvtError)):
        mpt_host.mpt.create_vm(mpt_host.context, (1 << 20) + 100, "contract-odd")


# --- guest memory -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0x10, 8), (PAGE_SIZE - 3, 7), (0, 3 * PAGE_SIZE), (0x123, 1 << 20)],
    ids=["small", "page-crossing", "pages", "1MiB-unaligned"],
)
def test_guest_memory_round_trips(attached: AttachedVgpu, offset: int, length: int) -> None:
    gpa = (_work_gfn(attached) << PAGE_SHIFT) + offset
    data = bytes((i * 7 + 3) & 0xFF for i in range(length))
    attached.mpt.write_gpa(attached.handle, gpa, data)
    assert attached.mpt.read_gpa(attached.handle, gpa, length) == data
    assert attached.port.mem_read(gpa, length) == data


def test_guest_memory_bounds(attached: AttachedVgpu) -> None:
    mpt, h, size = attached.mpt, attached.handle, attached.vm.mem_size
    mpt.write_gpa(h, size - 8, b"\x11" * 8)
    with pytest.raises(GuestMemoryError):
        mpt.read_gpa(h, size - 4, 8)
    with pytest.raises(GuestMemoryError):
        mpt.write_gpa(h, size - 4, b"\x22" * 8)
    # nothing was written, not even the bytes that were inside RAM
    assert mpt.read_gpa(h, size - 8, 8) == b"\x11" * 8
    with pytest.raises(GuestMemoryError):
        mpt.read_gpa(h, size, 1)
    with pytest.raises(GuestMemoryError):
        mpt.read_gpa(h, -PAGE_SIZE, 4)
    with pytest.raises(GuestMemoryError):
        mpt.write_gpa(h, -1, b"\x00")
    assert mpt.read_gpa(h, size - 8, 0) == b""
    with pytest.raises((ValueError, GuestMemoryError)):
        mpt.read_gpa(h, 0, -1)
    with pytest.raises(GuestMemoryError):
        attached.port.mem_read(size - 2, 4)
    with pytest.raises(GuestMemoryError):
        attached.port.mem_write(size - 2, b"\x33" * 4)
    assert mpt.read_gpa(h, size - 8, 8) == b"\x11" * 8


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    writes=st.lists(
        st.tuples(st.integers(0, 3 * PAGE_SIZE - 1), st.binary(min_size=1, max_size=600),
                  st.booleans()),
        min_size=1, max_size=8,
    )
)
def test_guest_memory_behaves_like_a_byte_array(
    attached: AttachedVgpu, writes: list[tuple[int, bytes, bool]]
) -> None:
    """Host writes and guest CPU writes to a window agree with a plain bytearray."""
    base = _work_gfn(attached, 8) << PAGE_SHIFT
    span = 3 * PAGE_SIZE + 600
    model = bytearray(attached.mpt.read_gpa(attached.handle, base, span))
    for off, data, by_guest in writes:
        if by_guest:
            attached.port.mem_write(base + off, data)
        else:
            attached.mpt.write_gpa(attached.handle, base + off, data)
        model[off : off + len(data)] = data
    assert attached.mpt.read_gpa(attached.handle, base, span) == bytes(model)


def test_guest_stores_are_little_endian_and_shared_with_the_host(attached: AttachedVgpu) -> None:
    gpa = _work_gfn(attached) << PAGE_SHIFT
    attached.port.store(gpa, 0x1122334455667788, 8)
    attached.port.store(gpa + 8, 0xABCD, 2)
    assert attached.mpt.read_gpa(attached.handle, gpa, 10) == bytes.fromhex("88776655443322 11 cdab".replace(" ", ""))
    attached.mpt.write_gpa(attached.handle, gpa + 16, b"\x01\x02\x03\x04")
    assert attached.port.mmio_read(gpa + 16, 4) == 0x04030201
    attached.port.mmio_write(gpa + 20, 0xFEEDFACE, 4)
    assert attached.port.mem_read(gpa + 20, 4) == (0xFEEDFACE).to_bytes(4, "little")


def test_guests_are_isolated(mpt_host: MptHost, attached: AttachedVgpu) -> None:
    other = mpt_host.mpt.create_vm(mpt_host.context, 64 << 20, "contract-other")
    try:
        h2 = mpt_host.mpt.attach_vgpu(VgpuToken(id=2), other)
        gpa = _work_gfn(attached) << PAGE_SHIFT
        mpt_host.mpt.write_gpa(attached.handle, gpa, b"first VM")
        mpt_host.mpt.write_gpa(h2, gpa, b"other VM")
        assert mpt_host.mpt.read_gpa(attached.handle, gpa, 8) == b"first VM"
        assert mpt_host.mpt.gfn_to_mfn(attached.handle, gpa >> PAGE_SHIFT) != (
            mpt_host.mpt.gfn_to_mfn(h2, gpa >> PAGE_SHIFT)
        )
        a1 = mpt_host.mpt.dma_map_guest_page(attached.handle, gpa >> PAGE_SHIFT, PAGE_SIZE)
        a2 = mpt_host.mpt.dma_map_guest_page(h2, gpa >> PAGE_SHIFT, PAGE_SIZE)
        assert a1 != a2
        assert mpt_host.sysmem.read(a1, 8) == b"first VM"
        assert mpt_host.sysmem.read(a2, 8) == b"other VM"
        mpt_host.mpt.dma_unmap_guest_page(h2, a2)
        mpt_host.mpt.detach_vgpu(h2)
        assert other.held().total == 0
        assert mpt_host.sysmem.read(a1, 8) == b"first VM"
    finally:
        other.close()


# --- frames ------------------------------------------------------------------------------------------------


def test_gfn_to_mfn_is_stable_and_distinct(attached: AttachedVgpu) -> None:
    g = _work_gfn(attached)
    mfns = [attached.mpt.gfn_to_mfn(attached.handle, g + i) for i in range(8)]
    assert all(isinstance(m, int) and m >= 0 for m in mfns)
    assert len(set(mfns)) == 8
    assert [attached.mpt.gfn_to_mfn(attached.handle, g + i) for i in range(8)] == mfns


def test_gfn_outside_ram_is_invalid(attached: AttachedVgpu) -> None:
    pages = attached.vm.mem_size >> PAGE_SHIFT
    for bad in (pages, pages + 12345, -1):
        with pytest.raises(InvalidGfnError):
            attached.mpt.gfn_to_mfn(attached.handle, bad)
        if attached.mpt.has("is_valid_gfn"):
            assert attached.mpt.is_valid_gfn(attached.handle, bad) is False
    assert attached.mpt.is_valid_gfn(attached.handle, 0) is True
    assert attached.mpt.is_valid_gfn(attached.handle, pages - 1) is True


def test_from_virt_to_mfn_is_stable_and_distinct(mpt_host: MptHost) -> None:
    buf = mmap.mmap(-1, 4 * PAGE_SIZE)
    try:
        base = buffer_address(buf)
        frames = [mpt_host.mpt.from_virt_to_mfn(base + i * PAGE_SIZE) for i in range(4)]
        assert len(set(frames)) == 4
        assert [mpt_host.mpt.from_virt_to_mfn(base + i * PAGE_SIZE) for i in range(4)] == frames
    finally:
        buf.close()


def test_core_pages_registered_with_backend_frames_are_reachable(mpt_host: MptHost) -> None:
    pool = HostPagePool(mpt_host.sysmem, mpt_host.mpt.from_virt_to_mfn, owner="contract")
    frame, page = pool.alloc()
    page[:4] = b"core"
    assert mpt_host.sysmem.read(frame << PAGE_SHIFT, 4) == b"core"
    pool.free(frame, page)
    with pytest.raises(DmaFault):
        mpt_host.sysmem.read(frame << PAGE_SHIFT, 4)


# --- page tracking -------------------------------------------------------------------------------------------


def test_tracked_store_traps_with_exact_bytes(attached: AttachedVgpu) -> None:
    g = _work_gfn(attached)
    gpa = (g << PAGE_SHIFT) + 0x18
    attached.mpt.write_gpa(attached.handle, gpa, b"\xaa" * 8)
    attached.track(g)
    attached.port.store(gpa, 0x0102030405060708, 8)
    traps = attached.host.ops.of("page_track_write")
    assert [(t.vgpu_id, t.args) for t in traps] == [
        (1, (gpa, bytes.fromhex("0807060504030201")))
    ]
    now = attached.mpt.read_gpa(attached.handle, gpa, 8)
    if attached.host.caps.page_track is PageTrackMode.WRITE_LANDED:
        assert now == bytes.fromhex("0807060504030201")
    else:
        # forwarded: the write did not land; the core commits it
        assert now == b"\xaa" * 8
        attached.mpt.write_gpa(attached.handle, gpa, traps[0].args[1])
        assert attached.mpt.read_gpa(attached.handle, gpa, 8) == bytes.fromhex("0807060504030201")
    # the host's own write never traps
    attached.mpt.write_gpa(attached.handle, gpa, b"\x00" * 8)
    assert len(attached.host.ops.of("page_track_write")) == 1


def test_mem_write_to_a_tracked_page_traps_per_natural_store(attached: AttachedVgpu) -> None:
    g = _work_gfn(attached)
    base = g << PAGE_SHIFT
    attached.track(g)
    data = bytes(range(1, 25))
    attached.port.mem_write(base + 4, data)
    traps = [t.args for t in attached.host.ops.of("page_track_write")]
    assert [(gpa - base, len(d)) for gpa, d in traps] == [(4, 4), (8, 8), (16, 8), (24, 4)]
    assert b"".join(d for _, d in traps) == data
    attached.host.ops.clear()
    attached.port.mem_write(base + 64, bytes(64))
    assert [len(t.args[1]) for t in attached.host.ops.of("page_track_write")] == [8] * 8


def test_writes_straddling_a_tracked_page_trap_only_inside_it(attached: AttachedVgpu) -> None:
    g = _work_gfn(attached)
    attached.track(g + 1)
    start = ((g + 1) << PAGE_SHIFT) - 8
    attached.port.mem_write(start, b"L" * 8 + b"T" * 8)
    traps = [t.args for t in attached.host.ops.of("page_track_write")]
    assert traps == [((g + 1) << PAGE_SHIFT, b"T" * 8)]
    assert attached.mpt.read_gpa(attached.handle, start, 8) == b"L" * 8


def test_untracked_pages_and_disabled_tracks_do_not_trap(attached: AttachedVgpu) -> None:
    g = _work_gfn(attached)
    attached.track(g)
    attached.port.store((g + 1) << PAGE_SHIFT, 0x55, 1)
    assert attached.host.ops.of("page_track_write") == []
    attached.untrack(g)
    attached.port.store(g << PAGE_SHIFT, 0x66, 1)
    assert attached.host.ops.of("page_track_write") == []
    assert attached.mpt.read_gpa(attached.handle, g << PAGE_SHIFT, 1) == b"\x66"
    assert attached.vm.held().page_tracks == 0


def test_bulk_page_track_traps_like_single_tracks(attached: AttachedVgpu) -> None:
    """``enable_page_tracks`` (the backend's, or the core default): every page traps."""
    mpt, h, g = attached.mpt, attached.handle, _work_gfn(attached)
    frames = [g + 3, g, g + 7]
    mpt.enable_page_tracks(h, frames)
    for gfn in frames:
        attached.host.ops.tracked.add((attached.vgpu.id, gfn))
    assert attached.vm.held().page_tracks == 3
    for gfn in frames:
        attached.port.store((gfn << PAGE_SHIFT) + 8, 0x1122, 8)
    assert [t.args[0] for t in attached.host.ops.of("page_track_write")] == [
        (gfn << PAGE_SHIFT) + 8 for gfn in frames
    ]
    attached.port.store((g + 1) << PAGE_SHIFT, 0x33, 8)  # not in the batch
    assert len(attached.host.ops.of("page_track_write")) == 3
    for gfn in frames:
        attached.untrack(gfn)
    assert attached.vm.held().page_tracks == 0
    mpt.enable_page_tracks(h, [])
    assert attached.vm.held().page_tracks == 0


def test_bulk_page_track_is_all_or_nothing(attached: AttachedVgpu) -> None:
    mpt, h, g = attached.mpt, attached.handle, _work_gfn(attached)
    pages = attached.vm.mem_size >> PAGE_SHIFT
    attached.track(g + 2)
    with pytest.raises(PageTrackError):
        mpt.enable_page_tracks(h, [g, g + 1, g + 2])  # g + 2 is tracked already
    assert attached.vm.held().page_tracks == 1
    with pytest.raises(InvalidGfnError):
        mpt.enable_page_tracks(h, [g, g + 1, pages + 3])
    assert attached.vm.held().page_tracks == 1
    attached.port.store(g << PAGE_SHIFT, 0x44, 8)
    assert attached.host.ops.of("page_track_write") == []
    attached.untrack(g + 2)
    assert attached.vm.held().page_tracks == 0


def test_page_track_errors(attached: AttachedVgpu) -> None:
    g = _work_gfn(attached)
    attached.track(g)
    assert attached.vm.held().page_tracks == 1
    with pytest.raises(PageTrackError):
        attached.mpt.enable_page_track(attached.handle, g)
    with pytest.raises(PageTrackError):
        attached.mpt.disable_page_track(attached.handle, g + 1)
    with pytest.raises(InvalidGfnError):
        attached.mpt.enable_page_track(attached.handle, attached.vm.mem_size >> PAGE_SHIFT)
    attached.untrack(g)
    with pytest.raises(PageTrackError):
        attached.mpt.disable_page_track(attached.handle, g)


# --- interrupts ------------------------------------------------------------------------------------------------


def test_msis_arrive_exactly_and_in_order(attached: AttachedVgpu) -> None:
    # deliverable messages (fixed delivery to APIC 0, vectors >= 16): a hypervisor
    # refuses vector 0 and SMI delivery and a LAPIC drops vectors below 16; taken
    # highest vector first, so descending vectors arrive in the order sent
    sent = [(0xFEE0_0000, 0x45), (0xFEE0_0008, 0x44), (0xFEE0_0000, 0x43)]
    for address, data in sent:
        attached.mpt.inject_msi(attached.handle, address, data)
    got = [attached.port.wait_msi(1.0) for _ in sent]
    assert got == [Msi(a, d) for a, d in sent]


def test_wait_msi_times_out_with_none(attached: AttachedVgpu) -> None:
    assert attached.port.wait_msi(0.02) is None


def test_msi_wakes_a_waiting_guest_thread(attached: AttachedVgpu) -> None:
    got: list[Msi | None] = []
    waiter = threading.Thread(target=lambda: got.append(attached.port.wait_msi(5.0)))
    waiter.start()
    attached.mpt.inject_msi(attached.handle, 0xFEE0_0000, 0x99)
    waiter.join(5.0)
    assert got == [Msi(0xFEE0_0000, 0x99)]


# --- DMA -----------------------------------------------------------------------------------------------------------


def test_dma_maps_are_refcounted(attached: AttachedVgpu) -> None:
    mpt, h, g = attached.mpt, attached.handle, _work_gfn(attached)
    a = mpt.dma_map_guest_page(h, g, PAGE_SIZE)
    assert a % PAGE_SIZE == 0
    assert mpt.dma_map_guest_page(h, g, PAGE_SIZE) == a
    assert attached.vm.held().dma_maps == 1
    mpt.dma_unmap_guest_page(h, a)
    assert not _faults(attached, a)
    mpt.dma_unmap_guest_page(h, a)
    assert _faults(attached, a)
    assert attached.vm.held().dma_maps == 0
    with pytest.raises(DmaMapError):
        mpt.dma_unmap_guest_page(h, a)


def test_dma_addresses_follow_the_declared_mode(attached: AttachedVgpu) -> None:
    mpt, h, g = attached.mpt, attached.handle, _work_gfn(attached)
    addrs = [mpt.dma_map_guest_page(h, g + i, PAGE_SIZE) for i in range(4)]
    assert len(set(addrs)) == 4
    mfns = [mpt.gfn_to_mfn(h, g + i) << PAGE_SHIFT for i in range(4)]
    if attached.host.caps.dma is DmaMode.IDENTITY:
        assert addrs == mfns
    for a in addrs:
        mpt.dma_unmap_guest_page(h, a)


def test_dma_is_coherent_with_guest_memory(attached: AttachedVgpu) -> None:
    mpt, h, g = attached.mpt, attached.handle, _work_gfn(attached)
    mpt.write_gpa(h, g << PAGE_SHIFT, b"guest wrote this")
    a = mpt.dma_map_guest_page(h, g, PAGE_SIZE)
    sysmem = attached.host.sysmem
    assert sysmem.read(a, 16) == b"guest wrote this"
    sysmem.write(a + 100, b"gpu wrote this")
    assert attached.port.mem_read((g << PAGE_SHIFT) + 100, 14) == b"gpu wrote this"
    attached.port.mem_write((g << PAGE_SHIFT) + 200, b"cpu again")
    assert sysmem.read(a + 200, 9) == b"cpu again"
    mpt.dma_unmap_guest_page(h, a)


def test_dma_unknown_address_is_refused(attached: AttachedVgpu) -> None:
    mpt, h = attached.mpt, attached.handle
    a = mpt.dma_map_guest_page(h, _work_gfn(attached), PAGE_SIZE)
    for bogus in (a + PAGE_SIZE * 1000, a + 8, 1 << 60):
        with pytest.raises(DmaMapError):
            mpt.dma_unmap_guest_page(h, bogus)
    assert not _faults(attached, a)
    mpt.dma_unmap_guest_page(h, a)


def test_dma_pin_takes_a_reference(attached: AttachedVgpu) -> None:
    mpt, h = attached.mpt, attached.handle
    a = mpt.dma_map_guest_page(h, _work_gfn(attached), PAGE_SIZE)
    if not mpt.has("dma_pin_guest_page"):
        with pytest.raises(HookUnsupportedError):
            mpt.dma_pin_guest_page(h, a)
        mpt.dma_unmap_guest_page(h, a)
        return
    mpt.dma_pin_guest_page(h, a)
    assert attached.vm.held().dma_pins == 1
    mpt.dma_unmap_guest_page(h, a)  # the map's own reference
    assert not _faults(attached, a)
    mpt.dma_unmap_guest_page(h, a)  # the pin's
    assert _faults(attached, a)
    assert attached.vm.held().dma_pins == 0
    with pytest.raises(DmaMapError):
        mpt.dma_pin_guest_page(h, a)


def test_dma_argument_errors(attached: AttachedVgpu) -> None:
    mpt, h, pages = attached.mpt, attached.handle, attached.vm.mem_size >> PAGE_SHIFT
    for bad_size in (0, 3000, 8192, 1 << 30):
        with pytest.raises(DmaMapError):
            mpt.dma_map_guest_page(h, _work_gfn(attached), bad_size)
    with pytest.raises(InvalidGfnError):
        mpt.dma_map_guest_page(h, pages, PAGE_SIZE)
    with pytest.raises(InvalidGfnError):
        mpt.dma_map_guest_page(h, -1, PAGE_SIZE)
    assert attached.vm.held().dma_maps == 0


def test_dma_2m_pages(attached: AttachedVgpu) -> None:
    mpt, h = attached.mpt, attached.handle
    g = _work_gfn(attached) & ~511
    if attached.host.caps.max_dma_page < SIZE_2M:
        with pytest.raises(DmaMapError):
            mpt.dma_map_guest_page(h, g, SIZE_2M)
        return
    mpt.write_gpa(h, (g << PAGE_SHIFT) + 5 * PAGE_SIZE + 7, b"inside 2M")
    a = mpt.dma_map_guest_page(h, g, SIZE_2M)
    assert a % SIZE_2M == 0 or attached.host.caps.dma is DmaMode.IOMMU
    assert mpt.dma_map_guest_page(h, g, SIZE_2M) == a
    assert attached.host.sysmem.read(a + 5 * PAGE_SIZE + 7, 9) == b"inside 2M"
    assert not _faults(attached, a + SIZE_2M - PAGE_SIZE)
    with pytest.raises(DmaMapError):
        mpt.dma_map_guest_page(h, g + 1, SIZE_2M)
    pages = attached.vm.mem_size >> PAGE_SHIFT
    with pytest.raises(InvalidGfnError):
        mpt.dma_map_guest_page(h, pages, SIZE_2M)
    mpt.dma_unmap_guest_page(h, a)
    assert not _faults(attached, a)
    mpt.dma_unmap_guest_page(h, a)
    assert _faults(attached, a) and _faults(attached, a + SIZE_2M - PAGE_SIZE)
    assert attached.vm.held().dma_maps == 0


def test_dma_bulk_map_matches_single_maps(attached: AttachedVgpu) -> None:
    mpt, h, g = attached.mpt, attached.handle, _work_gfn(attached)
    gfns = [g, g + 1, g + 2, g, g + 7]
    out = mpt.dma_map_guest_pages(h, gfns, PAGE_SIZE)
    assert len(out) == len(gfns)
    addrs = [int(a) for a in out]  # a list or an integer array, as the hook allows
    assert addrs[0] == addrs[3]
    assert len(set(addrs)) == 4
    for gfn, a in zip(gfns, addrs, strict=True):
        assert mpt.dma_map_guest_page(h, gfn, PAGE_SIZE) == a
    assert attached.vm.held().dma_maps == 4
    # references: 2 (bulk) + 2 (single) for g, 1 + 1 for the others
    for a in addrs + addrs:
        mpt.dma_unmap_guest_page(h, a)
    assert attached.vm.held().dma_maps == 0
    assert all(_faults(attached, a) for a in addrs)


def test_dma_bulk_map_is_all_or_nothing(attached: AttachedVgpu) -> None:
    mpt, h, g = attached.mpt, attached.handle, _work_gfn(attached)
    keep = mpt.dma_map_guest_page(h, g, PAGE_SIZE)
    pages = attached.vm.mem_size >> PAGE_SHIFT
    with pytest.raises(InvalidGfnError):
        mpt.dma_map_guest_pages(h, [g, g + 1, g + 2, pages + 5], PAGE_SIZE)
    assert attached.vm.held().dma_maps == 1
    mpt.dma_unmap_guest_page(h, keep)
    assert attached.vm.held().dma_maps == 0
    assert len(mpt.dma_map_guest_pages(h, [], PAGE_SIZE)) == 0


def test_dma_bulk_map_of_a_frame_run_and_of_an_array(attached: AttachedVgpu) -> None:
    """A page table's shape (one ascending run, passed as a uint64 array) maps like
    single maps, over frames already mapped and fresh ones alike."""
    mpt, h, g = attached.mpt, attached.handle, _work_gfn(attached)
    first = mpt.dma_map_guest_page(h, g + 2, PAGE_SIZE)
    run = np.arange(g, g + 6, dtype=np.uint64)
    addrs = [int(a) for a in mpt.dma_map_guest_pages(h, run, PAGE_SIZE)]
    assert addrs[2] == first and len(set(addrs)) == 6
    for i, a in enumerate(addrs):
        assert mpt.dma_map_guest_page(h, g + i, PAGE_SIZE) == a
        assert attached.host.sysmem.read(a, 8) == mpt.read_gpa(h, (g + i) << PAGE_SHIFT, 8)
    mpt.dma_unmap_guest_pages(h, np.array(addrs + addrs + [first], dtype=np.uint64))
    assert attached.vm.held().dma_maps == 0
    assert all(_faults(attached, a) for a in addrs)


def test_dma_bulk_unmap_drops_one_reference_per_address(attached: AttachedVgpu) -> None:
    """``dma_unmap_guest_pages`` (the backend's, or the core default)."""
    mpt, h, g = attached.mpt, attached.handle, _work_gfn(attached)
    a = [int(x) for x in mpt.dma_map_guest_pages(h, [g, g + 1, g, g + 5], PAGE_SIZE)]
    assert attached.vm.held().dma_maps == 3
    mpt.dma_unmap_guest_pages(h, [a[0], a[1]])  # g keeps its second reference
    assert attached.vm.held().dma_maps == 2
    assert not _faults(attached, a[0]) and _faults(attached, a[1])
    mpt.dma_unmap_guest_pages(h, [])
    mpt.dma_unmap_guest_pages(h, [a[3], a[0]])
    assert attached.vm.held().dma_maps == 0
    assert _faults(attached, a[0]) and _faults(attached, a[3])


def test_dma_bulk_unmap_refuses_unknown_addresses(attached: AttachedVgpu) -> None:
    mpt, h, g = attached.mpt, attached.handle, _work_gfn(attached)
    keep = mpt.dma_map_guest_page(h, g, PAGE_SIZE)
    with pytest.raises(DmaMapError):
        mpt.dma_unmap_guest_pages(h, [keep + (64 << 30)])
    assert attached.vm.held().dma_maps == 1
    if mpt.has("dma_unmap_guest_pages"):
        # a backend's bulk unmap checks everything first: nothing was dropped
        with pytest.raises(DmaMapError):
            mpt.dma_unmap_guest_pages(h, [keep, keep])  # one reference, two drops
        assert attached.vm.held().dma_maps == 1 and not _faults(attached, keep)
    mpt.dma_unmap_guest_page(h, keep)
    assert attached.vm.held().dma_maps == 0


# --- config space, trap areas, gfn maps -----------------------------------------------------------------------


def test_config_accesses_reach_the_core(attached: AttachedVgpu) -> None:
    attached.host.ops.cfg_answers[0x00] = 0x8086
    assert attached.port.cfg_read(0x00, 2) == 0x8086
    assert attached.port.cfg_read(0x10, 4) == 0xFFFF_FFFF
    attached.port.cfg_write(0x04, 0x7, 2)
    calls = [(c.op, c.vgpu_id, c.args) for c in attached.host.ops.calls]
    assert calls == [
        ("emulate_cfg_read", 1, (0x00, 2)),
        ("emulate_cfg_read", 1, (0x10, 4)),
        ("emulate_cfg_write", 1, (0x04, 0x7, 2)),
    ]


def test_unassigned_guest_addresses_read_all_ones(attached: AttachedVgpu) -> None:
    gpa = _outside_gpa(attached) + 0x40_0000
    assert attached.port.mmio_read(gpa, 4) == 0xFFFF_FFFF
    assert attached.port.mmio_read(gpa, 8) == (1 << 64) - 1
    attached.port.mmio_write(gpa, 0x1234, 4)  # dropped
    assert attached.port.mmio_read(gpa, 2) == 0xFFFF
    assert not [c for c in attached.host.ops.calls if c.op.startswith("emulate_mmio")]


def test_trap_area_routes_guest_accesses_to_the_core(attached: AttachedVgpu) -> None:
    if not attached.host.caps.needs_trap_area:
        pytest.skip("backend traps BAR0 without set_trap_area (needs_trap_area=False)")
    mpt, h, ops = attached.mpt, attached.handle, attached.host.ops
    start = _outside_gpa(attached)
    end = start + (16 << 20)
    mpt.set_trap_area(h, start, end, True)
    assert attached.vm.held().trap_areas == 1
    ops.mmio_answers[start + 0x2030] = 0xCAFE
    attached.port.mmio_write(start + 0x2030, 0xDEADBEEF, 4)
    attached.port.mmio_write(end - 8, 0x0123_4567_89AB_CDEF, 8)
    assert attached.port.mmio_read(start + 0x2030, 4) == 0xCAFE
    attached.port.mmio_write(end, 1, 4)  # end is exclusive: unassigned
    assert [(c.op, c.args) for c in ops.calls] == [
        ("emulate_mmio_write", (start + 0x2030, 0xDEADBEEF, 4)),
        ("emulate_mmio_write", (end - 8, 0x0123_4567_89AB_CDEF, 8)),
        ("emulate_mmio_read", (start + 0x2030, 4)),
    ]
    with pytest.raises(AddressSpaceError):
        mpt.set_trap_area(h, start + PAGE_SIZE, end + PAGE_SIZE, True)
    with pytest.raises(AddressSpaceError):
        mpt.set_trap_area(h, start, end - PAGE_SIZE, False)
    mpt.set_trap_area(h, start, end, False)
    assert attached.vm.held().trap_areas == 0
    ops.clear()
    assert attached.port.mmio_read(start + 0x2030, 4) == 0xFFFF_FFFF
    assert ops.calls == []


def test_gfn_map_shows_host_frames_to_the_guest(attached: AttachedVgpu) -> None:
    if not attached.host.caps.needs_aperture_map:
        pytest.skip("backend serves the aperture BAR otherwise (needs_aperture_map=False)")
    mpt, h, sysmem = attached.mpt, attached.handle, attached.host.sysmem
    pool = HostPagePool(sysmem, mpt.from_virt_to_mfn, owner="contract-aperture")
    pages = [pool.alloc() for _ in range(2)]
    try:
        pages[0][1][:8] = b"aperture"
        gfn = _outside_gpa(attached) >> PAGE_SHIFT
        for i, (frame, _) in enumerate(pages):
            mpt.map_gfn_to_mfn(h, gfn + i, frame, 1, True)
        assert attached.vm.held().gfn_maps == 2
        gpa = gfn << PAGE_SHIFT
        assert attached.port.mmio_read(gpa, 8) == int.from_bytes(b"aperture", "little")
        attached.port.mmio_write(gpa + PAGE_SIZE + 16, 0xA5A5, 2)
        assert bytes(pages[1][1][16:18]) == b"\xa5\xa5"
        # a load crossing from one mapped page into the next
        pages[1][1][:2] = b"NX"
        pages[0][1][PAGE_SIZE - 2 :] = b"XT"
        assert attached.port.mmio_read(gpa + PAGE_SIZE - 2, 4) == int.from_bytes(b"XTNX", "little")
        with pytest.raises(AddressSpaceError):
            mpt.map_gfn_to_mfn(h, gfn + 1, pages[0][0], 2, True)
        with pytest.raises(AddressSpaceError):
            mpt.map_gfn_to_mfn(h, gfn, pages[1][0], 1, False)
        for i, (frame, _) in enumerate(pages):
            mpt.map_gfn_to_mfn(h, gfn + i, frame, 1, False)
        assert attached.vm.held().gfn_maps == 0
        assert attached.port.mmio_read(gpa, 4) == 0xFFFF_FFFF
    finally:
        for frame, page in pages:
            pool.free(frame, page)


def test_opregion_is_placed_in_the_guest(attached: AttachedVgpu) -> None:
    mpt, h, sysmem = attached.mpt, attached.handle, attached.host.sysmem
    pool = HostPagePool(sysmem, mpt.from_virt_to_mfn, owner="contract-opregion")
    pages = [pool.alloc() for _ in range(2)]
    try:
        pages[0][1][:16] = b"IntelGraphicsMem"
        pages[1][1][:4] = b"page"
        gpa = mpt.set_opregion(h, [f for f, _ in pages])
        if gpa is None:
            assert not mpt.has("set_opregion") or attached.vm.held().gfn_maps == 0
            return
        assert gpa % PAGE_SIZE == 0
        got = b"".join(
            attached.port.mmio_read(gpa + i, 8).to_bytes(8, "little") for i in (0, 8)
        )
        assert got == b"IntelGraphicsMem"
        assert attached.port.mmio_read(gpa + PAGE_SIZE, 4) == int.from_bytes(b"page", "little")
        attached.detach()
        assert attached.vm.held().total == 0
    finally:
        for frame, page in pages:
            pool.free(frame, page)


def test_pvmmio_keeps_stores_trapped(attached: AttachedVgpu) -> None:
    mpt, h = attached.mpt, attached.handle
    start = _outside_gpa(attached)
    if not mpt.has("set_pvmmio"):
        with pytest.raises(HookUnsupportedError):
            mpt.set_pvmmio(h, start, start + (2 << 20), True)
        return
    mpt.set_pvmmio(h, start, start + (2 << 20), True)
    assert attached.vm.held().pvmmio_maps == 1
    attached.port.mmio_write(start + 0x100, 0x42, 4)
    assert [c.args for c in attached.host.ops.of("emulate_mmio_write")] == [(start + 0x100, 0x42, 4)]
    mpt.set_pvmmio(h, start, start + (2 << 20), False)
    assert attached.vm.held().pvmmio_maps == 0


def test_optional_notifications_are_accepted(mpt_host: MptHost, attached: AttachedVgpu) -> None:
    mpt_host.mpt.dom0_ready()
    mpt_host.mpt.set_edid(attached.handle, 1)
    assert attached.vm.held().total == 0


def test_pause_and_unpause(attached: AttachedVgpu) -> None:
    mpt, h = attached.mpt, attached.handle
    if not mpt.has("pause_domain"):
        with pytest.raises(HookUnsupportedError):
            mpt.pause_domain(h)
        return
    gpa = _work_gfn(attached) << PAGE_SHIFT
    mpt.pause_domain(h)
    # the host still reaches a paused guest's memory and may queue interrupts
    mpt.write_gpa(h, gpa, b"paused")
    assert mpt.read_gpa(h, gpa, 6) == b"paused"
    mpt.inject_msi(h, 0xFEE0_0000, 0x47)
    mpt.unpause_domain(h)
    assert attached.port.wait_msi(1.0) == Msi(0xFEE0_0000, 0x47)
    assert attached.port.mem_read(gpa, 6) == b"paused"


# --- detach ------------------------------------------------------------------------------------------------------------


def test_detach_releases_everything(attached: AttachedVgpu) -> None:
    mpt, h, caps, sysmem = attached.mpt, attached.handle, attached.host.caps, attached.host.sysmem
    pages_before, windows_before = sysmem.count(), sysmem.window_count
    g = _work_gfn(attached)
    outside = _outside_gpa(attached)
    for i in range(3):
        attached.track(g + i)
    addrs = [int(a) for a in mpt.dma_map_guest_pages(h, [g + 10 + i for i in range(16)], PAGE_SIZE)]
    addrs.append(mpt.dma_map_guest_page(h, g + 40, PAGE_SIZE))
    if mpt.has("dma_pin_guest_page"):
        mpt.dma_pin_guest_page(h, addrs[-1])
    if caps.max_dma_page >= SIZE_2M:
        addrs.append(mpt.dma_map_guest_page(h, (g & ~511) + 512, SIZE_2M))
    if caps.needs_trap_area:
        mpt.set_trap_area(h, outside, outside + (16 << 20), True)
    if caps.needs_aperture_map:
        mpt.map_gfn_to_mfn(h, (outside >> PAGE_SHIFT) + 0x10000, 0x1234, 4, True)
    if mpt.has("set_pvmmio"):
        mpt.set_pvmmio(h, outside, outside + (2 << 20), True)
    assert attached.vm.held().total > 0

    attached.detach()

    assert attached.vm.held().total == 0
    assert sysmem.count() == pages_before
    assert sysmem.window_count == windows_before
    assert all(_faults(attached, a) for a in addrs)
    # a new vGPU on the same guest starts from nothing
    h2 = mpt.attach_vgpu(VgpuToken(id=3), attached.vm)
    port = attached.vm.port()
    attached.host.ops.clear()
    port.store(g << PAGE_SHIFT, 1, 4)
    port.mmio_write(outside + 0x100, 1, 4)
    assert attached.host.ops.calls == []
    mpt.detach_vgpu(h2)
    assert attached.vm.held().total == 0


# --- hostile guests: what every backend must hold ------------------------------------------------------


def _malformed_port_calls(att: AttachedVgpu) -> list[tuple[str, Any]]:
    port, gpa = att.port, _work_gfn(att) << PAGE_SHIFT
    return [
        ("3-byte config read", lambda: port.cfg_read(0, 3)),
        ("config read across a dword", lambda: port.cfg_read(0x3, 2)),
        ("config read past 4 KiB", lambda: port.cfg_read(CFG_SPACE_SIZE, 1)),
        ("negative config offset", lambda: port.cfg_read(-1, 1)),
        ("config value wider than the access", lambda: port.cfg_write(0x40, 0x1_0000, 2)),
        ("negative config value", lambda: port.cfg_write(0x40, -1, 1)),
        ("3-byte load", lambda: port.mmio_read(gpa, 3)),
        ("16-byte store", lambda: port.mmio_write(gpa, 1, 16)),
        ("float size", lambda: port.mmio_read(gpa, 4.0)),
        ("negative address", lambda: port.mmio_read(-8, 4)),
        ("address past the guest-physical space", lambda: port.mmio_read(GUEST_PHYS_LIMIT, 4)),
        ("value wider than the store", lambda: port.mmio_write(gpa, 1 << 32, 4)),
        ("negative value", lambda: port.mmio_write(gpa, -1, 4)),
        ("3-byte RAM store", lambda: port.store(gpa, 1, 3)),
        ("RAM store value too wide", lambda: port.store(gpa, 256, 1)),
        ("negative read length", lambda: port.mem_read(gpa, -1)),
    ]


def test_guest_port_refuses_malformed_calls_like_every_port(attached: AttachedVgpu) -> None:
    """Every port refuses the same calls with ValueError (``gvt_core.guest.port``'s
    check_cfg_access / check_cpu_access), and none of them reaches the core."""
    if attached.host.caps.needs_trap_area:  # a malformed access inside BAR0 too
        start = _outside_gpa(attached)
        attached.mpt.set_trap_area(attached.handle, start, start + (16 << 20), True)
        port = attached.port
        extra = [("3-byte trapped load", lambda: port.mmio_read(start, 3)),
                 ("trapped value too wide", lambda: port.mmio_write(start, 1 << 32, 4))]
    else:
        extra = []
    for what, call in _malformed_port_calls(attached) + extra:
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"the port accepted a {what}")
    assert attached.host.ops.calls == []


def test_identical_msis_coalesce_and_pending_msis_are_bounded(attached: AttachedVgpu) -> None:
    """An MSI is an edge on a pending condition, not a log: the same message sent again
    before the guest took it is delivered once; distinct ones wait up to
    MAX_PENDING_MSIS."""
    mpt, h, port = attached.mpt, attached.handle, attached.port
    for _ in range(2000):
        mpt.inject_msi(h, 0xFEE0_0000, 0x41)
    assert port.wait_msi(2.0) == Msi(0xFEE0_0000, 0x41)
    assert port.wait_msi(0.02) is None
    for data in range(2 * MAX_PENDING_MSIS):
        mpt.inject_msi(h, 0xFEE0_0000, 0x30 + data)
    got = []
    while (msi := port.wait_msi(0.05)) is not None:
        got.append(msi)
        assert len(got) <= MAX_PENDING_MSIS
    assert got and len(set(got)) == len(got)


def test_release_hooks_after_the_guest_closed_are_quiet(
    mpt_host: MptHost, guest_vm: GuestVm
) -> None:
    """The core destroys a vGPU whose guest was closed first: every release it asks
    for was done by the close already, and answers quietly (one error per page
    would flood the log)."""
    mpt = mpt_host.mpt
    h = mpt.attach_vgpu(VgpuToken(id=7), guest_vm)
    g = (guest_vm.mem_size >> PAGE_SHIFT) // 2
    mpt.enable_page_track(h, g)
    a = mpt.dma_map_guest_page(h, g + 1, PAGE_SIZE)
    bulk = [int(x) for x in mpt.dma_map_guest_pages(h, [g + 2, g + 3], PAGE_SIZE)]
    guest_vm.close()
    mpt.disable_page_track(h, g)
    mpt.dma_unmap_guest_page(h, a)
    mpt.dma_unmap_guest_pages(h, bulk)
    mpt.detach_vgpu(h)
    assert guest_vm.held().total == 0


def test_no_core_call_for_an_access_started_after_detach(attached: AttachedVgpu) -> None:
    """A guest vCPU storing to a tracked page while its vGPU is detached: once detach
    returns, accesses that start afterwards never reach the core (the one in flight
    may; the core refuses it for a destroyed vGPU)."""
    g = _work_gfn(attached)
    attached.track(g)
    ops, port = attached.host.ops, attached.port
    stop = threading.Event()
    stores = [0]

    def guest() -> None:
        while not stop.is_set():
            port.store(g << PAGE_SHIFT, stores[0] & 0xFF, 1)
            stores[0] += 1

    worker = Worker(guest, name="contract-vcpu").start()
    assert wait_until(lambda: len(ops.of("page_track_write")) >= 10)
    attached.detach()
    at_detach = len(ops.of("page_track_write"))
    done = stores[0]
    assert wait_until(lambda: stores[0] >= done + 20)
    stop.set()
    worker.join()
    assert len(ops.of("page_track_write")) <= at_detach + 1


def test_create_vm_refuses_what_it_cannot_launch_with_a_typed_error(mpt_host: MptHost) -> None:
    if not mpt_host.caps.can_create_vm:
        pytest.skip(f"gvt backend {mpt_host.name!r} cannot launch guests (can_create_vm=False)")
    for size in (1 << 50, 0, -4096):
        with pytest.raises(VmCreateError):
            mpt_host.mpt.create_vm(mpt_host.context, size, "contract-impossible")


#: a declared pin quota this suite exhausts (larger ones are only checked for accounting).
QUOTA_TESTED_PAGES = 4096


def test_pin_quota_is_per_vm_and_released(mpt_host: MptHost, attached: AttachedVgpu) -> None:
    """A backend that declares ``Capabilities.pin_quota`` refuses a VM's maps beyond
    it with DmaMapError, while another VM still maps; unmapping gives pages back."""
    quota = mpt_host.caps.pin_quota >> PAGE_SHIFT
    if not quota:
        pytest.skip(f"gvt backend {mpt_host.name!r} declares no pin quota (pin_quota=0)")
    if quota > QUOTA_TESTED_PAGES:
        pytest.skip(f"pin quota of {quota} pages is too large to exhaust here; load the "
                    "backend with a smaller one (--gvt-backend-option) to test it")
    mpt, h, g = attached.mpt, attached.handle, _work_gfn(attached) - QUOTA_TESTED_PAGES
    addrs = [int(a) for a in mpt.dma_map_guest_pages(h, list(range(g, g + quota)), PAGE_SIZE)]
    assert attached.vm.held().pinned_pages == quota
    with pytest.raises(DmaMapError):
        mpt.dma_map_guest_page(h, g + quota, PAGE_SIZE)
    assert mpt.dma_map_guest_page(h, g, PAGE_SIZE) == addrs[0]  # a second reference is free
    other = mpt.create_vm(mpt_host.context, GUEST_MEM_SIZE, "contract-quota-other")
    try:
        h2 = mpt.attach_vgpu(VgpuToken(id=9), other)
        mpt.dma_unmap_guest_page(h2, mpt.dma_map_guest_page(h2, g, PAGE_SIZE))
        mpt.detach_vgpu(h2)
    finally:
        other.close()
    mpt.dma_unmap_guest_pages(h, addrs[1:])
    assert attached.vm.held().pinned_pages == 1
    mpt.dma_unmap_guest_page(h, mpt.dma_map_guest_page(h, g + quota, PAGE_SIZE))
    mpt.dma_unmap_guest_pages(h, [addrs[0], addrs[0]])
    assert attached.vm.held().pinned_pages == 0
