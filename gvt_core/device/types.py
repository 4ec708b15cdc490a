"""vGPU types: how a host GPU is carved up (facts 2.1).

Later kernels use a fixed table rather than computing types from the
aperture; the names keep upstream's Broadwell spelling (``GVTg_V4_<n>``, where
``n`` is the number of instances that fit a 256 MiB-aperture host). A type
whose low graphics memory does not fit the aperture left after the host's
reservation is not offered at all.
"""

from __future__ import annotations

import attrs

from gvt_core.hw import regs

Resolution = tuple[int, int]

RESOLUTION_1024_768: Resolution = (1024, 768)
RESOLUTION_1920_1200: Resolution = (1920, 1200)


@attrs.frozen
class VgpuType:
    """One row of the type table. Sizes in bytes."""

    name: str
    low_gm_size: int
    high_gm_size: int
    fences: int
    weight: int
    resolution: Resolution

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.weight <= regs.VGPU_MAX_WEIGHT:
            raise ValueError(
                f"vGPU type {self.name!r} has weight {self.weight}; weights are 1..{regs.VGPU_MAX_WEIGHT}"
            )
        for what, size in (("low", self.low_gm_size), ("high", self.high_gm_size)):
            if size <= 0 or size % regs.MiB:
                raise ValueError(
                    f"vGPU type {self.name!r}: {what} GM size {size:#x} must be a positive "
                    "whole number of MiB"
                )
        if not 0 < self.fences <= regs.MAX_NUM_FENCES:
            raise ValueError(f"vGPU type {self.name!r}: fence count {self.fences} out of range")

    @property
    def resolution_text(self) -> str:
        return f"{self.resolution[0]}x{self.resolution[1]}"

    @property
    def description(self) -> str:
        """The text upstream shows in the mdev type's ``description`` attribute,
        byte for byte (every line ends with a newline, the last one included)."""
        return (
            f"low_gm_size: {self.low_gm_size >> 20}MB\n"
            f"high_gm_size: {self.high_gm_size >> 20}MB\n"
            f"fence: {self.fences}\n"
            f"resolution: {self.resolution_text}\n"
            f"weight: {self.weight}\n"
        )


#: the fixed table of later kernels (vgpu.c ``vgpu_types[]``), Broadwell names.
TYPE_TABLE: tuple[VgpuType, ...] = (
    VgpuType("GVTg_V4_8", 64 * regs.MiB, 384 * regs.MiB, 4, 2, RESOLUTION_1024_768),
    VgpuType("GVTg_V4_4", 128 * regs.MiB, 512 * regs.MiB, 4, 4, RESOLUTION_1920_1200),
    VgpuType("GVTg_V4_2", 256 * regs.MiB, 1024 * regs.MiB, 4, 8, RESOLUTION_1920_1200),
    VgpuType("GVTg_V4_1", 512 * regs.MiB, 2048 * regs.MiB, 4, 16, RESOLUTION_1920_1200),
)


def host_types(aperture_size: int) -> tuple[VgpuType, ...]:
    """The types a host with ``aperture_size`` bytes of aperture offers.

    A type is dropped when the aperture after the host's reservation cannot
    hold one instance (upstream checks only the low GM for this).
    """
    low_avail = aperture_size - regs.HOST_LOW_GM_SIZE
    return tuple(t for t in TYPE_TABLE if low_avail // t.low_gm_size > 0)


@attrs.frozen
class TypeAvailability:
    """A type as ``Gvt.types()`` reports it: the row plus how many more fit now."""

    type: VgpuType
    available_instances: int

    @property
    def name(self) -> str:
        return self.type.name

    @property
    def description(self) -> str:
        return self.type.description

    @property
    def low_gm_size(self) -> int:
        return self.type.low_gm_size

    @property
    def high_gm_size(self) -> int:
        return self.type.high_gm_size

    @property
    def fences(self) -> int:
        return self.type.fences

    @property
    def weight(self) -> int:
        return self.type.weight

    @property
    def resolution(self) -> Resolution:
        return self.type.resolution

    def as_dict(self) -> dict[str, object]:
        """The ``gvt types --json`` object."""
        return {
            "name": self.name,
            "description": self.description,
            "low_gm_size": self.low_gm_size,
            "high_gm_size": self.high_gm_size,
            "fences": self.fences,
            "weight": self.weight,
            "resolution": self.type.resolution_text,
            "available_instances": self.available_instances,
        }
