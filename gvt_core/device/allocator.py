"""Graphics memory, fence and id allocation for vGPUs (the kernel's aperture_gm.c).

The GGTT's graphics memory splits into the aperture part ("low GM", CPU
visible through BAR2, starting at 0) and the hidden part ("high GM", starting
where the aperture ends). The host keeps 128 MiB at the start of each plus 4
fences; every vGPU gets one contiguous range of each and ``type.fences`` host
fences. As upstream's ``alloc_gm`` asks the GGTT allocator (``PIN_MAPPABLE``
lowest first, ``PIN_HIGH`` highest first), aperture ranges are taken from the
bottom and hidden ranges from the top of graphics memory, so PVINFO gives a
guest the same bases the real device model would. Guest and host see the same GM addresses (the guest balloons the
rest out, facts 2.2), so a vGPU's ranges are also what the guest uses.
"""

from __future__ import annotations

import attrs

from gvt_core.device.types import VgpuType
from gvt_core.errors import ResourceExhaustedError
from gvt_core.hw import regs

#: the names :class:`ResourceExhaustedError` carries for each resource.
LOW_GM = "aperture (low) graphics memory"
HIGH_GM = "hidden (high) graphics memory"
FENCES = "fence registers"
IDS = "vGPU ids"

GM_ALIGN = regs.GTT_PAGE_SIZE


@attrs.frozen(slots=True)
class VgpuResources:
    """What one vGPU owns of the host GPU. Byte addresses in graphics memory."""

    low_gm_base: int
    low_gm_size: int
    high_gm_base: int
    high_gm_size: int
    #: host fence indices: the vGPU's virtual fence i is host fence ``fences[i]``.
    fences: tuple[int, ...]

    @property
    def low_gm_end(self) -> int:
        return self.low_gm_base + self.low_gm_size

    @property
    def high_gm_end(self) -> int:
        return self.high_gm_base + self.high_gm_size

    def gm_valid(self, gm: int, size: int = 1) -> bool:
        """Whether ``[gm, gm + size)`` lies inside one of the vGPU's two ranges."""
        end = gm + size
        return (self.low_gm_base <= gm and end <= self.low_gm_base + self.low_gm_size) or (
            self.high_gm_base <= gm and end <= self.high_gm_base + self.high_gm_size
        )


