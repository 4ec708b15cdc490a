"""The default client's answer to each kind of request, request by request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gvt_acrngt import abi
from gvt_acrngt.memory import GuestRam
from gvt_acrngt.router import EmulationError, RequestRouter
from gvt_core.testing.plugin import VgpuToken
from gvt_core.testing.recording import RecordingOps

BAR0 = 0xC000_0000


@pytest.fixture
def ram() -> Iterator[GuestRam]:
    r = GuestRam(1 << 20, "router-test")
    yield r
    r.close()


@pytest.fixture
def router(ram: GuestRam) -> tuple[RequestRouter, RecordingOps]:
    ops = RecordingOps()
    r = RequestRouter(ram)
    r.bind(VgpuToken(7), ops)
    r.set_ranges([(BAR0, BAR0 + (16 << 20))], [])
    return r, ops


def _mmio(kind: int, direction: int, address: int, size: int, value: int = 0) -> abi.acrn_io_request:
    slot = abi.acrn_io_request(type=kind)
    m = slot.reqs.mmio_request
    m.direction, m.address, m.size, m.value = direction, address, size, value
    return slot


def _pci(direction: int, bdf: tuple[int, int, int], reg: int, size: int,
         value: int = 0) -> abi.acrn_io_request:
    slot = abi.acrn_io_request(type=abi.ACRN_IOREQ_TYPE_PCICFG)
    p = slot.reqs.pci_request
    p.direction, (p.bus, p.dev, p.func), p.reg, p.size, p.value = direction, bdf, reg, size, value
    return slot


R, W = abi.ACRN_IOREQ_DIR_READ, abi.ACRN_IOREQ_DIR_WRITE
MMIO, WP = abi.ACRN_IOREQ_TYPE_MMIO, abi.ACRN_IOREQ_TYPE_WP


def test_config_space_of_00_02_0_and_of_nothing_else(router: tuple[RequestRouter, RecordingOps]) -> None:
    r, ops = router
    ops.cfg_answers[0] = 0x8086
    slot = _pci(R, (0, 2, 0), 0, 2)
    r.handle(slot)
    assert slot.reqs.pci_request.value == 0x8086
    r.handle(_pci(W, (0, 2, 0), 0x4, 2, 0x6))
    for bdf in ((0, 3, 0), (1, 2, 0), (0, 2, 1)):
        slot = _pci(R, bdf, 0, 4)
        r.handle(slot)
        assert slot.reqs.pci_request.value == 0xFFFF_FFFF
    slot = _pci(R, (0, 2, 0), 0xFFE, 4)  # beyond the 4 KiB config space
    r.handle(slot)
    assert slot.reqs.pci_request.value == 0xFFFF_FFFF
    assert [(c.op, c.args) for c in ops.calls] == [
        ("emulate_cfg_read", (0, 2)), ("emulate_cfg_write", (0x4, 0x6, 2))]


def test_bar0_mmio_ram_and_unassigned(router: tuple[RequestRouter, RecordingOps],
                                      ram: GuestRam) -> None:
    r, ops = router
    ops.mmio_answers[BAR0 + 0x100] = 0xAB
    slot = _mmio(MMIO, R, BAR0 + 0x100, 4)
    r.handle(slot)
    assert slot.reqs.mmio_request.value == 0xAB
    r.handle(_mmio(MMIO, W, BAR0 + 0x104, 8, 0x1122334455667788))
    ram.write(0x2000, b"\x01\x02\x03\x04")
    slot = _mmio(MMIO, R, 0x2000, 4)  # a RAM page caught between unmap and map
    r.handle(slot)
    assert slot.reqs.mmio_request.value == 0x04030201
    slot = _mmio(MMIO, R, 0x9000_0000, 2)
    r.handle(slot)
    assert slot.reqs.mmio_request.value == 0xFFFF
    r.handle(_mmio(MMIO, W, 0x9000_0000, 4, 5))  # dropped
    pio = abi.acrn_io_request(type=abi.ACRN_IOREQ_TYPE_PORTIO)
    pio.reqs.pio_request.direction, pio.reqs.pio_request.address = R, 0x3F8
    pio.reqs.pio_request.size = 1
    r.handle(pio)
    assert pio.reqs.pio_request.value == 0xFF
    assert [c.op for c in ops.calls] == ["emulate_mmio_read", "emulate_mmio_write"]
    assert r.stats.unassigned == 3 and r.stats.ram == 1


def test_write_protect_requests(router: tuple[RequestRouter, RecordingOps], ram: GuestRam) -> None:
    r, ops = router
    ops.tracked.add((7, 5))
    r.handle(_mmio(WP, W, 0x5008, 8, 0xAABBCCDD))
    assert [(c.op, c.args) for c in ops.calls] == [
        ("page_track_write", (0x5008, (0xAABBCCDD).to_bytes(8, "little")))]
    assert ram.read(0x5008, 8) == bytes(8)  # forwarded: the core commits it
    # a page the core no longer tracks (the request raced the untrack): committed here
    r.handle(_mmio(WP, W, 0x6000, 2, 0x0102))
    assert ram.read(0x6000, 2) == b"\x02\x01" and r.stats.stale_wp == 1


def test_a_store_reaching_into_a_tracked_page_is_that_pages_write(
        router: tuple[RequestRouter, RecordingOps], ram: GuestRam) -> None:
    """An 8-byte store that starts in a plain page and ends in a tracked one goes to
    the core whole (it hands each tracked page its own bytes), never to RAM."""
    r, ops = router
    ops.tracked.add((7, 6))
    r.handle(_mmio(MMIO, W, 0x5FFC, 8, 0x1122334455667788))
    assert [(c.op, c.args) for c in ops.calls] == [
        ("page_track_write", (0x5FFC, (0x1122334455667788).to_bytes(8, "little")))]
    assert ram.read(0x5FFC, 8) == bytes(8)
    r.handle(_mmio(MMIO, W, 0x4FFC, 8, 0x1122334455667788))  # no tracked page: RAM
    assert ram.read(0x4FFC, 8) == (0x1122334455667788).to_bytes(8, "little")


def test_requests_no_instruction_makes_are_emulation_errors(
    router: tuple[RequestRouter, RecordingOps],
) -> None:
    r, _ = router
    for slot in (_mmio(MMIO, R, BAR0, 3), _mmio(WP, R, 0x5000, 4), abi.acrn_io_request(type=9)):
        with pytest.raises(EmulationError):
            r.handle(slot)
    slot = _mmio(MMIO, R, BAR0, 4)
    r.answer_failed(slot)
    assert slot.reqs.mmio_request.value == (1 << 64) - 1


def test_an_unbound_router_serves_no_device(ram: GuestRam) -> None:
    r = RequestRouter(ram)
    slot = _pci(R, (0, 2, 0), 0, 2)
    r.handle(slot)
    assert slot.reqs.pci_request.value == 0xFFFF
    slot = _mmio(MMIO, R, BAR0, 4)
    r.handle(slot)
    assert slot.reqs.mmio_request.value == 0xFFFF_FFFF
