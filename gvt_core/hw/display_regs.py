"""Display-engine register offsets, bit fields and protocol constants of BDW (GEN8) + LPT PCH.

The display subsystem (``gvt_core.device.display``) takes every offset, bit
and magic number from here, by the name i915 and GVT-g use (i915_reg.h,
i9xx_plane_regs.h, intel_sprite_regs.h, intel_cursor_regs.h,
intel_gmbus_regs.h, intel_dp_aux_regs.h, drm_dp.h; gvt/display.h, edid.h,
fb_decoder.h). Registers the rest of the device model already names live in
:mod:`gvt_core.hw.regs` (pipe A timing, PIPECONF, DSPCNTR ..., interrupt bits)
and are not repeated; the few that belong to a group here (DDI buffers, straps,
hotplug, AUX, GMBUS) are aliases of the ``regs`` definition, never a second value.
"""

from __future__ import annotations

from gvt_core.hw import regs

# --- ports -------------------------------------------------------------------------------
PORT_NAMES = "ABCDE"
NUM_AUX_PORTS = 4  # AUX A..D

# DDI buffer control, one per port (+0x100 per port)
DDI_BUF_CTL_A = regs.DDI_BUF_CTL_A
DDI_PORT_STRIDE = regs.DDI_PORT_STRIDE
DDI_BUF_CTL_ENABLE = regs.DDI_BUF_CTL_ENABLE
DDI_BUF_IS_IDLE = regs.DDI_BUF_IS_IDLE
DDI_INIT_DISPLAY_DETECTED = regs.DDI_INIT_DISPLAY_DETECTED

# DDI clock select (HSW/BDW), one dword per port
PORT_CLK_SEL_A = 0x46100
PORT_CLK_SEL_MASK = 7 << 29
PORT_CLK_SEL_LCPLL_2700 = 0 << 29
PORT_CLK_SEL_LCPLL_1350 = 1 << 29
PORT_CLK_SEL_LCPLL_810 = 2 << 29
PORT_CLK_SEL_SPLL = 3 << 29
PORT_CLK_SEL_WRPLL1 = 4 << 29
PORT_CLK_SEL_WRPLL2 = 5 << 29
PORT_CLK_SEL_NONE = 7 << 29
SPLL_CTL = 0x46020
SPLL_FREQ_MASK = 3 << 26
SPLL_FREQ_810MHz = 0 << 26
SPLL_FREQ_1350MHz = 1 << 26
SPLL_FREQ_2700MHz = 2 << 26
#: DP link symbol clock in kHz per clock source (GVT's bdw_vgpu_get_dp_bitrate).
DP_LINK_CLOCK_KHZ_BY_CLK_SEL = {
    PORT_CLK_SEL_LCPLL_2700: 270000 * 2,
    PORT_CLK_SEL_LCPLL_1350: 135000 * 2,
    PORT_CLK_SEL_LCPLL_810: 81000 * 2,
}
DP_LINK_CLOCK_KHZ_BY_SPLL = {
    SPLL_FREQ_810MHz: 81000 * 2,
    SPLL_FREQ_1350MHz: 135000 * 2,
    SPLL_FREQ_2700MHz: 270000 * 2,
}

# strap fuses (SFUSE_STRAP itself is regs.SFUSE_STRAP)
SFUSE_STRAP_DDIB_DETECTED = regs.SFUSE_STRAP_DDIB_DETECTED
SFUSE_STRAP_DDIC_DETECTED = regs.SFUSE_STRAP_DDIC_DETECTED
SFUSE_STRAP_DDID_DETECTED = regs.SFUSE_STRAP_DDID_DETECTED
SFUSE_STRAP_DDI_DETECTED = {1: SFUSE_STRAP_DDIB_DETECTED, 2: SFUSE_STRAP_DDIC_DETECTED,
                            3: SFUSE_STRAP_DDID_DETECTED}