@attrs.define(eq=False)
class RangeAllocator:
    """First-fit allocation of aligned ranges in ``[base, base + size)``.

    Free ranges are kept sorted and coalesced on free, so destroying every
    vGPU gives back one range exactly as at start.
    """

    base: int
    size: int
    align: int = GM_ALIGN
    #: sorted, non-adjacent (start, length) free ranges.
    free_ranges: list[tuple[int, int]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.free_ranges = [(self.base, self.size)] if self.size > 0 else []

    @property
    def free_bytes(self) -> int:
        return sum(n for _, n in self.free_ranges)

    @property
    def largest_free(self) -> int:
        return max((n for _, n in self.free_ranges), default=0)

    def alloc(self, size: int, *, top_down: bool = False) -> int | None:
        """Start of a free, ``align``-aligned range of ``size`` bytes, or None: the
        lowest that fits, or with ``top_down`` the highest."""
        if size <= 0 or size % self.align:
            raise ValueError(f"range size {size:#x} must be a positive multiple of {self.align:#x}")
        order = range(len(self.free_ranges))
        for i in reversed(order) if top_down else order:
            start, length = self.free_ranges[i]
            if top_down:
                first = (start + length - size) // self.align * self.align
                if first < start:
                    continue
            else:
                first = -(-start // self.align) * self.align
                if first + size > start + length:
                    continue
            pieces = []
            if first > start:
                pieces.append((start, first - start))
            if first + size < start + length:
                pieces.append((first + size, start + length - first - size))
            self.free_ranges[i : i + 1] = pieces
            return first
        return None

    def free(self, start: int, size: int) -> None:
        """Give back a range :meth:`alloc` returned."""
        end = start + size
        if start < self.base or end > self.base + self.size:
            raise ValueError(f"range [{start:#x}, {end:#x}) is outside this allocator")
        ranges = self.free_ranges
        i = 0
        while i < len(ranges) and ranges[i][0] < start:
            i += 1
        if i > 0 and ranges[i - 1][0] + ranges[i - 1][1] > start:
            raise ValueError(f"range [{start:#x}, {end:#x}) is already (partly) free")
        if i < len(ranges) and ranges[i][0] < end:
            raise ValueError(f"range [{start:#x}, {end:#x}) is already (partly) free")
        new_start, new_len = start, size
        if i > 0 and ranges[i - 1][0] + ranges[i - 1][1] == start:
            i -= 1
            new_start = ranges[i][0]
            new_len += ranges[i][1]
            del ranges[i]
        if i < len(ranges) and ranges[i][0] == end:
            new_len += ranges[i][1]
            del ranges[i]
        ranges.insert(i, (new_start, new_len))


@attrs.define(eq=False)
class ResourceAllocator:
    """The host's partition of GM, fences and vGPU ids."""

    aperture_size: int
    num_fences: int = regs.MAX_NUM_FENCES
    low: RangeAllocator = attrs.field(init=False)
    high: RangeAllocator = attrs.field(init=False)
    free_fences: list[int] = attrs.field(init=False)
    free_ids: list[int] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.aperture_size <= regs.HOST_LOW_GM_SIZE or self.aperture_size >= regs.GM_TOTAL:
            raise ValueError(
                f"aperture of {self.aperture_size:#x} bytes cannot hold the host's "
                f"{regs.HOST_LOW_GM_SIZE >> 20} MiB reservation"
            )
        if self.num_fences < regs.HOST_FENCE:
            raise ValueError(
                f"{self.num_fences} fence registers cannot hold the host's {regs.HOST_FENCE}"
            )
        self.low = RangeAllocator(
            regs.HOST_LOW_GM_SIZE, self.aperture_size - regs.HOST_LOW_GM_SIZE
        )
        hidden_size = regs.GM_TOTAL - self.aperture_size
        self.high = RangeAllocator(
            self.aperture_size + regs.HOST_HIGH_GM_SIZE, hidden_size - regs.HOST_HIGH_GM_SIZE
        )
        self.free_fences = list(range(regs.HOST_FENCE, self.num_fences))
        self.free_ids = list(range(1, regs.GVT_MAX_VGPU))

    # --- the host's own share -----------------------------------------------------
    @property
    def host_low(self) -> tuple[int, int]:
        """(base, size) of the host's low GM reservation."""
        return 0, regs.HOST_LOW_GM_SIZE

    @property
    def host_high(self) -> tuple[int, int]:
        return self.aperture_size, regs.HOST_HIGH_GM_SIZE

    @property
    def host_fences(self) -> tuple[int, ...]:
        return tuple(range(regs.HOST_FENCE))

    # --- what is left -----------------------------------------------------------------
    @property
    def low_avail(self) -> int:
        return self.low.free_bytes

    @property
    def high_avail(self) -> int:
        return self.high.free_bytes

    @property
    def fence_avail(self) -> int:
        return len(self.free_fences)

    def available_instances(self, vtype: VgpuType) -> int:
        """min(low/low, high/high, fence/fence) of what is left (facts 2.2).

        Also capped by free vGPU ids; with the fixed table (4 fences per type,
        28 for guests) the fence term already implies that cap. Counts free
        bytes, not contiguous ranges, as upstream does.
        """
        return min(
            self.low_avail // vtype.low_gm_size,
            self.high_avail // vtype.high_gm_size,
            self.fence_avail // vtype.fences,
            len(self.free_ids),
        )

    # --- allocation ----------------------------------------------------------------------
    def alloc(self, vtype: VgpuType) -> tuple[int, VgpuResources]:
        """An id and the resources of one ``vtype`` vGPU; all or nothing.

        :raises ResourceExhaustedError: naming the first resource that ran out
            (checked in the kernel's order: id, low GM, high GM, fences).
        """
        if not self.free_ids:
            raise ResourceExhaustedError(
                IDS, 1, 0, advice=f"a host has {regs.GVT_MAX_VGPU - 1} (GVT_MAX_VGPU "
                f"{regs.GVT_MAX_VGPU}; id 0 is the idle vGPU), whatever their type: destroy one")
        fence_short = len(self.free_fences) < vtype.fences
        low = self.low.alloc(vtype.low_gm_size)
        if low is None:
            raise ResourceExhaustedError(
                LOW_GM, vtype.low_gm_size >> 20, self.low.largest_free >> 20, "MiB contiguous"
            )
        high = self.high.alloc(vtype.high_gm_size, top_down=True)
        if high is None:
            self.low.free(low, vtype.low_gm_size)
            raise ResourceExhaustedError(
                HIGH_GM, vtype.high_gm_size >> 20, self.high.largest_free >> 20, "MiB contiguous"
            )
        if fence_short:
            self.low.free(low, vtype.low_gm_size)
            self.high.free(high, vtype.high_gm_size)
            raise ResourceExhaustedError(FENCES, vtype.fences, len(self.free_fences))
        fences = tuple(self.free_fences[: vtype.fences])
        del self.free_fences[: vtype.fences]
        vgpu_id = self.free_ids.pop(0)
        return vgpu_id, VgpuResources(
            low_gm_base=low,
            low_gm_size=vtype.low_gm_size,
            high_gm_base=high,
            high_gm_size=vtype.high_gm_size,
            fences=fences,
        )

    def free(self, vgpu_id: int, res: VgpuResources) -> None:
        """Return what :meth:`alloc` handed out."""
        if vgpu_id in self.free_ids or not 1 <= vgpu_id < regs.GVT_MAX_VGPU:
            raise ValueError(f"vGPU id {vgpu_id} is not allocated")
        self.low.free(res.low_gm_base, res.low_gm_size)
        self.high.free(res.high_gm_base, res.high_gm_size)
        self.free_fences = sorted(self.free_fences + list(res.fences))
        self.free_ids = sorted([*self.free_ids, vgpu_id])
