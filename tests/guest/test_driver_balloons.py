"""The guest's ballooning arithmetic (i915_vgpu.c): what it must never use."""

from hypothesis import given, settings
from hypothesis import strategies as st

from gvt_core.guest.driver import GmRange, GuestDriver, mmio_window
from gvt_core.hw import regs

MiB = regs.MiB


def test_four_balloons_around_a_middle_vgpu() -> None:
    aperture = 1024 * MiB
    mappable = GmRange(192 * MiB, 64 * MiB)
    hidden = GmRange(aperture + 768 * MiB, 384 * MiB)
    got = GuestDriver._balloons(mappable, hidden, aperture)
    assert got == [
        GmRange(aperture, 768 * MiB),
        GmRange(hidden.end, regs.GM_TOTAL - hidden.end),
        GmRange(0, 192 * MiB),
        GmRange(256 * MiB, aperture - 256 * MiB),
    ]


def test_empty_balloons_are_left_out() -> None:
    aperture = 512 * MiB
    got = GuestDriver._balloons(GmRange(0, aperture), GmRange(aperture, regs.GM_TOTAL - aperture), aperture)
    assert got == []


@settings(deadline=None)
@given(
    st.integers(1, 255).map(lambda n: n * 4 * MiB),
    st.integers(0, 255).map(lambda n: n * 4 * MiB),
    st.integers(1, 255).map(lambda n: n * 4 * MiB),
    st.integers(0, 255).map(lambda n: n * 4 * MiB),
)
def test_balloons_and_own_ranges_tile_the_ggtt(msize: int, mbase: int, hsize: int, hoff: int) -> None:
    aperture = 1024 * MiB
    mbase = min(mbase, aperture - msize)
    hbase = aperture + min(hoff, regs.GM_TOTAL - aperture - hsize)
    own = [GmRange(mbase, msize), GmRange(hbase, hsize)]
    spans = sorted(
        [(r.base, r.end) for r in GuestDriver._balloons(own[0], own[1], aperture)]
        + [(r.base, r.end) for r in own]
    )
    pos = 0
    for a, b in spans:
        assert a == pos, "balloons and the vGPU's ranges must neither overlap nor leave holes"
        pos = b
    assert pos == regs.GM_TOTAL


def test_bars_go_above_ram_and_at_least_at_3_gib() -> None:
    assert mmio_window(64 * MiB) == 3 * regs.GiB
    assert mmio_window(4 * regs.GiB) == 4 * regs.GiB
    assert mmio_window(4 * regs.GiB + 1) == 5 * regs.GiB
