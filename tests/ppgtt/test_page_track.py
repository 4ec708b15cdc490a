"""The page-track table: how a trapped write reaches the handlers."""

from __future__ import annotations

from types import SimpleNamespace

from gvt_core.device.memory.page_track import PageTrack
from gvt_core.mpt.info import PageTrackMode


def _track(mode: PageTrackMode) -> tuple[PageTrack, list[tuple[int, bytes]]]:
    committed: list[tuple[int, bytes]] = []
    mpt = SimpleNamespace(caps=SimpleNamespace(page_track=mode),
                          write_gpa=lambda handle, gpa, data: committed.append((gpa, data)),
                          enable_page_track=lambda handle, gfn: None,
                          disable_page_track=lambda handle, gfn: None)
    return PageTrack(mpt, handle=object()), committed  # type: ignore[arg-type]


def test_a_write_across_a_page_boundary_reaches_each_tracked_page_with_its_own_bytes() -> None:
    track, committed = _track(PageTrackMode.WRITE_FORWARDED)
    seen: list[tuple[int, bytes]] = []
    for gfn in (5, 6):
        track.register(gfn, lambda gpa, data: seen.append((gpa, data)))
        track.enable(gfn)
    data = bytes(range(1, 9))
    track.handle_write(0x5FFC, data)
    assert committed == [(0x5FFC, data)]  # committed whole, before any handler runs
    assert seen == [(0x5FFC, data[:4]), (0x6000, data[4:])]
    assert track.stray_writes == 0


def test_the_part_on_an_untracked_page_is_committed_and_counted_not_handled() -> None:
    track, committed = _track(PageTrackMode.WRITE_FORWARDED)
    seen: list[tuple[int, bytes]] = []
    track.register(6, lambda gpa, data: seen.append((gpa, data)))
    track.enable(6)
    track.handle_write(0x5FFE, b"\x01\x02\x03\x04")
    assert committed == [(0x5FFE, b"\x01\x02\x03\x04")]
    assert seen == [(0x6000, b"\x03\x04")]
    assert track.stray_writes == 1
