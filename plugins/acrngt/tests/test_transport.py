"""The transport seam: the real ``/dev/acrn_hsm`` and the emulated ACRN behind one protocol.

Tests that need an ACRN Service VM skip, saying so, where ``/dev/acrn_hsm``
is missing; where it is present they check that the real HSM answers what
the emulated one answers.
"""

from __future__ import annotations

import errno
import mmap
from collections.abc import Iterator

import pytest

from gvt_acrngt import abi
from gvt_acrngt.emulated import EmulatedAcrn
from gvt_acrngt.pagemap import FramesUnavailableError, Pagemap
from gvt_acrngt.transport import HSM_DEVICE, DeviceTransport, HsmTransport, probe_device
from gvt_core.hw.sysmem import buffer_address


def test_both_transports_are_the_same_protocol() -> None:
    machine = EmulatedAcrn()
    try:
        assert isinstance(machine.transport, HsmTransport)
        assert isinstance(DeviceTransport(), HsmTransport)
    finally:
        machine.close()


def test_probe_names_a_missing_device() -> None:
    reason = probe_device("/dev/acrn_hsm_that_is_not_there")
    assert "does not exist" in reason and "not an ACRN Service VM" in reason


@pytest.mark.parametrize("kind", ["emulated", "real"])
def test_a_fresh_file_refuses_all_but_create(kind: str, real_hsm_or_none: HsmTransport) -> None:
    transport = real_hsm_or_none
    fd = transport.open()
    try:
        for request in (abi.ACRN_IOCTL_START_VM, abi.ACRN_IOCTL_ATTACH_IOREQ_CLIENT):
            with pytest.raises(OSError) as err:
                transport.ioctl(fd, request)
            assert err.value.errno == errno.EINVAL
    finally:
        transport.close(fd)


@pytest.fixture
def real_hsm_or_none(request: pytest.FixtureRequest) -> Iterator[HsmTransport]:
    if request.node.callspec.params["kind"] == "real":
        reason = probe_device()
        if reason:
            pytest.skip(f"not an ACRN Service VM: {reason}")
        yield DeviceTransport(HSM_DEVICE)
        return
    machine = EmulatedAcrn()
    yield machine.transport
    machine.close()


def test_pagemap_gives_stable_distinct_frames() -> None:
    try:
        pm = Pagemap()
        buf = mmap.mmap(-1, 4 * 4096)
        try:
            frames = pm.frames_pinned(buffer_address(buf), 4)
        except FramesUnavailableError as exc:
            pytest.skip(f"pagemap gives no frames here: {exc}")
        assert len(set(frames.tolist())) == 4 and all(frames > 0)
        assert pm.frames_pinned(buffer_address(buf), 4).tolist() == frames.tolist()
        buf.close()
        pm.close()
    except FramesUnavailableError as exc:
        pytest.skip(str(exc))


def test_the_emulated_service_vm_knows_pages_by_what_backs_them() -> None:
    """Two mappings of one memfd have one set of frames, as on a real kernel."""
    import os

    machine = EmulatedAcrn()
    fd = os.memfd_create("frames")
    os.ftruncate(fd, 8192)
    a, b = mmap.mmap(fd, 8192), mmap.mmap(fd, 8192)
    try:
        fa = machine.transport.frames_of(buffer_address(a), 2).tolist()
        fb = machine.transport.frames_of(buffer_address(b), 2).tolist()
        assert fa == fb and fa[1] == fa[0] + 1
        other = mmap.mmap(-1, 4096)
        assert machine.transport.frames_of(buffer_address(other), 1)[0] not in fa
        a[:5] = b"hello"
        page = machine.memory.page(fa[0])
        assert page is not None and bytes(page[:5]) == b"hello"
        other.close()
    finally:
        a.close()
        b.close()
        os.close(fd)
        machine.close()
