"""What a vGPU-aware guest i915 does when it loads, performed over a :class:`GuestPort`.

The model follows the guest side of GVT-g (``i915_vgpu.c``): probe the PCI
function, size and program the BARs, detect the vGPU through the PVINFO magic
and version, read the GT's slice/subslice/EU fuses as i915's
``bdw_sseu_info_init`` does, read the resources the host granted and balloon
everything else out of its GGTT allocator, program GGTT entries for a
framebuffer and a ring buffer, and enable MSI. It uses nothing but the port, so the same code runs
on every backend; each step checks what real hardware (or GVT-g) guarantees
and fails with :class:`GuestDriverError` naming the step.
"""

from __future__ import annotations

import struct

import attrs

from gvt_core.errors import GuestDriverError
from gvt_core.guest.port import GuestPort
from gvt_core.hw import regs

#: the guest's MSI target: the local APIC of CPU 0, and the vector it uses.
MSI_ADDRESS = 0xFEE0_0000
MSI_VECTOR = 0x41
#: the GT interrupt the guest unmasks for its render ring (facts 6.2).
GT0_RCS_USER_INTERRUPT = 1 << 0
#: where guest RAM for driver allocations starts (below it: the guest's own code).
DEFAULT_ALLOC_BASE = 8 * regs.MiB


@attrs.frozen
class GmRange:
    base: int
    size: int

    @property
    def end(self) -> int:
        return self.base + self.size


@attrs.define
class GuestRam:
    """A bump allocator of guest-physical pages for the driver's buffers."""

    base: int
    limit: int
    next: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.next = self.base

    def alloc(self, size: int) -> int:
        size = (size + regs.GTT_PAGE_SIZE - 1) & ~(regs.GTT_PAGE_SIZE - 1)
        if self.next + size > self.limit:
            raise GuestDriverError(
                "allocate guest memory",
                f"{size} bytes do not fit below {self.limit:#x} (next free {self.next:#x}); "
                "give the guest more RAM",
            )
        gpa = self.next
        self.next += size
        return gpa


@attrs.frozen
class Sseu:
    """Slices, subslices and EUs as i915 computes them from the BDW fuses."""

    slice_mask: int
    subslice_mask: int
    eu_total: int


@attrs.frozen
class DriverReport:
    """What the guest learned and set up while loading."""

    device_id: int
    bar0: int
    bar0_size: int
    bar2: int
    bar2_size: int
    vgt_id: int
    caps: int
    mappable: GmRange
    nonmappable: GmRange
    fences: int
    balloons: tuple[GmRange, ...]
    framebuffer_gm: int
    framebuffer_gpa: int
    framebuffer_pages: int
    ring_gm: int
    ring_gpa: int
    ring_pages: int
    msi_cap: int
    msi_address: int
    msi_data: int
    sseu: Sseu


def mmio_window(mem_size: int) -> int:
    """Where the guest's firmware puts 64-bit BARs: above RAM, at least at 3 GiB."""
    floor = 3 * regs.GiB
    top = max(mem_size, floor)
    return (top + regs.GiB - 1) & ~(regs.GiB - 1)