# PCH hotplug control (PCH_PORT_HOTPLUG = regs.PCH_PORT_HOTPLUG); status bits are sticky W1C
PORTB_HOTPLUG_ENABLE = 1 << 4
PORTB_HOTPLUG_STATUS_MASK = regs.PORTB_HOTPLUG_STATUS_MASK
PORTB_HOTPLUG_LONG_DETECT = 2 << 0
PORTB_HOTPLUG_SHORT_DETECT = 1 << 0
PORTC_HOTPLUG_ENABLE = 1 << 12
PORTC_HOTPLUG_STATUS_MASK = regs.PORTC_HOTPLUG_STATUS_MASK
PORTC_HOTPLUG_LONG_DETECT = 2 << 8
PORTD_HOTPLUG_ENABLE = 1 << 20
PORTD_HOTPLUG_STATUS_MASK = regs.PORTD_HOTPLUG_STATUS_MASK
PORTD_HOTPLUG_LONG_DETECT = 2 << 16
#: every status field the device latches (port A's too), as the register table's RO mask
PCH_PORT_HOTPLUG_STATUS_MASK = (regs.PORTA_HOTPLUG_STATUS_MASK | PORTB_HOTPLUG_STATUS_MASK
                                | PORTC_HOTPLUG_STATUS_MASK | PORTD_HOTPLUG_STATUS_MASK)
#: port -> (enable bit, status mask, long-pulse status) in PCH_PORT_HOTPLUG
PCH_HOTPLUG_BITS = {
    1: (PORTB_HOTPLUG_ENABLE, PORTB_HOTPLUG_STATUS_MASK, PORTB_HOTPLUG_LONG_DETECT),
    2: (PORTC_HOTPLUG_ENABLE, PORTC_HOTPLUG_STATUS_MASK, PORTC_HOTPLUG_LONG_DETECT),
    3: (PORTD_HOTPLUG_ENABLE, PORTD_HOTPLUG_STATUS_MASK, PORTD_HOTPLUG_LONG_DETECT),
}
#: port -> its live-state bit in SDEISR (and event bit in SDEIIR)
SDE_PORT_HOTPLUG_CPT = {1: regs.SDE_PORTB_HOTPLUG_CPT, 2: regs.SDE_PORTC_HOTPLUG_CPT,
                        3: regs.SDE_PORTD_HOTPLUG_CPT}

# analog (CRT) port on the PCH: GVT hides the host's CRT
PCH_ADPA = regs.PCH_ADPA
ADPA_CRT_HOTPLUG_MONITOR_MASK = regs.ADPA_CRT_HOTPLUG_MONITOR_MASK

# --- transcoders (BDW: transcoder n feeds pipe n; + regs.PIPE_STRIDE each) ----------------
TRANS_DDI_FUNC_CTL_A = 0x60400
TRANS_DDI_FUNC_CTL_EDP = 0x6F400
TRANS_DDI_FUNC_ENABLE = 1 << 31
TRANS_DDI_PORT_SHIFT = 28
TRANS_DDI_PORT_MASK = 7 << 28
TRANS_DDI_MODE_SELECT_MASK = 7 << 24
TRANS_DDI_MODE_SELECT_DP_SST = 2 << 24
TRANS_DDI_MODE_SELECT_DP_MST = 3 << 24
TRANS_DDI_BPC_MASK = 7 << 20
TRANS_DDI_BPC_8 = 0 << 20
PIPE_DATA_M1_A = 0x60030
PIPE_DATA_N1_A = 0x60034
PIPE_LINK_M1_A = 0x60040
PIPE_LINK_N1_A = 0x60044
DATA_LINK_M_N_MASK = 0xFFFFFF

# DP transport control (DP_TP_CTL = regs.DP_TP_CTL_A + DDI_PORT_STRIDE * port): link pattern
DP_TP_CTL_LINK_TRAIN_PAT1 = 0
DP_TP_CTL_LINK_TRAIN_PAT2 = 1
DP_TP_CTL_LINK_TRAIN_NORMAL = 3

