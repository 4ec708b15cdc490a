"""What a guest i915 does with its display, performed over a :class:`GuestPort`.

After :meth:`GuestDriver.load <gvt_core.guest.driver.GuestDriver.load>`, a
:class:`GuestDisplay` brings up the vGPU's DisplayPort monitor in i915's order
on Broadwell:

1. **probe** (``intel_setup_outputs``, ``intel_dp_detect``): SFUSE_STRAP says
   whether DDI B exists; hotplug detection is enabled for port B in
   PCH_PORT_HOTPLUG and the port's hotplug, AUX and GMBUS interrupts are
   unmasked in the south display engine; SDEISR says whether a monitor is
   connected; the VBT in the OpRegion (when ASLS points at one) names the DP
   connector on port B and its AUX channel;
2. **EDID** over DP AUX (I2C-over-AUX to 0x50: offset write with MOT, 16-byte
   reads, stop) and over GMBUS (pin pair DPB, an index+wait read cycle,
   GMBUS3 four bytes at a time, STOP), and the receiver capabilities from the
   DPCD;
3. **mode**: the mode DRM's helper picks from the EDID (the preferred detailed
   timing, else the largest), its timings from the EDID or VESA DMT;
4. **mode set** (``hsw_crtc_enable`` + ``intel_dp_start_link_train`` in
   order): pipe off, transcoder timings and pipe source, DDI clock (LCPLL 810,
   the RBR link), link and data M/N, TRANS_DDI_FUNC_CTL for DP SST on port B,
   link training over AUX (pattern 1 -> clock recovery, pattern 2 ->
   equalisation and alignment, off -> receive ports in sync), the primary
   plane (format, stride, offset, surface), pipe on;
5. **interrupts**: an MSI makes it read the master register and service the
   display banks it owns (pipe vblank and flip-done, south hotplug, AUX and
   GMBUS), acknowledging each IIR as i915's ``gen8_irq_handler`` does; a
   hotplug is handled by re-probing and setting the new best mode (or turning
   the pipe off when the monitor went away);
6. **flips** (DSPSURF writes) that complete with the flip-done interrupt at
   the next vblank, and vblank counting over a span of host time.

Host time passes through ``sleep(ns)`` (the host clock's :meth:`sleep`: on the
simulated clock it advances time and fires due vblanks on the caller's thread;
on the real clock it sleeps). Everything else is a guest access through the
port. Pixels are drawn by the CPU through the guest's aperture (BAR2): each
store lands in the framebuffer's guest page through the host GGTT; or by the
GPU (:meth:`GuestDisplay.draw_with_gpu`): blits on the blitter engine through
the vGPU into the framebuffer's pages mapped in the blitter context's PPGTT,
then an MI_DISPLAY_FLIP in the same ring: the host's command scanner takes it
out of the workload and the vGPU's display applies it once the blits have
completed; it completes at the next vblank.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable

import attrs

from gvt_core.device.display.edid import DisplayMode, Edid
from gvt_core.errors import EdidError, GuestDriverError
from gvt_core.guest import commands as cmd
from gvt_core.guest.driver import GuestDriver
from gvt_core.guest.gpu import GuestContext, GuestGpu
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs

PAGE = regs.GTT_PAGE_SIZE
NSEC_PER_SEC = 1_000_000_000
#: the pipe and port the guest drives (BDW: port B on transcoder/pipe A).
PIPE = 0
PORT = regs.PORT_B
#: AUX transfers a guest polls SEND_BUSY for before it gives up.
AUX_POLLS = 10
#: MSIs serviced per :meth:`GuestDisplay.handle_interrupts` call (a bound, not a budget).
MAX_MSIS_PER_POLL = 256
#: how long a poll for interrupts lets the guest CPU run (s): a vCPU on KVM needs
#: tens of microseconds to take an MSI already injected; a late one is taken at the
#: next poll, which comes before the next vblank (polls are half a frame apart).
IRQ_POLL_S = 0.0005
#: how long a flip may take before the guest calls it lost (frames of the current mode).
FLIP_TIMEOUT_FRAMES = 8
#: the south-engine interrupts the guest enables for its port.
SDE_BITS = regs.SDE_PORTB_HOTPLUG_CPT | regs.SDE_AUX_B_CPT | regs.SDE_GMBUS_CPT
_PIPE_IRQ = tuple(regs.GEN8_DE_PIPE_A_IRQ << p for p in range(regs.NUM_PIPES))
_DISPLAY_MASTER_BITS = sum(_PIPE_IRQ) | regs.GEN8_DE_PORT_IRQ | regs.GEN8_DE_PCH_IRQ
_I2C_REPLY_MASK = 0xC0
_NATIVE_REPLY_MASK = 0x30
_EDID_CHUNK = 16
_GMBUS_POLLS = 8
_XRGB8888 = dr.DISP_FORMAT_BGRX888


def _pipe_bank(pipe: int) -> int:
    return regs.GEN8_DE_PIPE_ISR_BASE + 0x10 * pipe


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


# --- modes ---------------------------------------------------------------------------------------


@attrs.frozen
class ModeTiming:
    """A mode as the guest programs it (pixel clock in kHz, refresh in mHz)."""

    width: int
    height: int
    refresh_mhz: int
    pixel_khz: int
    htotal: int
    hsync_start: int
    hsync_end: int
    vtotal: int
    vsync_start: int
    vsync_end: int

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    @property
    def frame_ns(self) -> int:
        return NSEC_PER_SEC * 1000 // self.refresh_mhz

    @classmethod
    def from_totals(cls, width: int, height: int, pixel_khz: int, htotal: int,
                    vtotal: int) -> ModeTiming:
        refresh = round(pixel_khz * 1_000_000 / (htotal * vtotal))
        hs = min(width + 48, htotal - 1)
        vs = min(height + 3, vtotal - 1)
        return cls(width, height, refresh, pixel_khz, htotal, hs, min(hs + 32, htotal),
                   vtotal, vs, min(vs + 6, vtotal))

    @classmethod
    def for_mode(cls, mode: DisplayMode) -> ModeTiming:
        """Timings of an EDID mode: its own (detailed), VESA DMT's, or CVT reduced
        blanking for a size and rate DMT does not list (DRM's order)."""
        if mode.pixel_clock_khz and mode.htotal and mode.vtotal:
            return cls.from_totals(mode.width, mode.height, mode.pixel_clock_khz, mode.htotal,
                                   mode.vtotal)
        hz = round(mode.refresh_mhz / 1000)
        dmt = DMT_MODES.get((mode.width, mode.height, hz))
        if dmt is not None:
            clock, ht, hs, he, vt, vs, ve = dmt
            return cls(mode.width, mode.height, round(clock * 1_000_000 / (ht * vt)), clock,
                       ht, hs, he, vt, vs, ve)
        return cvt_reduced_blanking(mode.width, mode.height, hz)


#: VESA DMT timings of the modes GVT's EDIDs list: (w, h, Hz) -> (pixel kHz,
#: htotal, hsync start, hsync end, vtotal, vsync start, vsync end).
DMT_MODES: dict[tuple[int, int, int], tuple[int, int, int, int, int, int, int]] = {
    (640, 480, 60): (25175, 800, 656, 752, 525, 490, 492),
    (800, 600, 60): (40000, 1056, 840, 968, 628, 601, 605),
    (1024, 768, 60): (65000, 1344, 1048, 1184, 806, 771, 777),
    (1280, 720, 60): (74250, 1650, 1390, 1430, 750, 725, 730),
    (1280, 800, 60): (83500, 1680, 1352, 1480, 831, 803, 809),
    (1280, 1024, 60): (108000, 1688, 1328, 1440, 1066, 1025, 1028),
    (1440, 900, 60): (106500, 1904, 1520, 1672, 934, 903, 909),
    (1680, 1050, 60): (146250, 2240, 1784, 1960, 1089, 1053, 1059),
    (1920, 1080, 60): (148500, 2200, 2008, 2052, 1125, 1084, 1089),
    (1920, 1200, 60): (154000, 2080, 1968, 2000, 1235, 1203, 1209),
}


def cvt_reduced_blanking(width: int, height: int, hz: int) -> ModeTiming:
    """CVT 1.2 reduced blanking (160-pixel horizontal blank, at least 460 us of
    vertical blank, pixel clock in 250 kHz steps)."""
    htotal = width + 160
    line_us = (1e6 / hz - 460) / height
    vtotal = height + max(math.ceil(460 / line_us), 3 + 4 + 6)
    clock = int(hz * htotal * vtotal / 1000 // 250 * 250)
    return ModeTiming(width, height, round(clock * 1_000_000 / (htotal * vtotal)), clock,
                      htotal, width + 48, width + 80, vtotal, height + 3, height + 7)


# --- things the guest keeps ----------------------------------------------------------------------


@attrs.frozen
class Framebuffer:
    """A scanout buffer: guest RAM at ``gpa`` mapped at graphics address ``gm``."""

    gm: int
    gpa: int
    width: int
    height: int
    stride: int
    pages: int
    tiled: bool = False
    format_bits: int = _XRGB8888


@attrs.frozen
class Rect:
    """A filled rectangle of a picture (colour as an XRGB8888 value)."""

    x: int
    y: int
    width: int
    height: int
    colour: int


@attrs.frozen
class VbtConnector:
    """What i915's VBT parsing learns about the DP connector on the guest's port."""

    handle: int
    device_type: int
    dvo_port: int
    aux_channel: int


@attrs.define
class DisplayCounters:
    msis: int = 0
    vblanks: list[int] = attrs.field(factory=lambda: [0] * regs.NUM_PIPES)
    flips_done: list[int] = attrs.field(factory=lambda: [0] * regs.NUM_PIPES)
    hotplugs: int = 0
    aux_interrupts: int = 0
    gmbus_interrupts: int = 0
    mode_sets: int = 0


class GuestDisplay:
    """The guest i915's display on its vGPU (see the module docstring)."""

    def __init__(self, driver: GuestDriver, sleep: Callable[[int], None], *,
                 irq_poll_s: float = IRQ_POLL_S) -> None:
        if driver.report is None or driver.ram is None:
            raise GuestDriverError("use the display", "load the driver first")
        self.driver = driver
        self.port = driver.port
        self.sleep = sleep
        self.irq_poll_s = irq_poll_s
        rep = driver.report
        #: framebuffers come from the top of the mappable range down, out of the way
        #: of whatever allocates from its bottom.
        self._gm_top = rep.mappable.end
        self._gm_floor = rep.mappable.base + rep.framebuffer_pages * PAGE
        self.connected = False
        self.edid: Edid | None = None
        self.vbt: VbtConnector | None = None
        self.mode: ModeTiming | None = None
        self.scanout: Framebuffer | None = None
        self.counters = DisplayCounters()
        self._hotplug_pending = False
        self._spare: list[Framebuffer] = []
        self.gpu: GuestGpu | None = None
        self._blitter: GuestContext | None = None
        #: PPGTT address of each framebuffer in the blitter context (by GGTT address).
        self._blit_va: dict[int, int] = {}

    def _fail(self, step: str, detail: str) -> GuestDriverError:
        return GuestDriverError(step, detail)

    def r(self, offset: int) -> int:
        return self.driver.mmio_read(offset)

    def w(self, offset: int, value: int) -> None:
        self.driver.mmio_write(offset, value & 0xFFFF_FFFF)

    # --- probe --------------------------------------------------------------------------------------
    def probe(self) -> bool:
        """Find the port, enable its interrupts, read the VBT; True if a monitor is on it."""
        if not self.r(regs.SFUSE_STRAP) & dr.SFUSE_STRAP_DDI_DETECTED[PORT]:
            raise self._fail("probe DP B", "SFUSE_STRAP does not report DDI B")
        hp = self.r(regs.PCH_PORT_HOTPLUG) & ~dr.PCH_PORT_HOTPLUG_STATUS_MASK
        self.w(regs.PCH_PORT_HOTPLUG, hp | dr.PCH_HOTPLUG_BITS[PORT][0])
        self.w(regs.SDEIMR, self.r(regs.SDEIMR) & ~SDE_BITS)
        self.w(regs.SDEIER, self.r(regs.SDEIER) | SDE_BITS)
        self.w(dr.PCH_GMBUS4, dr.GMBUS_NAK_EN)
        flip_done = regs.GEN8_PIPE_PRIMARY_FLIP_DONE
        bank = _pipe_bank(PIPE)
        self.w(bank + regs.IRQ_IMR, self.r(bank + regs.IRQ_IMR) & ~flip_done)
        self.w(bank + regs.IRQ_IER, self.r(bank + regs.IRQ_IER) | flip_done)
        self.vbt = self.read_vbt()
        return self.detect()

    def detect(self) -> bool:
        """i915's ``ibx_digital_port_connected``: the live hotplug level in SDEISR."""
        self.connected = bool(self.r(regs.SDEISR) & dr.SDE_PORT_HOTPLUG_CPT[PORT])
        return self.connected

    def read_vbt(self) -> VbtConnector | None:
        """The DP child device on the guest's port from the OpRegion's VBT, as
        ``intel_bios_init`` reads it; None without an OpRegion (ASLS 0)."""
        asls = self.port.cfg_read(regs.PCI_ASLS, 4)
        if not asls:
            return None
        header = self._load(asls, 0x60)
        if header[: len(regs.OPREGION_SIGNATURE)] != regs.OPREGION_SIGNATURE:
            raise self._fail("read the VBT", f"no OpRegion signature at ASLS {asls:#x}")
        mbox = struct.unpack_from("<I", header, regs.OPREGION_HEADER_MBOX)[0]
        if not mbox & regs.OPREGION_MBOX_VBT:
            return None
        base = asls + regs.OPREGION_VBT
        head = self._load(base, 32)
        size = struct.unpack_from("<H", head, dr.VBT_HEADER_VBT_SIZE)[0]
        if not head.startswith(regs.VBT_SIGNATURE) or not 32 <= size <= regs.OPREGION_VBT_MAX:
            raise self._fail("read the VBT", "no valid VBT header in the OpRegion mailbox")
        vbt = self._load(base, size)
        if sum(vbt) % 256:
            raise self._fail("read the VBT", "VBT checksum fails")
        bdb = struct.unpack_from("<I", vbt, dr.VBT_HEADER_BDB_OFFSET)[0]
        if vbt[bdb : bdb + len(regs.BDB_SIGNATURE)] != regs.BDB_SIGNATURE:
            raise self._fail("read the VBT", "no BIOS data block")
        pos = bdb + struct.unpack_from("<H", vbt, bdb + dr.BDB_HEADER_SIZE_FIELD)[0]
        while pos + 3 <= len(vbt):
            block_id, block_size = struct.unpack_from("<BH", vbt, pos)
            body = vbt[pos + 3 : pos + 3 + block_size]
            pos += 3 + block_size
            if block_id != regs.BDB_GENERAL_DEFINITIONS or len(body) < 5:
                continue
            child_size = body[4]
            for i in range(5, len(body) - child_size + 1, child_size):
                child = body[i : i + child_size]
                handle, dtype = struct.unpack_from("<HH", child)
                if (dtype & dr.DEVICE_TYPE_DISPLAYPORT_OUTPUT
                        and child[dr.VBT_CHILD_DVO_PORT_BYTE] == regs.DVO_PORT_DP[PORT]):
                    return VbtConnector(handle, dtype, child[dr.VBT_CHILD_DVO_PORT_BYTE],
                                        child[dr.VBT_CHILD_AUX_CHANNEL_BYTE])
        raise self._fail("read the VBT", "no DP connector on port B in the VBT")

    def _load(self, gpa: int, length: int) -> bytes:
        """CPU loads of ``length`` bytes at guest-physical ``gpa`` (RAM or mapped pages)."""
        words = [self.port.mmio_read(gpa + i, 4) for i in range(0, length, 4)]
        return struct.pack(f"<{len(words)}I", *words)[:length]

    # --- DP AUX ------------------------------------------------------------------------------------
    def aux_transfer(self, request: bytes) -> bytes:
        """One AUX transaction on channel B (``intel_dp_aux_xfer``): the reply bytes."""
        ctl = dr.PCH_DPB_AUX_CH_CTL
        padded = bytes(request) + bytes(dr.DP_AUX_MAX_MESSAGE_BYTES - len(request))
        for i in range((len(request) + 3) // 4):
            self.w(ctl + 4 + 4 * i, int.from_bytes(padded[4 * i : 4 * i + 4], "big"))
        self.w(ctl, dr.DP_AUX_CH_CTL_SEND_BUSY | dr.DP_AUX_CH_CTL_STICKY
               | (len(request) << dr.DP_AUX_CH_CTL_MESSAGE_SIZE_SHIFT))
        for _ in range(AUX_POLLS):
            status = self.r(ctl)
            if not status & dr.DP_AUX_CH_CTL_SEND_BUSY:
                break
        else:
            raise self._fail("AUX transfer", "AUX_CH_CTL B stays SEND_BUSY")
        if status & dr.DP_AUX_CH_CTL_TIME_OUT_ERROR:
            raise self._fail("AUX transfer", "timeout: no sink answers on AUX B")
        if status & dr.DP_AUX_CH_CTL_RECEIVE_ERROR:
            raise self._fail("AUX transfer", "receive error on AUX B")
        size = (status & dr.DP_AUX_CH_CTL_MESSAGE_SIZE_MASK) >> dr.DP_AUX_CH_CTL_MESSAGE_SIZE_SHIFT
        if not 0 < size <= dr.DP_AUX_MAX_MESSAGE_BYTES:
            raise self._fail("AUX transfer", f"reply of {size} bytes")
        words = [self.r(ctl + 4 + 4 * i) for i in range((size + 3) // 4)]
        return b"".join(wd.to_bytes(4, "big") for wd in words)[:size]

    @staticmethod
    def _header(request: int, addr: int, length: int | None) -> bytes:
        out = bytes([(request << 4) | ((addr >> 16) & dr.DP_AUX_ADDRESS_HI_MASK),
                     (addr >> 8) & 0xFF, addr & 0xFF])
        return out if length is None else out + bytes([length - 1])

    def dpcd_read(self, addr: int, length: int) -> bytes:
        reply = self.aux_transfer(self._header(dr.DP_AUX_NATIVE_READ, addr, length))
        if reply[0] & _NATIVE_REPLY_MASK:
            raise self._fail("read DPCD", f"sink NAKed/deferred a read at {addr:#x}")
        return reply[1:]

    def dpcd_write(self, addr: int, data: bytes) -> None:
        reply = self.aux_transfer(self._header(dr.DP_AUX_NATIVE_WRITE, addr, len(data)) + data)
        if reply[0] & _NATIVE_REPLY_MASK:
            raise self._fail("write DPCD", f"sink NAKed/deferred a write at {addr:#x}")

    def _i2c(self, request: int, payload: bytes = b"", read: int = 0) -> bytes:
        length = len(payload) or read
        header = self._header(request, dr.DDC_EDID_ADDR, length if length else None)
        reply = self.aux_transfer(header + payload)
        if reply[0] & (_I2C_REPLY_MASK | _NATIVE_REPLY_MASK):
            raise self._fail("read EDID over AUX", f"I2C reply {reply[0]:#04x}")
        return reply[1:]

    def read_edid_aux(self) -> bytes:
        """The EDID through I2C-over-AUX: offset 0 written (MOT), 16-byte reads, stop."""
        mot = dr.DP_AUX_I2C_MOT
        self._i2c(dr.DP_AUX_I2C_WRITE | mot, b"\x00")
        out = b""
        total = dr.EDID_BLOCK_SIZE
        while len(out) < total:
            chunk = self._i2c(dr.DP_AUX_I2C_READ | mot, read=_EDID_CHUNK)
            if not chunk:
                raise self._fail("read EDID over AUX", "an I2C read returned no data")
            out += chunk
            if len(out) >= dr.EDID_BLOCK_SIZE and total == dr.EDID_BLOCK_SIZE:
                total = dr.EDID_BLOCK_SIZE * min(1 + out[dr.EDID_EXTENSION_COUNT],
                                                 dr.EDID_MAX_BLOCKS)
        self._i2c(dr.DP_AUX_I2C_READ)  # address-only, no MOT: stop
        return out[:total]

    # --- GMBUS ---------------------------------------------------------------------------------------
    def _gmbus_wait(self, bit: int) -> None:
        for _ in range(_GMBUS_POLLS):
            status = self.r(dr.PCH_GMBUS2)
            if status & dr.GMBUS_SATOER:
                raise self._fail("read EDID over GMBUS", "no device answers at 0x50 (SATOER)")
            if status & bit:
                return
        raise self._fail("read EDID over GMBUS", f"GMBUS2 never showed {bit:#x}")

    def _gmbus_read(self, index: int, length: int) -> bytes:
        cycle = dr.GMBUS_CYCLE_INDEX | dr.GMBUS_CYCLE_WAIT
        self.w(dr.PCH_GMBUS1, dr.GMBUS_SW_RDY | (cycle << dr.GMBUS_CYCLE_SHIFT)
               | (length << dr.GMBUS_BYTE_COUNT_SHIFT) | (index << dr.GMBUS_SLAVE_INDEX_SHIFT)
               | (dr.DDC_EDID_ADDR << dr.GMBUS_SLAVE_ADDR_SHIFT) | dr.GMBUS_SLAVE_READ)
        out = b""
        while len(out) < length:
            self._gmbus_wait(dr.GMBUS_HW_RDY)
            out += self.r(dr.PCH_GMBUS3).to_bytes(4, "little")
        self._gmbus_wait(dr.GMBUS_HW_WAIT_PHASE)
        return out[:length]

    def read_edid_gmbus(self) -> bytes:
        """The EDID over GMBUS on the DPB pin pair, a block per index+wait cycle."""
        self.w(dr.PCH_GMBUS0, dr.GMBUS_PIN_DPB)
        try:
            out = self._gmbus_read(0, dr.EDID_BLOCK_SIZE)
            blocks = min(1 + out[dr.EDID_EXTENSION_COUNT], dr.EDID_MAX_BLOCKS)
            for b in range(1, blocks):
                out += self._gmbus_read(b * dr.EDID_BLOCK_SIZE, dr.EDID_BLOCK_SIZE)
            self.w(dr.PCH_GMBUS1, dr.GMBUS_SW_RDY | (dr.GMBUS_CYCLE_STOP << dr.GMBUS_CYCLE_SHIFT))
        finally:
            self.w(dr.PCH_GMBUS0, dr.GMBUS_PIN_DISABLED)
        return out

    # --- EDID and mode ---------------------------------------------------------------------------
    def read_edid(self) -> Edid:
        """The monitor's EDID (over AUX, i915's path for DP), parsed as DRM does."""
        data = self.read_edid_aux()
        try:
            self.edid = Edid.from_bytes(data, "the monitor's DDC")
        except EdidError as exc:
            raise self._fail("read EDID", str(exc)) from None
        return self.edid

    def best_mode(self) -> ModeTiming:
        if self.edid is None:
            raise self._fail("pick a mode", "no EDID read yet")
        try:
            return ModeTiming.for_mode(self.edid.best_mode())
        except EdidError as exc:
            raise self._fail("pick a mode", str(exc)) from None

    # --- framebuffers -----------------------------------------------------------------------------
    def alloc_framebuffer(self, width: int, height: int, *, tiled: bool = False) -> Framebuffer:
        """Guest RAM for a ``width`` x ``height`` XRGB8888 surface, mapped in the aperture."""
        stride = _align(width * 4, dr.X_TILE_WIDTH if tiled else dr.PLANE_STRIDE_ALIGN)
        rows = _align(height, dr.X_TILE_HEIGHT) if tiled else height
        pages = _align(stride * rows, PAGE) // PAGE
        gm = self._gm_top - pages * PAGE
        if gm < self._gm_floor:
            raise self._fail("allocate a framebuffer",
                             f"{width}x{height} does not fit in the mappable graphics memory left")
        assert self.driver.ram is not None
        gpa = self.driver.ram.alloc(pages * PAGE)
        self.driver.map_gm(gm, gpa, pages, split=False)
        self._gm_top = gm
        return Framebuffer(gm, gpa, width, height, stride, pages, tiled)

    def boot_framebuffer(self) -> Framebuffer:
        """The framebuffer :meth:`GuestDriver.load` mapped (fbdev's, linear)."""
        d, rep = self.driver, self.driver.report
        assert rep is not None
        return Framebuffer(rep.framebuffer_gm, rep.framebuffer_gpa, d.fb_width, d.fb_height,
                           d.fb_width * 4, rep.framebuffer_pages)

    def framebuffer_for(self, mode: ModeTiming) -> Framebuffer:
        """A linear framebuffer of at least the mode's size: the boot one when it is
        large enough, else one kept from before, else a new one."""
        boot = self.boot_framebuffer()
        for fb in [boot, *self._spare]:
            if fb.width >= mode.width and fb.height >= mode.height and not fb.tiled:
                return fb
        fb = self.alloc_framebuffer(mode.width, mode.height)
        self._spare.append(fb)
        return fb

    # --- mode set ------------------------------------------------------------------------------------
    def set_mode(self, mode: ModeTiming, fb: Framebuffer) -> None:
        """i915's full modeset of pipe A to ``mode`` scanning out ``fb``."""
        if fb.width < mode.width or fb.height < mode.height:
            raise self._fail("set mode", f"{fb.width}x{fb.height} framebuffer is smaller than "
                                         f"{mode.width}x{mode.height}")
        p = PIPE
        self.w(dr.pipe_reg(regs.DSPCNTR_A, p), 0)
        self.w(dr.pipe_reg(regs.PIPECONF_A, p), 0)
        for off, val in self._timing_registers(mode).items():
            self.w(off, val)
        self.w(dr.port_clk_sel(PORT), dr.PORT_CLK_SEL_LCPLL_810)
        link = dr.DP_LINK_CLOCK_KHZ_BY_CLK_SEL[dr.PORT_CLK_SEL_LCPLL_810]
        n = dr.DP_LINK_N_REDUCED
        self.w(dr.pipe_reg(dr.PIPE_LINK_M1_A, p), mode.pixel_khz * n // link)
        self.w(dr.pipe_reg(dr.PIPE_LINK_N1_A, p), n)
        lanes = 4
        self.w(dr.pipe_reg(dr.PIPE_DATA_M1_A, p), mode.pixel_khz * 24 * n // (link * 8 * lanes))
        self.w(dr.pipe_reg(dr.PIPE_DATA_N1_A, p), n)
        self.w(dr.trans_ddi_func_ctl(p), dr.TRANS_DDI_FUNC_ENABLE | (PORT << dr.TRANS_DDI_PORT_SHIFT)
               | dr.TRANS_DDI_MODE_SELECT_DP_SST | dr.TRANS_DDI_BPC_8)
        self.train_link(lanes)
        self.w(dr.pipe_reg(regs.DSPSTRIDE_A, p), fb.stride)
        self.w(dr.pipe_reg(dr.DSPOFFSET_A, p), 0)
        self.w(dr.pipe_reg(regs.DSPCNTR_A, p), self._plane_control(fb))
        self.w(dr.pipe_reg(regs.DSPSURF_A, p), fb.gm)
        self.w(dr.pipe_reg(regs.PIPECONF_A, p), regs.PIPECONF_ENABLE)
        if not self.r(dr.pipe_reg(regs.PIPECONF_A, p)) & regs.PIPECONF_STATE:
            raise self._fail("set mode", "PIPECONF A does not report the pipe running")
        self.mode, self.scanout = mode, fb
        self.counters.mode_sets += 1

    @staticmethod
    def _plane_control(fb: Framebuffer) -> int:
        return (dr.DISP_ENABLE | (fb.format_bits << dr.DISP_FORMAT_SHIFT)
                | (dr.DISP_TILED if fb.tiled else 0))

    @staticmethod
    def _timing_registers(m: ModeTiming) -> dict[int, int]:
        def pair(lo: int, hi: int) -> int:
            return ((hi - 1) << dr.TIMING_HI_SHIFT) | (lo - 1)

        p = PIPE
        return {
            dr.pipe_reg(regs.HTOTAL_A, p): pair(m.width, m.htotal),
            dr.pipe_reg(regs.HBLANK_A, p): pair(m.width, m.htotal),
            dr.pipe_reg(regs.HSYNC_A, p): pair(m.hsync_start, m.hsync_end),
            dr.pipe_reg(regs.VTOTAL_A, p): pair(m.height, m.vtotal),
            dr.pipe_reg(regs.VBLANK_A, p): pair(m.height, m.vtotal),
            dr.pipe_reg(regs.VSYNC_A, p): pair(m.vsync_start, m.vsync_end),
            dr.pipe_reg(regs.PIPESRC_A, p): ((m.width - 1) << dr.PIPESRC_WIDTH_SHIFT)
            | (m.height - 1),
        }

    def train_link(self, lanes: int = 4) -> None:
        """``intel_dp_start_link_train`` at RBR: pattern 1 until clock recovery,
        pattern 2 until equalisation, symbol lock and alignment, then normal."""
        tp = regs.DP_TP_CTL_A + dr.DDI_PORT_STRIDE * PORT

        def pattern(p: int) -> None:
            self.w(tp, regs.DP_TP_CTL_ENABLE | (p << regs.DP_TP_CTL_LINK_TRAIN_SHIFT))

        pattern(dr.DP_TP_CTL_LINK_TRAIN_PAT1)
        self.w(dr.ddi_buf_ctl(PORT), dr.DDI_BUF_CTL_ENABLE)
        self.dpcd_write(dr.DP_LINK_BW_SET, bytes([dr.DP_LINK_BW_1_62,
                                                  lanes | dr.DP_LANE_COUNT_ENHANCED_FRAME_EN]))
        self.dpcd_write(dr.DP_TRAINING_PATTERN_SET,
                        bytes([dr.DP_TRAINING_PATTERN_1 | dr.DP_LINK_SCRAMBLING_DISABLE]))
        status = self.dpcd_read(dr.DP_LANE0_1_STATUS, 2)
        cr = dr.DP_LANE_CR_DONE * 0x11
        if any(b & cr != cr for b in status[: (lanes + 1) // 2]):
            raise self._fail("train the link", f"clock recovery failed: {status.hex()}")
        pattern(dr.DP_TP_CTL_LINK_TRAIN_PAT2)
        self.dpcd_write(dr.DP_TRAINING_PATTERN_SET,
                        bytes([dr.DP_TRAINING_PATTERN_2 | dr.DP_LINK_SCRAMBLING_DISABLE]))
        status = self.dpcd_read(dr.DP_LANE0_1_STATUS, 3)
        eq = (dr.DP_LANE_CR_DONE | dr.DP_LANE_CHANNEL_EQ_DONE | dr.DP_LANE_SYMBOL_LOCKED) * 0x11
        if any(b & eq != eq for b in status[:2]) or not status[2] & dr.DP_INTERLANE_ALIGN_DONE:
            raise self._fail("train the link", f"channel equalisation failed: {status.hex()}")
        pattern(dr.DP_TP_CTL_LINK_TRAIN_NORMAL)
        self.dpcd_write(dr.DP_TRAINING_PATTERN_SET, bytes([dr.DP_TRAINING_PATTERN_DISABLE]))
        sink = self.dpcd_read(dr.DP_SINK_STATUS, 1)[0]
        if sink & dr.DP_RECEIVE_PORT_0_STATUS == 0:
            raise self._fail("train the link", f"the sink's receive port is not in sync ({sink:#x})")

    def disable(self) -> None:
        """Planes and pipe off (the monitor went away, or the guest blanks)."""
        self.w(dr.pipe_reg(regs.DSPCNTR_A, PIPE), 0)
        self.w(dr.pipe_reg(regs.PIPECONF_A, PIPE), 0)
        self.mode = None

    def bring_up(self) -> ModeTiming | None:
        """Probe, read the EDID and set its best mode on a framebuffer (None: nothing
        connected, the pipe is left off)."""
        if not self.probe():
            self.disable()
            return None
        self.read_edid()
        mode = self.best_mode()
        self.set_mode(mode, self.framebuffer_for(mode))
        return mode

    # --- interrupts -------------------------------------------------------------------------------------
    def enable_vblank(self, on: bool = True) -> None:
        """``bdw_enable_vblank`` / ``bdw_disable_vblank`` on the guest's pipe."""
        bank = _pipe_bank(PIPE)
        bit = regs.GEN8_PIPE_VBLANK
        imr, ier = self.r(bank + regs.IRQ_IMR), self.r(bank + regs.IRQ_IER)
        self.w(bank + regs.IRQ_IMR, imr & ~bit if on else imr | bit)
        self.w(bank + regs.IRQ_IER, ier | bit if on else ier & ~bit)

    def handle_interrupts(self, timeout: float | None = None) -> int:
        """Service the MSIs that arrived (waiting up to ``timeout`` s, by default
        :data:`IRQ_POLL_S`, for the first); returns how many concerned the display."""
        handled = 0
        msi = self.port.wait_msi(self.irq_poll_s if timeout is None else timeout)
        for _ in range(MAX_MSIS_PER_POLL):
            if msi is None:
                break
            self.counters.msis += 1
            handled += self._service()
            msi = self.port.wait_msi(0)
        return handled

    def _service(self) -> int:
        """``gen8_irq_handler`` for the display banks: master off, each bank's IIR
        read and acknowledged, master on. Untouched when nothing is the display's."""
        master = self.r(regs.GEN8_MASTER_IRQ)
        if not master & _DISPLAY_MASTER_BITS:
            return 0
        self.w(regs.GEN8_MASTER_IRQ, 0)
        for pipe, bit in enumerate(_PIPE_IRQ):
            if master & bit:
                iir_off = _pipe_bank(pipe) + regs.IRQ_IIR
                iir = self.r(iir_off)
                if iir:
                    self.w(iir_off, iir)
                if iir & regs.GEN8_PIPE_VBLANK:
                    self.counters.vblanks[pipe] += 1
                if iir & regs.GEN8_PIPE_PRIMARY_FLIP_DONE:
                    self.counters.flips_done[pipe] += 1
        if master & regs.GEN8_DE_PORT_IRQ:
            iir = self.r(regs.GEN8_DE_PORT_ISR + regs.IRQ_IIR)
            self.w(regs.GEN8_DE_PORT_ISR + regs.IRQ_IIR, iir)
        if master & regs.GEN8_DE_PCH_IRQ:
            iir = self.r(regs.SDEIIR)
            if iir & dr.SDE_PORT_HOTPLUG_CPT[PORT]:
                hp = self.r(regs.PCH_PORT_HOTPLUG)
                self.w(regs.PCH_PORT_HOTPLUG, hp)  # status bits are write-1-to-clear
                if hp & dr.PCH_HOTPLUG_BITS[PORT][1]:
                    self._hotplug_pending = True
                    self.counters.hotplugs += 1
            if iir & regs.SDE_AUX_B_CPT:
                self.counters.aux_interrupts += 1
            if iir & regs.SDE_GMBUS_CPT:
                self.counters.gmbus_interrupts += 1
            if iir:
                self.w(regs.SDEIIR, iir)
        self.w(regs.GEN8_MASTER_IRQ, regs.GEN8_MASTER_IRQ_CONTROL)
        return 1

    def wait(self, ns: int, step_ns: int | None = None) -> None:
        """Let ``ns`` of host time pass, servicing interrupts every ``step_ns`` (by
        default half a frame of the current mode, so no two vblanks fall between
        two looks; 1 ms without a mode)."""
        if step_ns is None:
            step_ns = self.mode.frame_ns // 2 if self.mode is not None else 1_000_000
        left = ns
        while left > 0:
            now = min(step_ns, left)
            self.sleep(now)
            left -= now
            self.handle_interrupts()

    def count_vblanks(self, ns: int) -> int:
        """Vblank interrupts over ``ns`` of host time (vblank enabled meanwhile)."""
        self.handle_interrupts()
        before = self.counters.vblanks[PIPE]
        self.enable_vblank(True)
        try:
            self.wait(ns)
        finally:
            self.enable_vblank(False)
        return self.counters.vblanks[PIPE] - before

    def flip(self, fb: Framebuffer, *, wait: bool = True) -> None:
        """A page flip to ``fb`` (DSPSURF write); with ``wait``, until its flip-done
        interrupt (the next vblank)."""
        if self.mode is None:
            raise self._fail("flip", "no mode is set")
        self.handle_interrupts()
        before = self.counters.flips_done[PIPE]
        p = PIPE  # a plane update: control and stride, then the surface arms it
        self.w(dr.pipe_reg(regs.DSPCNTR_A, p), self._plane_control(fb))
        self.w(dr.pipe_reg(regs.DSPSTRIDE_A, p), fb.stride)
        self.w(dr.pipe_reg(regs.DSPSURF_A, p), fb.gm)
        self.scanout = fb
        if wait:
            self.wait_flip_done(before)

    def service_hotplug(self) -> bool:
        """After a hotplug interrupt: re-probe, and set the new monitor's best mode or
        turn the pipe off (i915's hotplug work and fbdev's re-configuration).
        False if no hotplug was pending."""
        if not self._hotplug_pending:
            return False
        self._hotplug_pending = False
        if not self.detect():
            self.edid = None
            self.disable()
            return True
        old = self.edid.data if self.edid is not None else None
        edid = self.read_edid()
        mode = self.best_mode()
        if edid.data != old or self.mode != mode:
            self.set_mode(mode, self.framebuffer_for(mode))
        return True

    def wait_flip_done(self, before: int) -> None:
        """Until the pipe's flip-done count passes ``before`` (bounded)."""
        if self.mode is None:
            raise self._fail("flip", "no mode is set")
        step = max(self.mode.frame_ns // 2, 1)
        for _ in range(2 * FLIP_TIMEOUT_FRAMES):
            self.handle_interrupts()
            if self.counters.flips_done[PIPE] > before:
                return
            self.sleep(step)
        raise self._fail("flip", f"no flip-done interrupt within {FLIP_TIMEOUT_FRAMES} frames")

    # --- drawing ----------------------------------------------------------------------------------------
    def attach_gpu(self, gpu: GuestGpu) -> None:
        """Use the guest's execlist submission for drawing; its interrupt handler
        also services the display banks (one i915 handler per MSI)."""
        if gpu.driver is not self.driver:
            raise self._fail("draw with the GPU", "the GPU belongs to another driver")
        self.gpu = gpu
        gpu.irq_handlers.append(self._service)

    def draw_with_gpu(self, fb: Framebuffer, rects: Iterable[Rect], *,
                      background: int | None = None, flip: bool = True,
                      timeout: float = 30.0) -> int:
        """Fill ``fb`` with ``background`` and ``rects`` by XY_COLOR_BLTs on the
        blitter engine, then (``flip``) show it with an MI_DISPLAY_FLIP from the
        same ring; waits for the GPU and for flip-done. Returns the blits."""
        gpu = self.gpu
        if gpu is None:
            raise self._fail("draw with the GPU", "attach_gpu first")
        if fb.tiled:
            raise self._fail("draw with the GPU", "the blits here write linear surfaces")
        if self._blitter is None:
            self._blitter = gpu.context(regs.ENGINE_BCS, levels=4)
        ctx = self._blitter
        va = self._blit_va.get(fb.gm)
        if va is None:
            va = ctx.ppgtt.next_va
            ctx.ppgtt.next_va += (fb.pages + 1) * PAGE
            ctx.ppgtt.map(va, [fb.gpa + i * PAGE for i in range(fb.pages)])
            self._blit_va[fb.gm] = va
        alpha = 0xFF00_0000
        words: list[int] = []
        blits = 0
        boxes = [Rect(0, 0, fb.width, fb.height, background)] if background is not None else []
        for r in [*boxes, *rects]:
            x0, y0 = max(r.x, 0), max(r.y, 0)
            x1, y1 = min(r.x + r.width, fb.width), min(r.y + r.height, fb.height)
            if x0 < x1 and y0 < y1:
                words += cmd.color_blt(va, fb.stride, x0, y0, x1, y1, alpha | r.colour)
                blits += 1
        words += cmd.flush_dw()
        before = self.counters.flips_done[PIPE]
        if flip:
            words += cmd.display_flip(0, fb.gm, fb.stride, tiled=fb.tiled)
        gpu.run(ctx, words, timeout)
        if flip:
            self.scanout = fb
            self.wait_flip_done(before)
        return blits

    def fill_rects(self, fb: Framebuffer, rects: Iterable[Rect]) -> int:
        """Fill ``rects`` of linear XRGB8888 ``fb`` with CPU stores through the
        aperture (BAR2): 8 bytes (two pixels) a store; returns the stores made."""
        if fb.tiled:
            raise self._fail("draw", "CPU drawing goes to linear framebuffers")
        rep = self.driver.report
        assert rep is not None
        base = rep.bar2 + fb.gm
        write = self.port.mmio_write
        stores = 0
        for rect in rects:
            x0, y0 = max(rect.x, 0), max(rect.y, 0)
            x1, y1 = min(rect.x + rect.width, fb.width), min(rect.y + rect.height, fb.height)
            if x0 >= x1 or y0 >= y1:
                continue
            colour = rect.colour & 0xFFFF_FFFF
            pair = colour | (colour << 32)
            for y in range(y0, y1):
                row = base + y * fb.stride
                x = x0
                if x & 1:
                    write(row + 4 * x, colour, 4)
                    x += 1
                    stores += 1
                while x + 2 <= x1:
                    write(row + 4 * x, pair, 8)
                    x += 2
                    stores += 1
                if x < x1:
                    write(row + 4 * x, colour, 4)
                    stores += 1
        return stores
