"""vGPU types (facts 2.1) and the GM/fence/id allocator (facts 2.2)."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from gvt_core.device import allocator as alloc_mod
from gvt_core.device.allocator import RangeAllocator, ResourceAllocator, VgpuResources
from gvt_core.device.types import TYPE_TABLE, VgpuType, host_types
from gvt_core.errors import ResourceExhaustedError
from gvt_core.hw import regs

MiB = regs.MiB
BY_NAME = {t.name: t for t in TYPE_TABLE}


# --- types -----------------------------------------------------------------------


def test_type_table_is_upstreams() -> None:
    rows = [(t.name, t.low_gm_size >> 20, t.high_gm_size >> 20, t.fences, t.weight, t.resolution)
            for t in TYPE_TABLE]
    assert rows == [
        ("GVTg_V4_8", 64, 384, 4, 2, (1024, 768)),
        ("GVTg_V4_4", 128, 512, 4, 4, (1920, 1200)),
        ("GVTg_V4_2", 256, 1024, 4, 8, (1920, 1200)),
        ("GVTg_V4_1", 512, 2048, 4, 16, (1920, 1200)),
    ]


def test_description_is_formatted_as_upstream() -> None:
    assert BY_NAME["GVTg_V4_8"].description == (
        "low_gm_size: 64MB\nhigh_gm_size: 384MB\nfence: 4\nresolution: 1024x768\nweight: 2\n"
    )
    assert BY_NAME["GVTg_V4_1"].description.splitlines()[0] == "low_gm_size: 512MB"


@pytest.mark.parametrize(
    ("aperture_mib", "names"),
    [
        (256, ["GVTg_V4_8", "GVTg_V4_4"]),  # 128 MiB left: _2 (256) and _1 (512) do not fit
        (512, ["GVTg_V4_8", "GVTg_V4_4", "GVTg_V4_2"]),
        (640, ["GVTg_V4_8", "GVTg_V4_4", "GVTg_V4_2", "GVTg_V4_1"]),
        (1024, ["GVTg_V4_8", "GVTg_V4_4", "GVTg_V4_2", "GVTg_V4_1"]),
        (160, []),  # 32 MiB left
    ],
)
def test_types_that_do_not_fit_the_aperture_are_skipped(aperture_mib: int, names: list[str]) -> None:
    assert [t.name for t in host_types(aperture_mib * MiB)] == names


def test_bad_type_rows_are_rejected() -> None:
    with pytest.raises(ValueError, match="weight"):
        VgpuType("x", 64 * MiB, 384 * MiB, 4, 17, (1024, 768))
    with pytest.raises(ValueError, match="MiB"):
        VgpuType("x", 64 * MiB + 1, 384 * MiB, 4, 2, (1024, 768))


# --- allocator: fixed cases ------------------------------------------------------------


def test_default_host_fits_seven_of_the_smallest_type() -> None:
    a = ResourceAllocator(regs.DEFAULT_APERTURE_SIZE)
    small = BY_NAME["GVTg_V4_8"]
    assert a.available_instances(small) == 7
    assert a.available_instances(BY_NAME["GVTg_V4_4"]) == 5  # (3072-384)/512
    assert a.available_instances(BY_NAME["GVTg_V4_2"]) == 2
    assert a.available_instances(BY_NAME["GVTg_V4_1"]) == 1
    got = [a.alloc(small) for _ in range(7)]
    assert [i for i, _ in got] == [1, 2, 3, 4, 5, 6, 7]
    first = got[0][1]
    assert first == VgpuResources(
        low_gm_base=128 * MiB, low_gm_size=64 * MiB,
        high_gm_base=regs.GM_TOTAL - 384 * MiB, high_gm_size=384 * MiB,  # top down
        fences=(4, 5, 6, 7),
    )
    assert got[1][1].high_gm_base == regs.GM_TOTAL - 2 * 384 * MiB
    assert a.available_instances(small) == 0
    with pytest.raises(ResourceExhaustedError) as exc:
        a.alloc(small)
    assert exc.value.resource == alloc_mod.IDS
    assert "vGPU ids" in str(exc.value)


@pytest.mark.parametrize(
    ("aperture_mib", "num_fences", "vtype", "resource"),
    [
        (256, 32, "GVTg_V4_4", alloc_mod.LOW_GM),  # one fits (128 MiB), the second does not
        (2048, 32, "GVTg_V4_2", alloc_mod.HIGH_GM),  # hidden 2 GiB - 384 MiB: one 1 GiB
        (1024, 8, "GVTg_V4_8", alloc_mod.FENCES),  # 4 fences for guests: one vGPU
    ],
)
def test_exhaustion_names_the_resource(
    aperture_mib: int, num_fences: int, vtype: str, resource: str
) -> None:
    a = ResourceAllocator(aperture_mib * MiB, num_fences)
    t = BY_NAME[vtype]
    assert a.available_instances(t) == 1
    vid, res = a.alloc(t)
    before = (list(a.low.free_ranges), list(a.high.free_ranges), list(a.free_fences),
              list(a.free_ids))
    with pytest.raises(ResourceExhaustedError) as exc:
        a.alloc(t)
    assert exc.value.resource == resource
    assert str(exc.value).startswith(f"not enough {resource}")
    # a failed allocation takes nothing
    assert (a.low.free_ranges, a.high.free_ranges, a.free_fences, a.free_ids) == before
    a.free(vid, res)
    assert a.available_instances(t) == 1


def test_host_reservation() -> None:
    a = ResourceAllocator(regs.DEFAULT_APERTURE_SIZE)
    assert a.host_low == (0, 128 * MiB)
    assert a.host_high == (regs.DEFAULT_APERTURE_SIZE, 384 * MiB)
    assert a.host_fences == (0, 1, 2, 3)
    assert a.low_avail == regs.DEFAULT_APERTURE_SIZE - 128 * MiB
    assert a.high_avail == regs.GM_TOTAL - regs.DEFAULT_APERTURE_SIZE - 384 * MiB
    assert a.fence_avail == 28
    with pytest.raises(ValueError, match="fence"):
        ResourceAllocator(regs.DEFAULT_APERTURE_SIZE, 3)
    with pytest.raises(ValueError, match="aperture"):
        ResourceAllocator(128 * MiB)


def test_range_allocator_first_fit_and_coalescing() -> None:
    r = RangeAllocator(0x10000, 0x10000)
    a = r.alloc(0x4000)
    b = r.alloc(0x4000)
    c = r.alloc(0x4000)
    assert (a, b, c) == (0x10000, 0x14000, 0x18000)
    r.free(b, 0x4000)
    assert r.alloc(0x8000) is None  # 0x4000 hole + 0x4000 tail are not contiguous
    assert r.alloc(0x2000) == 0x14000  # first fit takes the hole
    r.free(0x14000, 0x2000)
    r.free(a, 0x4000)
    r.free(c, 0x4000)
    assert r.free_ranges == [(0x10000, 0x10000)]
    with pytest.raises(ValueError, match="already"):
        r.free(0x10000, 0x1000)
    with pytest.raises(ValueError, match="multiple"):
        r.alloc(0x1001)


def test_gm_valid() -> None:
    res = VgpuResources(0x800_0000, 0x400_0000, 0x5800_0000, 0x1800_0000, (4, 5, 6, 7))
    assert res.gm_valid(0x800_0000)
    assert res.gm_valid(0xBFF_FFFF)
    assert not res.gm_valid(0xBFF_FFFF, 2)
    assert not res.gm_valid(0x7FF_FFFF)
    assert res.gm_valid(0x5800_0000, 0x1800_0000)
    assert not res.gm_valid(0xC00_0000)


# --- allocator: property test over random create/destroy sequences ----------------------


class AllocatorMachine(RuleBasedStateMachine):
    """Random allocate/free sequences; the partition stays sound and the counts exact."""

    live = Bundle("live")

    @initialize(
        aperture_mib=st.sampled_from([256, 384, 512, 1024, 1536, 2048]),
        num_fences=st.sampled_from([8, 16, 20, 32]),
    )
    def setup(self, aperture_mib: int, num_fences: int) -> None:
        self.aperture = aperture_mib * MiB
        self.num_fences = num_fences
        self.a = ResourceAllocator(self.aperture, num_fences)
        self.types = host_types(self.aperture)
        self.held: dict[int, VgpuResources] = {}
        self.initial = (list(self.a.low.free_ranges), list(self.a.high.free_ranges),
                        list(self.a.free_fences), list(self.a.free_ids))

    def _expected_available(self, t: VgpuType) -> int:
        low = self.aperture - regs.HOST_LOW_GM_SIZE - sum(r.low_gm_size for r in self.held.values())
        high = (regs.GM_TOTAL - self.aperture - regs.HOST_HIGH_GM_SIZE
                - sum(r.high_gm_size for r in self.held.values()))
        fences = self.num_fences - regs.HOST_FENCE - sum(len(r.fences) for r in self.held.values())
        return min(low // t.low_gm_size, high // t.high_gm_size, fences // t.fences,
                   regs.GVT_MAX_VGPU - 1 - len(self.held))

    @rule(target=live, pick=st.integers(0, 3))
    def create(self, pick: int) -> int:
        if not self.types:
            return -1
        t = self.types[pick % len(self.types)]
        available = self.a.available_instances(t)
        try:
            vid, res = self.a.alloc(t)
        except ResourceExhaustedError as exc:
            assert exc.resource in (alloc_mod.IDS, alloc_mod.LOW_GM, alloc_mod.HIGH_GM,
                                    alloc_mod.FENCES)
            if exc.resource in (alloc_mod.IDS, alloc_mod.FENCES):
                assert available == 0  # these are counted exactly
            return -1
        assert available >= 1, "allocation succeeded where no instance was available"
        assert vid not in self.held and 1 <= vid < regs.GVT_MAX_VGPU
        assert len(res.fences) == t.fences
        self.held[vid] = res
        return vid

    @rule(vid=consumes(live))
    def destroy(self, vid: int) -> None:
        if vid in self.held:
            self.a.free(vid, self.held.pop(vid))

    @invariant()
    def partition_is_sound(self) -> None:
        if not hasattr(self, "a"):
            return
        lows = sorted([(0, regs.HOST_LOW_GM_SIZE)]
                      + [(r.low_gm_base, r.low_gm_end) for r in self.held.values()])
        highs = sorted([(self.aperture, self.aperture + regs.HOST_HIGH_GM_SIZE)]
                       + [(r.high_gm_base, r.high_gm_end) for r in self.held.values()])
        for a, b in itertools.pairwise(lows):
            assert a[1] <= b[0], f"low GM overlap {a} {b}"
        for a, b in itertools.pairwise(highs):
            assert a[1] <= b[0], f"high GM overlap {a} {b}"
        assert lows[-1][1] <= self.aperture
        assert highs[-1][1] <= regs.GM_TOTAL
        for r in self.held.values():
            assert r.low_gm_base % regs.GTT_PAGE_SIZE == 0
            assert r.high_gm_base % regs.GTT_PAGE_SIZE == 0
        fences = [f for r in self.held.values() for f in r.fences]
        assert len(fences) == len(set(fences))
        assert all(regs.HOST_FENCE <= f < self.num_fences for f in fences)
        assert sorted(fences + self.a.free_fences) == list(range(regs.HOST_FENCE, self.num_fences))
        assert sorted([*self.held, *self.a.free_ids]) == list(range(1, regs.GVT_MAX_VGPU))
        for t in self.types:
            assert self.a.available_instances(t) == self._expected_available(t)

    def teardown(self) -> None:
        if not hasattr(self, "a"):
            return
        for vid, res in list(self.held.items()):
            self.a.free(vid, res)
        now = (self.a.low.free_ranges, self.a.high.free_ranges, self.a.free_fences,
               self.a.free_ids)
        assert now == self.initial, "destroying everything did not return every resource"


TestAllocatorMachine = AllocatorMachine.TestCase
TestAllocatorMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