# pipe timing fields (HTOTAL/HBLANK/HSYNC/VTOTAL/VBLANK/VSYNC: end-1 in 28:16, start-1 in 12:0)
TIMING_HI_SHIFT = 16
TIMING_FIELD_MASK = 0x1FFF
PIPESRC_WIDTH_SHIFT = 16
PIPESRC_WIDTH_MASK = 0x1FFF
PIPESRC_HEIGHT_MASK = 0xFFF
PIPEDSL_A = 0x70000
PIPEDSL_LINE_MASK = 0x1FFF
#: the LINK_N / DATA_N i915 reduces M/N ratios to (2^19)
DP_LINK_N_REDUCED = 0x80000
#: GVT's refresh rate until the guest programs a mode (GVT_DEFAULT_REFRESH_RATE, in mHz).
DEFAULT_REFRESH_MHZ = 60 * 1000

# --- primary plane (DSPCNTR = regs.DSPCNTR_A + regs.PIPE_STRIDE * pipe) -------------------
DISP_ENABLE = 1 << 31
DISP_FORMAT_SHIFT = 26
DISP_FORMAT_MASK = 0xF << 26
DISP_FORMAT_8BPP = 0x2
DISP_FORMAT_BGRX565 = 0x5
DISP_FORMAT_BGRX888 = 0x6
DISP_FORMAT_RGBX101010 = 0x8
DISP_FORMAT_BGRX101010 = 0xA
DISP_FORMAT_RGBX888 = 0xE
DISP_TILED = 1 << 10
DISP_ASYNC_FLIP = 1 << 9
DISP_ADDR_MASK = 0xFFFFF000
DSPOFFSET_A = regs.DSPTILEOFF_A  # HSW+: x/y start for linear and tiled surfaces alike
PLANE_OFFSET_X_MASK = 0x1FFF
PLANE_OFFSET_Y_SHIFT = 16
PLANE_OFFSET_Y_MASK = 0xFFF
PRI_STRIDE_MASK = 0x3FF << 6  # bytes, 64-byte granular
PLANE_STRIDE_ALIGN = 64

# --- sprite plane (SPRCTL = regs.SPRCTL_A + regs.PIPE_STRIDE * pipe) ----------------------
SPRITE_ENABLE = 1 << 31
SPRITE_FORMAT_SHIFT = 25
SPRITE_FORMAT_MASK = 7 << 25
SPRITE_FORMAT_YUV422 = 0
SPRITE_FORMAT_RGBX101010 = 1
SPRITE_FORMAT_RGBX888 = 2
SPRITE_FORMAT_RGBX161616 = 3
SPRITE_FORMAT_YUV444 = 4
SPRITE_RGB_ORDER_RGBX = 1 << 20
SPRITE_TILED = 1 << 10
SPRITE_ASYNC_FLIP = 1 << 9  # what GVT tests on SPRCTL (its PLANE_CTL_ASYNC_FLIP)
SPR_STRIDE_MASK = 0x1FF << 6
SPROFFSET_A = 0x702A4
SPRSCALE_A = 0x70304
SPRITE_SCALE_ENABLE = 1 << 31
SPRITE_SRC_WIDTH_SHIFT = 16  # source width-1 in 26:16, height-1 in 10:0
SPRITE_SRC_SIZE_MASK = 0x7FF
PLANE_POS_X_MASK = 0x1FFF
PLANE_POS_Y_SHIFT = 16
PLANE_POS_Y_MASK = 0xFFF
PLANE_SIZE_W_MASK = 0x1FFF
PLANE_SIZE_H_SHIFT = 16
PLANE_SIZE_H_MASK = 0xFFF

# --- cursor (CURCNTR/CURBASE/CURPOS = regs.CUR*_A + regs.PIPE_STRIDE * pipe, IVB+ layout) --
MCURSOR_MODE_MASK = 0x27
MCURSOR_MODE_DISABLE = 0x00
MCURSOR_MODE_64_32B_AX = 0x07
MCURSOR_MODE_128_ARGB_AX = 0x22
MCURSOR_MODE_256_ARGB_AX = 0x23
MCURSOR_MODE_64_ARGB_AX = 0x27
#: ARGB cursor modes GVT's fb_decoder accepts -> square size in pixels.
CURSOR_MODE_SIZE = {
    MCURSOR_MODE_128_ARGB_AX: 128,
    MCURSOR_MODE_256_ARGB_AX: 256,
    MCURSOR_MODE_64_ARGB_AX: 64,
    MCURSOR_MODE_64_32B_AX: 64,
}
CURSOR_POS_X_MASK = 0x7FFF
CURSOR_POS_X_SIGN = 1 << 15
CURSOR_POS_Y_SHIFT = 16
CURSOR_POS_Y_MASK = 0x7FFF
CURSOR_POS_Y_SIGN = 1 << 31
CURSOR_ADDR_MASK = 0xFFFFF000
PVINFO_CURSOR_X_HOT = regs.VGT_PVINFO_PAGE + regs.PVINFO_CURSOR_X_HOT
PVINFO_CURSOR_Y_HOT = regs.VGT_PVINFO_PAGE + regs.PVINFO_CURSOR_Y_HOT