@attrs.define
class GuestDriver:
    """The guest i915's vGPU bring-up. Call :meth:`load` once."""

    port: GuestPort
    fb_width: int = 1024
    fb_height: int = 768
    ring_pages: int = 8
    alloc_base: int = DEFAULT_ALLOC_BASE
    report: DriverReport | None = attrs.field(default=None, init=False)
    bar0: int = attrs.field(default=0, init=False)
    #: guest RAM the driver allocates from (after :meth:`load`: what is left).
    ram: GuestRam | None = attrs.field(default=None, init=False)

    # --- small helpers -------------------------------------------------------------
    def _fail(self, step: str, detail: str) -> GuestDriverError:
        return GuestDriverError(step, detail)

    def mmio_read(self, offset: int, size: int = 4) -> int:
        return self.port.mmio_read(self.bar0 + offset, size)

    def mmio_write(self, offset: int, value: int, size: int = 4) -> None:
        self.port.mmio_write(self.bar0 + offset, value, size)

    def _size_bar(self, offset: int) -> int:
        """The PCI sizing protocol on a 64-bit memory BAR: all ones in, size mask out."""
        lo_orig = self.port.cfg_read(offset, 4)
        hi_orig = self.port.cfg_read(offset + 4, 4)
        self.port.cfg_write(offset, 0xFFFF_FFFF, 4)
        self.port.cfg_write(offset + 4, 0xFFFF_FFFF, 4)
        lo = self.port.cfg_read(offset, 4)
        hi = self.port.cfg_read(offset + 4, 4)
        self.port.cfg_write(offset, lo_orig, 4)
        self.port.cfg_write(offset + 4, hi_orig, 4)
        if lo & regs.PCI_BASE_ADDRESS_SPACE_IO:
            raise self._fail("size BARs", f"BAR at {offset:#x} is an I/O BAR, expected memory")
        if not lo & regs.PCI_BASE_ADDRESS_MEM_TYPE_64:
            raise self._fail("size BARs", f"BAR at {offset:#x} is not a 64-bit memory BAR")
        mask = ((hi << 32) | (lo & ~0xF & 0xFFFF_FFFF))
        size = (~mask & 0xFFFF_FFFF_FFFF_FFFF) + 1
        if mask == 0 or size & (size - 1):
            raise self._fail("size BARs", f"BAR at {offset:#x} reads back {mask:#x} after sizing")
        return size

    def _find_capability(self, cap_id: int) -> int:
        if not self.port.cfg_read(regs.PCI_STATUS, 2) & regs.PCI_STATUS_CAP_LIST:
            raise self._fail("find MSI", "device has no capability list")
        ptr = self.port.cfg_read(regs.PCI_CAPABILITY_LIST, 1) & 0xFC
        seen: set[int] = set()
        while ptr and ptr not in seen:
            seen.add(ptr)
            if self.port.cfg_read(ptr, 1) == cap_id:
                return ptr
            ptr = self.port.cfg_read(ptr + 1, 1) & 0xFC
        raise self._fail("find MSI", f"capability {cap_id:#x} not in the capability list")

    # --- the load sequence -----------------------------------------------------------
    def load(self) -> DriverReport:
        port = self.port
        vendor = port.cfg_read(regs.PCI_VENDOR_ID, 2)
        device = port.cfg_read(regs.PCI_DEVICE_ID, 2)
        klass = port.cfg_read(regs.PCI_CLASS_DEVICE, 2)
        if vendor != regs.INTEL_VENDOR_ID:
            raise self._fail("probe", f"vendor {vendor:#06x} at 00:02.0 is not Intel")
        if klass >> 8 != regs.PCI_CLASS_DISPLAY_VGA >> 8:
            raise self._fail("probe", f"class {klass:#06x} is not a display controller")

        bar0_size = self._size_bar(regs.PCI_BASE_ADDRESS_0)
        bar2_size = self._size_bar(regs.PCI_BASE_ADDRESS_2)
        if bar0_size != regs.BAR0_SIZE:
            raise self._fail("size BARs", f"GTTMMADR is {bar0_size:#x} bytes, expected 16 MiB")
        window = mmio_window(port.mem_size)
        bar0 = window
        bar2 = window + max(bar2_size, regs.BAR0_SIZE)
        bar2 = (bar2 + bar2_size - 1) & ~(bar2_size - 1)
        for off, base in ((regs.PCI_BASE_ADDRESS_0, bar0), (regs.PCI_BASE_ADDRESS_2, bar2)):
            low_bits = port.cfg_read(off, 4) & 0xF
            port.cfg_write(off, (base & 0xFFFF_FFF0) | low_bits, 4)
            port.cfg_write(off + 4, base >> 32, 4)
        got0 = (port.cfg_read(regs.PCI_BASE_ADDRESS_0 + 4, 4) << 32) | (
            port.cfg_read(regs.PCI_BASE_ADDRESS_0, 4) & ~0xF
        )
        if got0 != bar0:
            raise self._fail("program BARs", f"BAR0 reads back {got0:#x}, wrote {bar0:#x}")
        cmd = port.cfg_read(regs.PCI_COMMAND, 2)
        port.cfg_write(regs.PCI_COMMAND, cmd | regs.PCI_COMMAND_MEMORY | regs.PCI_COMMAND_MASTER, 2)
        self.bar0 = bar0

        # vGPU detection (intel_vgpu_detect): magic, then version.
        magic = self.mmio_read(regs.VGT_PVINFO_PAGE + regs.PVINFO_MAGIC, 8)
        if magic != regs.VGT_MAGIC:
            raise self._fail("detect vGPU", f"PVINFO magic is {magic:#x}, not {regs.VGT_MAGIC:#x}")
        major = self.mmio_read(regs.VGT_PVINFO_PAGE + regs.PVINFO_VERSION_MAJOR, 2)
        if major < regs.VGT_VERSION_MAJOR:
            raise self._fail("detect vGPU", f"PVINFO version {major} is older than 1")
        vgt_id = self.mmio_read(regs.VGT_PVINFO_PAGE + regs.PVINFO_VGT_ID)
        caps = self.mmio_read(regs.VGT_PVINFO_PAGE + regs.PVINFO_VGT_CAPS)
        sseu = self.read_sseu()

        mappable, nonmappable, fences = self._read_resources(bar2_size)
        balloons = self._balloons(mappable, nonmappable, bar2_size)

        ram = self.ram = GuestRam(self.alloc_base, port.mem_size)
        fb_pages = (self.fb_width * self.fb_height * 4 + regs.GTT_PAGE_SIZE - 1) // regs.GTT_PAGE_SIZE
        if fb_pages * regs.GTT_PAGE_SIZE > mappable.size:
            raise self._fail("map framebuffer", "framebuffer larger than the mappable range")
        if self.ring_pages * regs.GTT_PAGE_SIZE > nonmappable.size:
            raise self._fail("map ring", "ring larger than the non-mappable range")
        fb_gpa = ram.alloc(fb_pages * regs.GTT_PAGE_SIZE)
        ring_gpa = ram.alloc(self.ring_pages * regs.GTT_PAGE_SIZE)
        # framebuffer in the aperture (CPU visible), ring in hidden GM, as i915 does.
        self.map_gm(mappable.base, fb_gpa, fb_pages, split=False)
        self.map_gm(nonmappable.base, ring_gpa, self.ring_pages, split=True)
        self.verify_gm(mappable.base, fb_gpa, fb_pages, "map framebuffer")
        self.verify_gm(nonmappable.base, ring_gpa, self.ring_pages, "map ring")

        msi_cap, msi_data = self._enable_msi()
        self._enable_interrupts()
        self.mmio_write(regs.VGT_PVINFO_PAGE + regs.PVINFO_DISPLAY_READY, 1)

        self.report = DriverReport(
            device_id=device,
            bar0=bar0,
            bar0_size=bar0_size,
            bar2=bar2,
            bar2_size=bar2_size,
            vgt_id=vgt_id,
            caps=caps,
            mappable=mappable,
            nonmappable=nonmappable,
            fences=fences,
            balloons=tuple(balloons),
            framebuffer_gm=mappable.base,
            framebuffer_gpa=fb_gpa,
            framebuffer_pages=fb_pages,
            ring_gm=nonmappable.base,
            ring_gpa=ring_gpa,
            ring_pages=self.ring_pages,
            msi_cap=msi_cap,
            msi_address=MSI_ADDRESS,
            msi_data=msi_data,
            sseu=sseu,
        )
        return self.report

    def read_sseu(self) -> Sseu:
        """i915's ``bdw_sseu_info_init``: enabled slices from GEN8_FUSE2, the subslices
        its disable field leaves, EUs per subslice from GEN8_EU_DISABLE0-2."""
        fuse2 = self.mmio_read(regs.GEN8_FUSE2)
        slices = (fuse2 & regs.GEN8_F2_S_ENA_MASK) >> regs.GEN8_F2_S_ENA_SHIFT
        subslices = ((1 << regs.BDW_MAX_SUBSLICES) - 1) & ~(
            (fuse2 & regs.GEN8_F2_SS_DIS_MASK) >> regs.GEN8_F2_SS_DIS_SHIFT)
        d0, d1, d2 = (self.mmio_read(r) for r in (regs.GEN8_EU_DISABLE0, regs.GEN8_EU_DISABLE1,
                                                  regs.GEN8_EU_DISABLE2))
        per_slice = (d0 & 0xFF_FFFF, (d0 >> 24) | ((d1 & 0xFFFF) << 8),
                     (d1 >> 16) | ((d2 & 0xFF) << 16))
        eus = 0
        width = regs.BDW_MAX_EUS_PER_SUBSLICE
        for s, disabled in enumerate(per_slice):
            if not slices & (1 << s):
                continue
            for ss in range(regs.BDW_MAX_SUBSLICES):
                if subslices & (1 << ss):
                    off = (disabled >> (ss * width)) & ((1 << width) - 1)
                    eus += width - bin(off).count("1")
        if not slices or not eus:
            raise self._fail("read fuses", f"GEN8_FUSE2 {fuse2:#x} leaves no slice or EU enabled")
        return Sseu(slices, subslices, eus)

    def reset_engine(self, engine_base: int) -> None:
        """i915's gen8 engine reset: request a reset in RING_RESET_CTL and wait for
        READY_TO_RESET, reset the engine through GDRST, withdraw the request."""
        ctl = engine_base + regs.RING_RESET_CTL
        request = regs.RESET_CTL_REQUEST_RESET
        self.mmio_write(ctl, (request << regs.MASKED_WRITE_SHIFT) | request)
        if not self.mmio_read(ctl) & regs.RESET_CTL_READY_TO_RESET:
            raise self._fail("reset engine", f"RING_RESET_CTL at {ctl:#x} never got READY_TO_RESET")
        domain = {bits: bit for bit, bits in regs.GDRST_ENGINE_BITS.items()}
        engine = regs.ENGINE_IDS[next(n for n, b in regs.ENGINE_BASES.items() if b == engine_base)]
        self.mmio_write(regs.GEN6_GDRST, domain[1 << engine])
        if self.mmio_read(regs.GEN6_GDRST):
            raise self._fail("reset engine", "GDRST did not read back 0 (reset not acknowledged)")
        self.mmio_write(ctl, request << regs.MASKED_WRITE_SHIFT)

    def _read_resources(self, aperture_size: int) -> tuple[GmRange, GmRange, int]:
        """avail_rs, validated as the guest i915 validates it before ballooning."""
        base = regs.VGT_PVINFO_PAGE
        mappable = GmRange(
            self.mmio_read(base + regs.PVINFO_AVAIL_RS_MAPPABLE_BASE),
            self.mmio_read(base + regs.PVINFO_AVAIL_RS_MAPPABLE_SIZE),
        )
        nonmappable = GmRange(
            self.mmio_read(base + regs.PVINFO_AVAIL_RS_NONMAPPABLE_BASE),
            self.mmio_read(base + regs.PVINFO_AVAIL_RS_NONMAPPABLE_SIZE),
        )
        fences = self.mmio_read(base + regs.PVINFO_AVAIL_RS_FENCE_NUM)
        if mappable.size == 0 or mappable.end > aperture_size:
            raise self._fail(
                "balloon", f"mappable range [{mappable.base:#x}, {mappable.end:#x}) is not "
                f"inside the {aperture_size >> 20} MiB aperture"
            )
        if nonmappable.size == 0 or nonmappable.base < aperture_size or nonmappable.end > regs.GM_TOTAL:
            raise self._fail(
                "balloon", f"non-mappable range [{nonmappable.base:#x}, {nonmappable.end:#x}) "
                "is not inside hidden graphics memory"
            )
        if not 0 < fences <= regs.MAX_NUM_FENCES:
            raise self._fail("balloon", f"PVINFO grants {fences} fences")
        return mappable, nonmappable, fences

    @staticmethod
    def _balloons(mappable: GmRange, nonmappable: GmRange, aperture: int) -> list[GmRange]:
        """The GGTT ranges the guest must never use (i915_vgpu.c's four balloons)."""
        spans = [
            (aperture, nonmappable.base),
            (nonmappable.end, regs.GM_TOTAL),
            (0, mappable.base),
            (mappable.end, aperture),
        ]
        return [GmRange(a, b - a) for a, b in spans if b > a]

    def map_gm(self, gm: int, gpa: int, pages: int, *, split: bool) -> None:
        """Point ``pages`` GGTT entries at guest pages; ``split`` writes each PTE as two
        32-bit halves (low first), as 32-bit code does."""
        for i in range(pages):
            off = regs.GTT_START_OFFSET + ((gm >> regs.GTT_PAGE_SHIFT) + i) * regs.GTT_ENTRY_SIZE
            pte = (gpa + i * regs.GTT_PAGE_SIZE) | regs.GEN8_PAGE_PRESENT
            if split:
                self.mmio_write(off, pte & 0xFFFF_FFFF, 4)
                self.mmio_write(off + 4, pte >> 32, 4)
            else:
                self.mmio_write(off, pte, 8)

    def verify_gm(self, gm: int, gpa: int, pages: int, step: str) -> None:
        """Read the GGTT entries back: the guest must see what it wrote."""
        for i in range(pages):
            off = regs.GTT_START_OFFSET + ((gm >> regs.GTT_PAGE_SHIFT) + i) * regs.GTT_ENTRY_SIZE
            want = (gpa + i * regs.GTT_PAGE_SIZE) | regs.GEN8_PAGE_PRESENT
            got = self.mmio_read(off, 8)
            if got != want:
                raise self._fail(step, f"GGTT entry {off:#x} reads {got:#x}, wrote {want:#x}")

    def _enable_msi(self) -> tuple[int, int]:
        cap = self._find_capability(regs.PCI_CAP_ID_MSI)
        self.port.cfg_write(cap + regs.PCI_MSI_ADDRESS_LO, MSI_ADDRESS, 4)
        self.port.cfg_write(cap + regs.PCI_MSI_DATA_32, MSI_VECTOR, 2)
        ctrl = self.port.cfg_read(cap + regs.PCI_MSI_FLAGS, 2)
        self.port.cfg_write(cap + regs.PCI_MSI_FLAGS, ctrl | regs.PCI_MSI_FLAGS_ENABLE, 2)
        if not self.port.cfg_read(cap + regs.PCI_MSI_FLAGS, 2) & regs.PCI_MSI_FLAGS_ENABLE:
            raise self._fail("enable MSI", "MSI enable bit does not stick")
        data = self.port.cfg_read(cap + regs.PCI_MSI_DATA_32, 2)
        if data != MSI_VECTOR:
            raise self._fail("enable MSI", f"MSI data reads {data:#x}, wrote {MSI_VECTOR:#x}")
        return cap, data

    def _enable_interrupts(self) -> None:
        """Unmask the render ring's user interrupt and turn on the master enable."""
        gt0 = regs.GEN8_GT_ISR_BASE
        self.mmio_write(gt0 + regs.IRQ_IMR, ~GT0_RCS_USER_INTERRUPT & 0xFFFF_FFFF)
        self.mmio_write(gt0 + regs.IRQ_IER, GT0_RCS_USER_INTERRUPT)
        self.mmio_write(regs.GEN8_MASTER_IRQ, regs.GEN8_MASTER_IRQ_CONTROL)

    # --- after load ---------------------------------------------------------------------
    def read_pvinfo(self) -> bytes:
        """The whole PVINFO page as the guest sees it (4-byte loads)."""
        words = [self.mmio_read(regs.VGT_PVINFO_PAGE + i, 4) for i in range(0, regs.VGT_PVINFO_SIZE, 4)]
        return struct.pack(f"<{len(words)}I", *words)

    def notify_ppgtt(self, levels: int, roots: tuple[int, int, int, int], create: bool = True) -> None:
        """Announce (or retire) a PPGTT through PVINFO ``g2v_notify``."""
        notify_ppgtt(self.port, self.bar0, levels, roots, create)


