"""The PVINFO page at MMIO 0x78000 (``struct vgt_if``, facts 3).

The host fills in who the vGPU is and which slice of the GPU it owns; a
GVT-g aware guest reads it, balloons everything else out of its GGTT, and
talks back through a few guest-writable fields (``display_ready``,
``g2v_notify`` with the ``pdp[]`` roots, cursor hot spot). Host fields are
read-only to the guest; reserved space swallows writes (counted), except
``rsv5`` whose write means "resources insufficient" and puts the vGPU into
failsafe mode.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs

from gvt_core.errors import GvtError
from gvt_core.hw import regs

if TYPE_CHECKING:
    from gvt_core.device.registers.mmio import Mmio

log = logging.getLogger(__name__)

VGT_CAPS = regs.VGT_CAPS_FULL_PPGTT | regs.VGT_CAPS_HWSP_EMULATION | regs.VGT_CAPS_HUGE_GTT
CURSOR_HOT_UNSET = 0xFFFF_FFFF

#: guest-writable dwords (page-relative) that are simply stored.
_GUEST_STORED = frozenset(
    (regs.PVINFO_CURSOR_X_HOT, regs.PVINFO_CURSOR_Y_HOT,
     regs.PVINFO_EXECLIST_CTX_DESC_LO, regs.PVINFO_EXECLIST_CTX_DESC_HI,
     *range(regs.PVINFO_PDP0_LO, regs.PVINFO_PDP_END, 4))
)
_RSV5 = frozenset(range(regs.PVINFO_RSV5, regs.PVINFO_RSV5_END, 4))

_G2V_PPGTT = {
    regs.VGT_G2V_PPGTT_L3_PAGE_TABLE_CREATE: (3, True),
    regs.VGT_G2V_PPGTT_L3_PAGE_TABLE_DESTROY: (3, False),
    regs.VGT_G2V_PPGTT_L4_PAGE_TABLE_CREATE: (4, True),
    regs.VGT_G2V_PPGTT_L4_PAGE_TABLE_DESTROY: (4, False),
}
_G2V_INFO = frozenset({1, regs.VGT_G2V_EXECLIST_CONTEXT_CREATE,
                       regs.VGT_G2V_EXECLIST_CONTEXT_DESTROY})


@attrs.define(eq=False)
class PvinfoCounters:
    host_field_writes: int = 0
    reserved_writes: int = 0
    g2v_ppgtt: int = 0
    g2v_info: int = 0
    g2v_invalid: int = 0
    g2v_failed: int = 0
    #: PPGTT notifications that arrived while the vGPU had no PPGTT owner.
    g2v_unowned: int = 0
    display_ready_changes: int = 0


class Pvinfo:
    """The PVINFO page of one vGPU, stored in its vreg."""

    def __init__(self, mmio: Mmio) -> None:
        self.mmio = mmio
        self.vgpu = mmio.vgpu
        self.v32 = mmio.v32
        self.counters = PvinfoCounters()

    def _set(self, field: int, value: int) -> None:
        self.v32[(regs.VGT_PVINFO_PAGE + field) >> 2] = value & 0xFFFF_FFFF

    def _get(self, field: int) -> int:
        return self.v32[(regs.VGT_PVINFO_PAGE + field) >> 2]

    def populate(self) -> None:
        """Write the host fields from the vGPU's identity and resources."""
        page = regs.VGT_PVINFO_PAGE
        self.mmio.vreg[page : page + regs.VGT_PVINFO_SIZE] = bytes(regs.VGT_PVINFO_SIZE)
        res = self.vgpu.resources
        self._set(regs.PVINFO_MAGIC, regs.VGT_MAGIC & 0xFFFF_FFFF)
        self._set(regs.PVINFO_MAGIC + 4, regs.VGT_MAGIC >> 32)
        self._set(regs.PVINFO_VERSION_MAJOR,
                  regs.VGT_VERSION_MAJOR | (regs.VGT_VERSION_MINOR << 16))
        self._set(regs.PVINFO_VGT_ID, self.vgpu.id)
        self._set(regs.PVINFO_VGT_CAPS, VGT_CAPS)
        self._set(regs.PVINFO_AVAIL_RS_MAPPABLE_BASE, res.low_gm_base)
        self._set(regs.PVINFO_AVAIL_RS_MAPPABLE_SIZE, res.low_gm_size)
        self._set(regs.PVINFO_AVAIL_RS_NONMAPPABLE_BASE, res.high_gm_base)
        self._set(regs.PVINFO_AVAIL_RS_NONMAPPABLE_SIZE, res.high_gm_size)
        self._set(regs.PVINFO_AVAIL_RS_FENCE_NUM, len(res.fences))
        self._set(regs.PVINFO_CURSOR_X_HOT, CURSOR_HOT_UNSET)
        self._set(regs.PVINFO_CURSOR_Y_HOT, CURSOR_HOT_UNSET)

    # --- guest accesses (offset is the BAR0 offset of a dword of the page) -------------
    def read(self, offset: int) -> int:
        """Any read tells the host the guest is PV-aware (facts 3.5)."""
        self.vgpu.pv_notified = True
        return self.v32[offset >> 2]

    def write(self, offset: int, value: int) -> None:
        field = offset - regs.VGT_PVINFO_PAGE
        if field in _GUEST_STORED:
            self.v32[offset >> 2] = value
        elif field == regs.PVINFO_DISPLAY_READY:
            self._display_ready(value)
        elif field == regs.PVINFO_G2V_NOTIFY:
            self.v32[offset >> 2] = value
            self._g2v(value)
        elif field in _RSV5:
            self.counters.reserved_writes += 1
            self.vgpu.enter_failsafe(
                "guest wrote PVINFO rsv5: its driver found the vGPU's resources insufficient"
            )
        elif field < regs.PVINFO_HOST_END:
            self.counters.host_field_writes += 1
        else:
            self.counters.reserved_writes += 1

    def _display_ready(self, value: int) -> None:
        ready = 1 if value else 0
        if ready != self.display_ready:
            self.counters.display_ready_changes += 1
            # the kernel sends a uevent GVT_DISPLAY_READY=<0|1> VMID=<id>
            log.info("vGPU %d: GVT_DISPLAY_READY=%d", self.vgpu.id, ready)
        self._set(regs.PVINFO_DISPLAY_READY, value)

    @property
    def display_ready(self) -> int:
        return 1 if self._get(regs.PVINFO_DISPLAY_READY) else 0

    @property
    def roots(self) -> tuple[int, int, int, int]:
        """pdp[0..3] as four u64 values."""
        lo = regs.PVINFO_PDP0_LO
        r = [self._get(lo + 8 * i) | (self._get(lo + 8 * i + 4) << 32) for i in range(4)]
        return (r[0], r[1], r[2], r[3])

    @property
    def execlist_context_descriptor(self) -> int:
        return self._get(regs.PVINFO_EXECLIST_CTX_DESC_LO) | (
            self._get(regs.PVINFO_EXECLIST_CTX_DESC_HI) << 32)

    def _g2v(self, code: int) -> None:
        op = _G2V_PPGTT.get(code)
        if op is None:
            if code in _G2V_INFO:
                self.counters.g2v_info += 1
            else:
                self.counters.g2v_invalid += 1
            return
        levels, create = op
        self.counters.g2v_ppgtt += 1
        owner: Any = getattr(self.vgpu, "ppgtt", None)
        if owner is None:
            self.counters.g2v_unowned += 1
            return
        try:
            if create:
                owner.g2v_create(levels, self.roots)
            else:
                owner.g2v_destroy(levels, self.roots)
        except GvtError as exc:
            self.counters.g2v_failed += 1
            log.warning("vGPU %d: g2v_notify %d failed: %s", self.vgpu.id, code, exc)