# --- tiling (BDW, no bit-6 swizzling on gen8) ------------------------------------------
TILE_SIZE = 4096
X_TILE_WIDTH = 512  # bytes
X_TILE_HEIGHT = 8  # rows
Y_TILE_WIDTH = 128  # bytes
Y_TILE_HEIGHT = 32  # rows
Y_TILE_OWORD = 16  # bytes: a Y tile is 8 columns of 16-byte OWords, each column 32 rows tall

# --- MI_DISPLAY_FLIP (GEN8 layout: dword 0 plane select, 1 pitch and tiling, 2 base and type)
MI_FLIP_PLANE_SHIFT = 19
MI_FLIP_PLANE_MASK = 0x7
MI_FLIP_PITCH_SHIFT = 6
MI_FLIP_PITCH_MASK = 0x3FF << MI_FLIP_PITCH_SHIFT  # bytes, 64-byte granular (dword 1)
MI_FLIP_TILED = 1 << 0  # dword 1
MI_FLIP_BASE_MASK = 0xFFFF_F000  # dword 2
MI_FLIP_TYPE_MASK = 0x3  # dword 2
MI_FLIP_SYNC = 0
MI_FLIP_ASYNC = 1
MI_FLIP_STEREO = 2
#: plane select code -> (pipe, True for the primary plane / False for the sprite)
MI_FLIP_PLANES = ((0, True), (1, True), (0, False), (1, False), (2, True), (2, False))

# --- DP AUX channels -----------------------------------------------------------------------
DPA_AUX_CH_CTL = regs.DPA_AUX_CH_CTL  # CPU eDP/DP-A
PCH_DPB_AUX_CH_CTL = regs.PCH_DPB_AUX_CH_CTL  # PCH DP B; C and D at +0x100 each
PCH_DP_AUX_STRIDE = 0x100
AUX_CH_CTL_OFFSETS = (DPA_AUX_CH_CTL, PCH_DPB_AUX_CH_CTL, PCH_DPB_AUX_CH_CTL + 0x100,
                      PCH_DPB_AUX_CH_CTL + 0x200)
AUX_CH_DATA_COUNT = 5  # DATA1..DATA5 at CTL + 4 .. CTL + 0x14
AUX_CH_REG_COUNT = 1 + AUX_CH_DATA_COUNT
DP_AUX_CH_CTL_SEND_BUSY = 1 << 31
DP_AUX_CH_CTL_DONE = 1 << 30
DP_AUX_CH_CTL_INTERRUPT = 1 << 29
DP_AUX_CH_CTL_TIME_OUT_ERROR = 1 << 28
DP_AUX_CH_CTL_RECEIVE_ERROR = 1 << 25
DP_AUX_CH_CTL_MESSAGE_SIZE_SHIFT = 20
DP_AUX_CH_CTL_MESSAGE_SIZE_MASK = 0x1F << 20
#: sticky status bits, cleared by writing 1
DP_AUX_CH_CTL_STICKY = DP_AUX_CH_CTL_DONE | DP_AUX_CH_CTL_TIME_OUT_ERROR | DP_AUX_CH_CTL_RECEIVE_ERROR
DP_AUX_MAX_MESSAGE_BYTES = 4 * AUX_CH_DATA_COUNT  # 20
DP_AUX_MAX_PAYLOAD_BYTES = 16
DP_AUX_HEADER_BYTES = 4  # request|addr[19:16], addr[15:8], addr[7:0], length-1
DP_AUX_ADDRESS_ONLY_BYTES = 3
DP_AUX_ADDRESS_HI_MASK = 0xF  # address bits 19:16 in the low nibble of the first byte
DP_AUX_I2C_OP_MASK = 0x3  # write / read / write-status-update, without MOT
I2C_ADDRESS_MASK = 0x7F