#: the g2v_notify code for (levels, create)
_G2V_CODES = {
    (3, True): regs.VGT_G2V_PPGTT_L3_PAGE_TABLE_CREATE,
    (3, False): regs.VGT_G2V_PPGTT_L3_PAGE_TABLE_DESTROY,
    (4, True): regs.VGT_G2V_PPGTT_L4_PAGE_TABLE_CREATE,
    (4, False): regs.VGT_G2V_PPGTT_L4_PAGE_TABLE_DESTROY,
}


def notify_ppgtt(
    port: GuestPort, bar0: int, levels: int, roots: tuple[int, int, int, int], create: bool
) -> None:
    """The guest i915's PPGTT announcement: pdp[0..3] as dword halves, then g2v_notify."""
    code = _G2V_CODES.get((levels, create))
    if code is None:
        raise ValueError(f"a PPGTT has 3 or 4 levels, not {levels}")
    base = bar0 + regs.VGT_PVINFO_PAGE
    for i, root in enumerate(roots):
        off = base + regs.PVINFO_PDP0_LO + 8 * i
        port.mmio_write(off, root & 0xFFFF_FFFF, 4)
        port.mmio_write(off + 4, root >> 32, 4)
    port.mmio_write(base + regs.PVINFO_G2V_NOTIFY, code, 4)
