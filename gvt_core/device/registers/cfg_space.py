"""The vGPU's virtual PCI configuration space (facts 5.5, 5.6; the kernel's cfg_space.c).

A vGPU starts from the host's golden config space with I/O, memory and
bus-master decoding off, no stolen memory, the IOBAR hidden and ASLS cleared;
everything else is the host's, the MSI capability included (as upstream's
``intel_vgpu_init_cfg_space``: the host driver enabled MSI before GVT took the
snapshot, so a vGPU starts with the host's MSI programming until its guest
writes its own). Guest writes go through a per-byte writable mask (plus the
RW1C bits of the status register); writes to the COMMAND register and the BARs
have side effects on the backend (trap BAR0, map the aperture slice) for
backends that declare they need them. BAR4 and BAR5 take any value but all
ones (which reads back 0), as upstream's unimplemented BARs do. A write to
SWSCI is not stored: with SCI select and the trigger bit set (the trigger
stored is never set, so every such write is a 0->1 edge) it runs the
OpRegion's BIOS-call emulation, as upstream's.

Where this differs from upstream, on purpose:

* Bytes beyond the standard header that are neither the MSI/PM capability
  registers nor ASLS are read-only here (SWSCI is acted on, never stored); the kernel copies guest
  writes there verbatim, which lets a guest rewrite capability ids and
  pointers. Nothing lives behind those bytes, so read-only is the hardware
  answer.
* The expansion ROM BAR is read-only zero (no ROM exposed), so ROM sizing
  correctly reports "no ROM" instead of a phantom 2 KiB ROM.
* BAR2 (the aperture) is sized to the host aperture, as upstream does, not
  to the vGPU's own low GM. The guest's graphics-memory addresses are the
  host's (facts 2.2): the guest i915 takes its mappable end from the BAR2
  length and rejects a PVINFO range beyond it (``intel_vgt_balloon``), and
  the vGPU's slice starts at its ``low_gm_base``, which is usually above the
  slice size. A BAR2 the size of the slice would make every vGPU but one
  unusable. Only the vGPU's slice of BAR2 is backed (aperture map).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs

from gvt_core.errors import GvtError
from gvt_core.hw import regs
from gvt_core.hw.gpu import HOST_APERTURE_PA, HOST_BAR0_PA, HostGpu

if TYPE_CHECKING:
    from gvt_core.device.vgpu import Vgpu

log = logging.getLogger(__name__)

_SIZE = regs.CFG_SPACE_SIZE
_U32 = 0xFFFF_FFFF
_ALL_ONES = (0, 0xFF, 0xFFFF, 0xFF_FFFF, _U32, 0xFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF,
             0xFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF)

_BAR0_FLAGS = regs.PCI_BASE_ADDRESS_MEM_TYPE_64
_BAR2_FLAGS = regs.PCI_BASE_ADDRESS_MEM_TYPE_64 | regs.PCI_BASE_ADDRESS_MEM_PREFETCH
_BAR_FIRST = regs.PCI_BASE_ADDRESS_0
_BAR_END = regs.PCI_BASE_ADDRESS_5 + 4


@attrs.frozen(slots=True)
class MsiConfig:
    """The virtual MSI capability as ``inject_msi`` needs it (32-bit layout, facts 1.3)."""

    enabled: bool
    address: int
    data: int
    control: int


def _put(buf: bytearray, offset: int, value: int, size: int) -> None:
    buf[offset : offset + size] = value.to_bytes(size, "little")


def golden_cfg_space(gpu: HostGpu) -> bytes:
    """The host IGD's config space as GVT snapshots it at boot (facts 2.4, 5.5).

    Built in code for the simulated Broadwell host: a VGA-class display
    controller with 64-bit BAR0 (GTTMMADR) and BAR2 (GMADR), an IOBAR, MSI
    chained to PM, GGMS = 8 MiB of GTT and some stolen memory.
    """
    cfg = bytearray(_SIZE)
    _put(cfg, regs.PCI_VENDOR_ID, regs.INTEL_VENDOR_ID, 2)
    _put(cfg, regs.PCI_DEVICE_ID, gpu.device_id, 2)
    _put(cfg, regs.PCI_COMMAND,
         regs.PCI_COMMAND_IO | regs.PCI_COMMAND_MEMORY | regs.PCI_COMMAND_MASTER, 2)
    _put(cfg, regs.PCI_STATUS, regs.PCI_STATUS_CAP_LIST, 2)
    cfg[regs.PCI_REVISION_ID] = gpu.revision
    cfg[regs.PCI_CLASS_PROG] = regs.PCI_CLASS_DISPLAY_VGA & 0xFF
    _put(cfg, regs.PCI_CLASS_DEVICE, regs.PCI_CLASS_DISPLAY_VGA, 2)
    cfg[regs.PCI_HEADER_TYPE] = regs.PCI_HEADER_TYPE_NORMAL
    _put(cfg, regs.PCI_BASE_ADDRESS_0, (HOST_BAR0_PA & _U32) | _BAR0_FLAGS, 4)
    _put(cfg, regs.PCI_BASE_ADDRESS_1, HOST_BAR0_PA >> 32, 4)
    _put(cfg, regs.PCI_BASE_ADDRESS_2, (HOST_APERTURE_PA & _U32) | _BAR2_FLAGS, 4)
    _put(cfg, regs.PCI_BASE_ADDRESS_3, HOST_APERTURE_PA >> 32, 4)
    _put(cfg, regs.PCI_BASE_ADDRESS_4, regs.HOST_IOBAR, 4)
    _put(cfg, regs.PCI_SUBSYSTEM_VENDOR_ID, regs.SIM_SUBSYSTEM_VENDOR_ID, 2)
    _put(cfg, regs.PCI_SUBSYSTEM_ID, regs.SIM_SUBSYSTEM_ID, 2)
    cfg[regs.PCI_CAPABILITY_LIST] = regs.MSI_CAP_OFFSET
    cfg[regs.PCI_INTERRUPT_PIN] = regs.PCI_INTERRUPT_PIN_INTA
    _put(cfg, regs.INTEL_GMCH_CTRL,
         (regs.HOST_GMCH_GMS << 8) | (regs.INTEL_GMCH_GGMS_8M << regs.INTEL_GMCH_GGMS_SHIFT), 2)
    # MSI, 32-bit, one message; chained to PM
    cfg[regs.MSI_CAP_OFFSET] = regs.PCI_CAP_ID_MSI
    cfg[regs.MSI_CAP_OFFSET + 1] = regs.PM_CAP_OFFSET
    _put(cfg, regs.MSI_CAP_OFFSET + regs.PCI_MSI_FLAGS, regs.PCI_MSI_FLAGS_ENABLE, 2)
    _put(cfg, regs.MSI_CAP_OFFSET + regs.PCI_MSI_ADDRESS_LO, regs.HOST_MSI_ADDRESS, 4)
    _put(cfg, regs.MSI_CAP_OFFSET + regs.PCI_MSI_DATA_32, regs.HOST_MSI_DATA, 2)
    cfg[regs.PM_CAP_OFFSET] = regs.PCI_CAP_ID_PM
    cfg[regs.PM_CAP_OFFSET + 1] = 0
    _put(cfg, regs.PM_CAP_OFFSET + regs.PCI_PM_PMC,
         regs.PCI_PM_PMC_VERSION_1_1 | regs.PCI_PM_PMC_DSI, 2)
    return bytes(cfg)


def _writable_masks() -> tuple[bytes, bytes]:
    """(writable bits, RW1C bits) per byte, for everything but the BARs."""
    wmask = bytearray(_SIZE)
    w1c = bytearray(_SIZE)
    _put(wmask, regs.PCI_COMMAND, regs.PCI_COMMAND_WRITABLE, 2)
    w1c[regs.PCI_STATUS + 1] = regs.PCI_STATUS_RW1C_HIGH
    wmask[regs.PCI_CACHE_LINE_SIZE] = 0xFF
    wmask[regs.PCI_INTERRUPT_LINE] = 0xFF
    _put(wmask, regs.MSI_CAP_OFFSET + regs.PCI_MSI_FLAGS, regs.PCI_MSI_FLAGS_ENABLE, 2)
    _put(wmask, regs.MSI_CAP_OFFSET + regs.PCI_MSI_ADDRESS_LO, regs.PCI_MSI_ADDRESS_LO_MASK, 4)
    _put(wmask, regs.MSI_CAP_OFFSET + regs.PCI_MSI_DATA_32, regs.PCI_MSI_DATA_MASK, 2)
    _put(wmask, regs.PM_CAP_OFFSET + regs.PCI_PM_CTRL, regs.PCI_PM_CTRL_STATE_MASK, 2)
    _put(wmask, regs.PCI_ASLS, _U32, 4)
    return bytes(wmask), bytes(w1c)


_WMASK, _W1C = _writable_masks()


def _bar_size(size: int) -> int:
    """PCI BAR sizes are powers of two: round up."""
    return 1 << (size - 1).bit_length()


class CfgSpace:
    """Config space of one vGPU. Not thread safe: callers hold ``vgpu.lock``."""

    def __init__(self, vgpu: Vgpu, golden: bytes) -> None:
        if len(golden) != _SIZE:
            raise ValueError(f"golden config space must be {_SIZE} bytes, got {len(golden)}")
        self.vgpu = vgpu
        self.stats = vgpu.stats
        self.bar_sizes = (regs.BAR0_SIZE, _bar_size(vgpu.gvt.gpu.aperture_size))
        self._initial = self._vgpu_image(golden)
        self._data = bytearray(self._initial)
        #: guest-physical bases, kept current on every BAR write (the MMIO path reads bar0_base).
        self.bar0_base = 0
        self.bar2_base = 0
        #: a BAR whose last write was all ones is being sized and holds no address.
        self._probing = [False, False]
        #: what the backend currently traps / maps for us.
        self.trapped: tuple[int, int] | None = None
        self.mapped: tuple[int, int, int] | None = None
        #: ASLS value restored at reset: where the backend placed the OpRegion, if it did.
        self.asls_default = 0
        self._update_bases()

    @staticmethod
    def _vgpu_image(golden: bytes) -> bytes:
        cfg = bytearray(golden)
        cmd = int.from_bytes(cfg[regs.PCI_COMMAND : regs.PCI_COMMAND + 2], "little")
        cmd &= ~(regs.PCI_COMMAND_IO | regs.PCI_COMMAND_MEMORY | regs.PCI_COMMAND_MASTER)
        _put(cfg, regs.PCI_COMMAND, cmd, 2)
        gmch = int.from_bytes(cfg[regs.INTEL_GMCH_CTRL : regs.INTEL_GMCH_CTRL + 2], "little")
        _put(cfg, regs.INTEL_GMCH_CTRL, gmch & ~regs.INTEL_GMCH_GMS_MASK, 2)
        for off in (regs.PCI_BASE_ADDRESS_1, regs.PCI_BASE_ADDRESS_3,
                    regs.PCI_BASE_ADDRESS_4, regs.PCI_BASE_ADDRESS_5, regs.PCI_ROM_ADDRESS,
                    regs.PCI_ASLS):
            _put(cfg, off, 0, 4)
        return bytes(cfg)

    # --- guest accesses ------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        """A guest config read; a bad access reads all ones."""
        self.stats.cfg_reads += 1
        if size not in (1, 2, 4) or offset < 0 or offset + size > _SIZE or offset & (size - 1):
            self.stats.bad_accesses += 1
            return _ALL_ONES[size] if 0 <= size <= 8 else _U32
        return int.from_bytes(self._data[offset : offset + size], "little")

    def write(self, offset: int, value: int, size: int) -> None:
        """A guest config write; a bad access is dropped."""
        self.stats.cfg_writes += 1
        if size not in (1, 2, 4) or offset < 0 or offset + size > _SIZE or offset & (size - 1):
            self.stats.bad_accesses += 1
            return
        value &= _ALL_ONES[size]
        if _BAR_FIRST <= offset < _BAR_END:
            self._write_bar(offset, value, size)
            return
        data = self._data
        for i in range(size):
            o = offset + i
            b = (value >> (8 * i)) & 0xFF
            m, c = _WMASK[o], _W1C[o]
            data[o] = ((data[o] & ~m) | (b & m)) & ~(b & c) & 0xFF
        if offset <= regs.PCI_COMMAND < offset + size:
            self._sync_backend()
        if offset == regs.PCI_SWSCI:
            self._swsci(value)

    # --- BARs -------------------------------------------------------------------------
    def _write_bar(self, offset: int, value: int, size: int) -> None:
        dword = offset & ~3
        shift = 8 * (offset - dword)
        old = int.from_bytes(self._data[dword : dword + 4], "little")
        raw = (old & ~(_ALL_ONES[size] << shift) | (value << shift)) & _U32
        if dword in (regs.PCI_BASE_ADDRESS_0, regs.PCI_BASE_ADDRESS_1):
            bar, flags = 0, _BAR0_FLAGS
        elif dword in (regs.PCI_BASE_ADDRESS_2, regs.PCI_BASE_ADDRESS_3):
            bar, flags = 1, _BAR2_FLAGS
        else:
            # BAR4 (the IOBAR, not exposed) and BAR5: upstream's "unimplemented BARs"
            # store what the guest writes (BAR4 keeps its type bits), and sizing
            # (all ones) reads back 0, so the guest sees no BAR there.
            if raw == _U32:
                stored = 0
            elif dword == regs.PCI_BASE_ADDRESS_4:
                stored = (raw & ~0xF) | (old & 0xF)
            else:
                stored = raw
            _put(self._data, dword, stored & _U32, 4)
            return
        size_mask = ~(self.bar_sizes[bar] - 1)
        if dword in (regs.PCI_BASE_ADDRESS_0, regs.PCI_BASE_ADDRESS_2):
            stored = (raw & size_mask & ~0xF & _U32) | flags
        else:
            stored = raw & (size_mask >> 32) & _U32
        _put(self._data, dword, stored, 4)
        self._probing[bar] = raw == _U32
        self._update_bases()
        self._sync_backend()

    def _bar(self, offset: int) -> int:
        lo = int.from_bytes(self._data[offset : offset + 4], "little")
        hi = int.from_bytes(self._data[offset + 4 : offset + 8], "little")
        return (hi << 32) | (lo & ~0xF & _U32)

    def _update_bases(self) -> None:
        self.bar0_base = self._bar(regs.PCI_BASE_ADDRESS_0)
        self.bar2_base = self._bar(regs.PCI_BASE_ADDRESS_2)

    @property
    def memory_enabled(self) -> bool:
        return bool(self._data[regs.PCI_COMMAND] & regs.PCI_COMMAND_MEMORY)

    def _sync_backend(self) -> None:
        """Make the backend's BAR0 trap and aperture map match the current state.

        Only for backends that declare they need them, only while memory
        decoding is on and the BAR holds an address (not mid-sizing). The old
        range is always released before a new one is set up.
        """
        vgpu = self.vgpu
        caps = vgpu.mpt.caps
        on = self.memory_enabled
        want_trap = None
        if caps.needs_trap_area and on and not self._probing[0]:
            want_trap = (self.bar0_base, self.bar0_base + regs.BAR0_SIZE)
        want_map = None
        if caps.needs_aperture_map and on and not self._probing[1]:
            res = vgpu.resources
            want_map = (
                (self.bar2_base + res.low_gm_base) >> regs.GTT_PAGE_SHIFT,
                (HOST_APERTURE_PA + res.low_gm_base) >> regs.GTT_PAGE_SHIFT,
                res.low_gm_size >> regs.GTT_PAGE_SHIFT,
            )
        if want_trap != self.trapped:
            self._set_trap(want_trap)
        if want_map != self.mapped:
            self._set_map(want_map)

    def _set_trap(self, want: tuple[int, int] | None) -> None:
        vgpu = self.vgpu
        try:
            if self.trapped is not None:
                start, end = self.trapped
                self.trapped = None
                vgpu.mpt.set_trap_area(vgpu.handle, start, end, False)
            if want is not None:
                vgpu.mpt.set_trap_area(vgpu.handle, want[0], want[1], True)
                self.trapped = want
        except GvtError as exc:
            self.stats.bar_map_errors += 1
            log.warning("vGPU %d: backend refused to (un)trap BAR0: %s", vgpu.id, exc)

    def _set_map(self, want: tuple[int, int, int] | None) -> None:
        vgpu = self.vgpu
        try:
            if self.mapped is not None:
                gfn, mfn, nr = self.mapped
                self.mapped = None
                vgpu.mpt.map_gfn_to_mfn(vgpu.handle, gfn, mfn, nr, False)
            if want is not None:
                vgpu.mpt.map_gfn_to_mfn(vgpu.handle, *want, True)
                self.mapped = want
        except GvtError as exc:
            self.stats.bar_map_errors += 1
            log.warning("vGPU %d: backend refused to (un)map the aperture: %s", vgpu.id, exc)

    # --- SWSCI ------------------------------------------------------------------------
    def _swsci(self, value: int) -> None:
        """``intel_vgpu_emulate_opregion_request``: an SCI request (select and trigger
        set in the written value, the stored trigger clear) runs the BIOS call.
        An SMI request (select clear) is not emulated; nothing is stored."""
        if not value & regs.SWSCI_SCI_SELECT:
            return
        if self._data[regs.PCI_SWSCI] & regs.SWSCI_SCI_TRIGGER or not value & regs.SWSCI_SCI_TRIGGER:
            return  # not a 0->1 transition
        self.stats.swsci_requests += 1
        opregion = getattr(self.vgpu, "opregion", None)
        if opregion is not None:
            opregion.emulate_swsci(self.vgpu.mpt, self.vgpu.handle, self.asls)

    # --- for the rest of the device model -----------------------------------------------
    @property
    def asls(self) -> int:
        return int.from_bytes(self._data[regs.PCI_ASLS : regs.PCI_ASLS + 4], "little")

    def set_asls(self, gpa: int) -> None:
        """The backend placed the OpRegion at ``gpa``: publish it (and keep it over resets)."""
        self.asls_default = gpa & _U32
        _put(self._data, regs.PCI_ASLS, self.asls_default, 4)

    def msi(self) -> MsiConfig:
        """The guest's MSI programming, decoded from the virtual capability."""
        d, cap = self._data, regs.MSI_CAP_OFFSET
        control = d[cap + 2] | (d[cap + 3] << 8)
        return MsiConfig(
            enabled=bool(control & regs.PCI_MSI_FLAGS_ENABLE),
            address=int.from_bytes(d[cap + 4 : cap + 8], "little"),
            data=d[cap + 8] | (d[cap + 9] << 8),
            control=control,
        )

    def snapshot(self) -> bytes:
        """All 4096 bytes as they are now."""
        return bytes(self._data)

    @property
    def initial(self) -> bytes:
        """The image a vGPU starts from (and returns to on reset)."""
        return self._initial

    def release(self) -> None:
        """Stop any BAR0 trap and aperture map (before reset and destroy)."""
        if self.trapped is not None:
            self._set_trap(None)
        if self.mapped is not None:
            self._set_map(None)

    def reset(self) -> None:
        """Device-model-level reset: back to the initial image, decoding off."""
        self.release()
        self._data[:] = self._initial
        _put(self._data, regs.PCI_ASLS, self.asls_default, 4)
        self._probing = [False, False]
        self._update_bases()