# AUX request codes (drm_dp.h); the request is the high nibble of the first byte
DP_AUX_I2C_WRITE = 0x0
DP_AUX_I2C_READ = 0x1
DP_AUX_I2C_WRITE_STATUS_UPDATE = 0x2
DP_AUX_I2C_MOT = 0x4
DP_AUX_NATIVE_WRITE = 0x8
DP_AUX_NATIVE_READ = 0x9
# reply byte (first byte of the reply): native reply in bits 5:4, I2C reply in bits 7:6
AUX_REPLY_ACK = 0x00
AUX_NATIVE_REPLY_NAK = 0x1 << 4
AUX_NATIVE_REPLY_DEFER = 0x2 << 4
AUX_I2C_REPLY_NAK = 0x1 << 6
AUX_I2C_REPLY_DEFER = 0x2 << 6

# --- DPCD (drm_dp.h addresses; GVT's virtual DP 1.2 sink) -----------------------------------
DPCD_SIZE = 0x700
DP_DPCD_REV = 0x000
DP_MAX_LINK_RATE = 0x001
DP_MAX_LANE_COUNT = 0x002
DP_TRAINING_PATTERN_SET = 0x102
DP_TRAINING_PATTERN_MASK = 0x03
DP_TRAINING_PATTERN_DISABLE = 0
DP_TRAINING_PATTERN_1 = 1
DP_TRAINING_PATTERN_2 = 2
DP_SINK_COUNT = 0x200
DP_LANE0_1_STATUS = 0x202
DP_LANE2_3_STATUS = 0x203
DP_LANE_ALIGN_STATUS_UPDATED = 0x204
DP_SINK_STATUS = 0x205
DP_LANE_CR_DONE = 1 << 0
DP_LANE_CHANNEL_EQ_DONE = 1 << 1
DP_LANE_SYMBOL_LOCKED = 1 << 2
DP_INTERLANE_ALIGN_DONE = 1 << 0
DP_RECEIVE_PORT_0_STATUS = 1 << 0
DP_RECEIVE_PORT_1_STATUS = 1 << 1
DP_SET_POWER = 0x600
DP_LINK_BW_SET = 0x100
DP_LANE_COUNT_SET = 0x101
DP_LINK_BW_1_62 = 0x06  # RBR, the LCPLL 810 MHz link clock
DP_LANE_COUNT_ENHANCED_FRAME_EN = 1 << 7
DP_LINK_SCRAMBLING_DISABLE = 1 << 5
#: GVT's fixed DPCD receiver-capability header: DP 1.2, 5.4 Gbps, 4 lanes + enhanced framing.
DPCD_FIXED_HEADER = bytes([0x12, 0x14, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00])

# --- GMBUS (PCH I2C controller) --------------------------------------------------------------
PCH_GMBUS0 = regs.PCH_GMBUS0  # clock/port select
PCH_GMBUS1 = 0xC5104  # command/status
PCH_GMBUS2 = 0xC5108  # status
PCH_GMBUS3 = 0xC510C  # data buffer bytes 3-0
PCH_GMBUS4 = 0xC5110  # interrupt mask
PCH_GMBUS5 = 0xC5120  # 2-byte index
GMBUS_OFFSETS = (PCH_GMBUS0, PCH_GMBUS1, PCH_GMBUS2, PCH_GMBUS3, PCH_GMBUS4, PCH_GMBUS5)
GMBUS_PIN_MASK = 0x7
GMBUS_PIN_DISABLED = 0
GMBUS_PIN_VGADDC = 2
GMBUS_PIN_DPC = 4
GMBUS_PIN_DPB = 5
GMBUS_PIN_DPD = 6
#: GMBUS pin pair -> display port (GVT's get_port_from_gmbus0 on BDW)
GMBUS_PIN_TO_PORT = {GMBUS_PIN_DPC: regs.PORT_C, GMBUS_PIN_DPB: regs.PORT_B,
                     GMBUS_PIN_DPD: regs.PORT_D}
GMBUS_SW_CLR_INT = 1 << 31
GMBUS_SW_RDY = 1 << 30
GMBUS_ENT = 1 << 29
GMBUS_CYCLE_SHIFT = 25
GMBUS_CYCLE_MASK = 7 << 25
GMBUS_CYCLE_NONE = 0
GMBUS_CYCLE_WAIT = 1
GMBUS_CYCLE_INDEX = 2
GMBUS_CYCLE_STOP = 4
GMBUS_BYTE_COUNT_SHIFT = 16
GMBUS_BYTE_COUNT_MASK = 0x1FF
GMBUS_SLAVE_INDEX_SHIFT = 8
GMBUS_SLAVE_ADDR_SHIFT = 1
GMBUS_SLAVE_READ = 1 << 0
GMBUS_INUSE = 1 << 15
GMBUS_HW_WAIT_PHASE = 1 << 14
GMBUS_STALL_TIMEOUT = 1 << 13
GMBUS_INT = 1 << 12
GMBUS_HW_RDY = 1 << 11
GMBUS_SATOER = 1 << 10
GMBUS_ACTIVE = 1 << 9
GMBUS_BYTE_COUNT_STATUS_MASK = 0x1FF
GMBUS_SLAVE_TIMEOUT_EN = 1 << 4
GMBUS_NAK_EN = 1 << 3
GMBUS_IDLE_EN = 1 << 2
GMBUS_HW_WAIT_EN = 1 << 1
GMBUS_HW_RDY_EN = 1 << 0
GMBUS4_IRQ_EN_MASK = 0x1F
GMBUS_2BYTE_INDEX_EN = 1 << 31

# --- DDC (I2C) --------------------------------------------------------------------------------
DDC_EDID_ADDR = 0x50  # EDID EEPROM (GVT's EDID_ADDR)
EDID_BLOCK_SIZE = 128
#: largest EDID a user may plug: the base block and one extension (CEA-861, DisplayID),
#: all a DDC EEPROM serves through its 8-bit offset without a segment pointer.
EDID_MAX_BLOCKS = 2
DDC_OFFSET_SPACE = 256
EDID_HEADER = bytes([0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00])
EDID_EXTENSION_COUNT = 126

# --- VBT additions (OpRegion; intel_vbt_defs.h) -------------------------------------------
DEVICE_TYPE_DISPLAYPORT_OUTPUT = 1 << 2  # child device_type bit a DP connector has
VBT_HEADER_VBT_SIZE = 24  # u16 in struct vbt_header
VBT_HEADER_BDB_OFFSET = 28  # u32 in struct vbt_header
BDB_HEADER_SIZE_FIELD = 18  # u16 in struct bdb_header
VBT_CHILD_DVO_PORT_BYTE = 16
VBT_CHILD_AUX_CHANNEL_BYTE = 25
BDB_DRIVER_FEATURES = 12
BDB_DRIVER_FEATURES_SIZE = 19  # struct bdb_driver_features, lvds_config = NO_LVDS (all zero)
VBT_CHILD_DP_COMPAT_BYTE = 24
VBT_CHILD_DP_COMPAT = 1 << 1  # hdmi_compat:1, dp_compat:1, tmds_compat:1
VBT_CHILD_INTEGRATED_ENCODER_BYTE = 27
VBT_CHILD_INTEGRATED_ENCODER = 1 << 5  # pipe_cap:2, sdvo_stall:1, hpd_status:2, integrated_encoder:1


def ddi_buf_ctl(port: int) -> int:
    return DDI_BUF_CTL_A + DDI_PORT_STRIDE * port


def port_clk_sel(port: int) -> int:
    return PORT_CLK_SEL_A + 4 * port


def trans_ddi_func_ctl(transcoder: int) -> int:
    return TRANS_DDI_FUNC_CTL_A + regs.PIPE_STRIDE * transcoder


def pipe_reg(offset_a: int, pipe: int) -> int:
    """A per-pipe register of pipe/transcoder ``pipe`` given its pipe A offset."""
    return offset_a + regs.PIPE_STRIDE * pipe
