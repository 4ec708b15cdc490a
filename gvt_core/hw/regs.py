"""Register offsets, bit fields and sizes of the GEN8 (Broadwell) GPU, in one place.

Each constant carries the name the hardware documentation and i915/GVT use.
Sources: ``../shared/design/gvt-facts.md`` (sections named per block).
"""

from __future__ import annotations

# --- sizes and layout (facts 1.9, 4.1, 5.5) ---------------------------------
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

GTT_PAGE_SHIFT = 12
GTT_PAGE_SIZE = 1 << GTT_PAGE_SHIFT

BAR0_SIZE = 16 * MiB  # GTTMMADR
MMIO_SIZE = 2 * MiB  # register range at BAR0 + 0
GTT_START_OFFSET = 8 * MiB  # GGTT PTEs at BAR0 + 8 MiB
GTT_ENTRY_SIZE = 8
GTT_ENTRY_SHIFT = 3
GGTT_ENTRIES = (BAR0_SIZE - GTT_START_OFFSET) // GTT_ENTRY_SIZE  # 1,048,576
GM_TOTAL = GGTT_ENTRIES << GTT_PAGE_SHIFT  # 4 GiB of graphics memory
CFG_SPACE_SIZE = 4096  # PCI express config space
MAX_SURFACE_SIZE = 36 * MiB
DEFAULT_APERTURE_SIZE = 1 * GiB  # (1 GiB - 128 MiB host) / 64 MiB and (3 GiB - 384 MiB) / 384 MiB: 7 of _8

# --- vGPU limits (facts 2.1, 2.2, 11) ---------------------------------------------
GVT_MAX_VGPU = 8  # ids 0..7, 0 = idle vGPU
VGPU_MAX_WEIGHT = 16
HOST_LOW_GM_SIZE = 128 * MiB
HOST_HIGH_GM_SIZE = 384 * MiB
HOST_FENCE = 4
MAX_NUM_FENCES = 32  # INTEL_GVT_MAX_NUM_FENCES

# --- GGTT PTE (facts 4.2) ------------------------------------------------------------
GEN8_PAGE_PRESENT = 1 << 0
GEN8_PAGE_RW = 1 << 1
GTT_ADDR_MASK = ((1 << 46) - 1) & ~((1 << 12) - 1)  # bits 45:12

# --- PPGTT entries (facts 4.3) --------------------------------------------------------
PPGTT_PRESENT = 1 << 0
PPGTT_RW = 1 << 1
PPGTT_PWT = 1 << 3
PPGTT_PCD = 1 << 4
PPGTT_PS = 1 << 7  # PDE: 2 MiB page; PDPE: 1 GiB page; PTE: PAT bit
PPGTT_IPS_64K = 1 << 11  # PDE: the PT below uses 64 KiB pages
PPGTT_PAT_HUGE = 1 << 12  # PAT bit of 2M/1G entries
ADDR_MASK_4K = GTT_ADDR_MASK
ADDR_MASK_64K = ((1 << 46) - 1) & ~((1 << 16) - 1)
ADDR_MASK_2M = ((1 << 46) - 1) & ~((1 << 21) - 1)
ADDR_MASK_1G = ((1 << 46) - 1) & ~((1 << 30) - 1)
GVT_SHADOW_64K_SPLIT = 1 << 52  # GVT-private flag in shadow entries
PPGTT_ENTRIES_PER_PAGE = 512

# --- PCI config space (facts 5.5, 5.6) --------------------------------------------------
PCI_VENDOR_ID = 0x00
PCI_DEVICE_ID = 0x02
PCI_COMMAND = 0x04
PCI_STATUS = 0x06
PCI_REVISION_ID = 0x08
PCI_CLASS_PROG = 0x09
PCI_CLASS_DEVICE = 0x0A
PCI_HEADER_TYPE = 0x0E
PCI_BASE_ADDRESS_0 = 0x10  # GTTMMADR, 64-bit
PCI_BASE_ADDRESS_1 = 0x14
PCI_BASE_ADDRESS_2 = 0x18  # GMADR (aperture), 64-bit prefetchable
PCI_BASE_ADDRESS_3 = 0x1C
PCI_BASE_ADDRESS_4 = 0x20  # IOBAR
PCI_BASE_ADDRESS_5 = 0x24
PCI_SUBSYSTEM_VENDOR_ID = 0x2C
PCI_SUBSYSTEM_ID = 0x2E
PCI_ROM_ADDRESS = 0x30
PCI_CAPABILITY_LIST = 0x34
PCI_INTERRUPT_LINE = 0x3C
PCI_INTERRUPT_PIN = 0x3D
INTEL_GMCH_CTRL = 0x50  # u16: GGMS bits 7:6, graphics mode select bits 15:8
INTEL_GMCH_GMS_MASK = 0xFF00
INTEL_GMCH_GGMS_SHIFT = 6
INTEL_GMCH_GGMS_MASK = 0x3
PCI_SWSCI = 0xE8
SWSCI_SCI_SELECT = 1 << 15
SWSCI_SCI_TRIGGER = 1 << 0
PCI_ASLS = 0xFC  # OpRegion base

PCI_COMMAND_IO = 1 << 0
PCI_COMMAND_MEMORY = 1 << 1
PCI_COMMAND_MASTER = 1 << 2
PCI_STATUS_CAP_LIST = 1 << 4

PCI_BASE_ADDRESS_SPACE_IO = 0x1
PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4
PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8
PCI_BASE_ADDRESS_MEM_MASK = ~0xF

PCI_CAP_ID_MSI = 0x05
PCI_CAP_ID_PM = 0x01
PCI_MSI_FLAGS = 2  # control word, relative to the capability
PCI_MSI_ADDRESS_LO = 4
PCI_MSI_DATA_32 = 8
PCI_MSI_FLAGS_ENABLE = 1 << 0
PCI_MSI_FLAGS_64BIT = 1 << 7

INTEL_VENDOR_ID = 0x8086
BDW_GT2_DEVICE_ID = 0x1616  # Broadwell GT2 (ULT), a common GVT-g host part
BDW_REVISION_ID = 0x09
PCI_CLASS_DISPLAY_VGA = 0x0300
MSI_CAP_OFFSET = 0x90  # the IGD's MSI capability, as on Broadwell
PM_CAP_OFFSET = 0xD0

# --- PVINFO page (facts 3) ------------------------------------------------------------
VGT_PVINFO_PAGE = 0x78000
VGT_PVINFO_SIZE = 0x1000
VGT_MAGIC = 0x4776544776544776  # "vGTvGTvG"
VGT_VERSION_MAJOR = 1
VGT_VERSION_MINOR = 0

PVINFO_MAGIC = 0x000
PVINFO_VERSION_MAJOR = 0x008
PVINFO_VERSION_MINOR = 0x00A
PVINFO_VGT_ID = 0x00C
PVINFO_VGT_CAPS = 0x010
PVINFO_AVAIL_RS_MAPPABLE_BASE = 0x040
PVINFO_AVAIL_RS_MAPPABLE_SIZE = 0x044
PVINFO_AVAIL_RS_NONMAPPABLE_BASE = 0x048
PVINFO_AVAIL_RS_NONMAPPABLE_SIZE = 0x04C
PVINFO_AVAIL_RS_FENCE_NUM = 0x050
PVINFO_DISPLAY_READY = 0x804
PVINFO_RSV5 = 0x808  # 4 dwords; a guest write = resource shortage -> failsafe
PVINFO_RSV5_END = 0x818
PVINFO_G2V_NOTIFY = 0x818
PVINFO_CURSOR_X_HOT = 0x830
PVINFO_CURSOR_Y_HOT = 0x834
PVINFO_PDP0_LO = 0x838  # pdp[i].lo at 0x838 + 8*i, .hi at +4
PVINFO_EXECLIST_CTX_DESC_LO = 0x858
PVINFO_EXECLIST_CTX_DESC_HI = 0x85C

VGT_CAPS_FULL_PPGTT = 1 << 2
VGT_CAPS_HWSP_EMULATION = 1 << 3
VGT_CAPS_HUGE_GTT = 1 << 4

VGT_G2V_PPGTT_L3_PAGE_TABLE_CREATE = 2
VGT_G2V_PPGTT_L3_PAGE_TABLE_DESTROY = 3
VGT_G2V_PPGTT_L4_PAGE_TABLE_CREATE = 4
VGT_G2V_PPGTT_L4_PAGE_TABLE_DESTROY = 5
VGT_G2V_EXECLIST_CONTEXT_CREATE = 6
VGT_G2V_EXECLIST_CONTEXT_DESTROY = 7
VGT_G2V_MAX = 8

# --- fences (facts 2.2) ----------------------------------------------------------------
FENCE_REG_GEN6_LO = 0x100000  # fence i at + 8*i; high dword at +4
FENCE_REG_GEN6_END = FENCE_REG_GEN6_LO + MAX_NUM_FENCES * 8

# --- engines (facts 5.4) -------------------------------------------------------------------
RENDER_RING_BASE = 0x02000
GEN6_BSD_RING_BASE = 0x12000
GEN8_BSD2_RING_BASE = 0x1C000
VEBOX_RING_BASE = 0x1A000
BLT_RING_BASE = 0x22000
ENGINE_BASES = {
    "rcs": RENDER_RING_BASE,
    "vcs": GEN6_BSD_RING_BASE,
    "vcs2": GEN8_BSD2_RING_BASE,
    "vecs": VEBOX_RING_BASE,
    "bcs": BLT_RING_BASE,
}
RING_TAIL = 0x30
RING_HEAD = 0x34
RING_START = 0x38
RING_CTL = 0x3C
RING_HWS_PGA = 0x80
RING_PDP_BASE = 0x270  # PDP n lower dword at +0x270 + 8n, upper at +4
RING_MODE_GEN7 = 0x29C
RING_ELSP = 0x230
RING_EXECLIST_STATUS = 0x234
RING_CONTEXT_STATUS_BUF = 0x370
RING_CONTEXT_STATUS_PTR = 0x3A0
GFX_RUN_LIST_ENABLE = 1 << 15  # RING_MODE bit: execlist mode
GFX_PPGTT_ENABLE = 1 << 9
GFX_REPLAY_MODE = 1 << 11

# --- misc GT registers (facts 5.4) -------------------------------------------------------------
GEN6_GDRST = 0x941C
GEN6_GRDOM_FULL = 1 << 0
GEN6_GRDOM_RENDER = 1 << 1
GEN6_GRDOM_MEDIA = 1 << 2
GEN6_GRDOM_BLT = 1 << 3
GEN6_GRDOM_VECS = 1 << 4
GEN8_GRDOM_MEDIA2 = 1 << 7
FORCEWAKE_RENDER_GEN9 = 0xA278
FORCEWAKE_ACK_RENDER_GEN9 = 0x0D84
FORCEWAKE_BLITTER_GEN9 = 0xA188
FORCEWAKE_ACK_BLITTER_GEN9 = 0x130044
FORCEWAKE_MEDIA_GEN9 = 0xA270
FORCEWAKE_ACK_MEDIA_GEN9 = 0x0D88
FORCEWAKE_MT = 0xA188
GEN8_RTCR = 0x4260  # TLB invalidation: RCS
GEN8_BTCR = 0x4264
GEN8_M1TCR = 0x4268
GEN8_M2TCR = 0x426C
GEN8_VTCR = 0x4270
GFX_FLSH_CNTL_GEN6 = 0x101008
GFX_FLSH_CNTL_EN = 1 << 0

# --- interrupts (facts 6.1) -----------------------------------------------------------------
GEN8_MASTER_IRQ = 0x44200
GEN8_MASTER_IRQ_CONTROL = 1 << 31
GEN8_GT_ISR_BASE = 0x44300  # bank n: ISR/IMR/IIR/IER at +0x10*n + 0/4/8/C
GEN8_DE_PIPE_ISR_BASE = 0x44400
GEN8_DE_PORT_ISR = 0x44440
GEN8_DE_MISC_ISR = 0x44460
GEN8_PCU_ISR = 0x444E0
SDEISR = 0xC4000
IRQ_ISR, IRQ_IMR, IRQ_IIR, IRQ_IER = 0x0, 0x4, 0x8, 0xC

# --- display (facts 9.3) ---------------------------------------------------------------------
PIPECONF_A = 0x70008
PIPECONF_ENABLE = 1 << 31
PIPECONF_STATE = 1 << 30
DSPCNTR_A = 0x70180
DSPSTRIDE_A = 0x70188
DSPSIZE_A = 0x70190
DSPSURF_A = 0x7019C
DSPSURFLIVE_A = 0x701AC
PIPESRC_A = 0x6001C
PIPE_STRIDE = 0x1000

# --- device-model core: config space, engines mask, OpRegion (facts 5.6, 7.7, 9.6) ----
PCI_CACHE_LINE_SIZE = 0x0C
PCI_LATENCY_TIMER = 0x0D
PCI_BIST = 0x0F
PCI_HEADER_TYPE_NORMAL = 0x00
PCI_COMMAND_WRITABLE = 0x07FF  # low byte 0xFF, high byte 0x07
PCI_STATUS_RW1C_HIGH = 0xF9  # RW1C bits of the STATUS high byte
PCI_INTERRUPT_PIN_INTA = 0x01
PCI_PM_PMC = 2  # PM capabilities word, relative to the capability
PCI_PM_CTRL = 4  # PMCSR, relative to the capability
PCI_PM_CTRL_STATE_MASK = 0x0003  # D0..D3hot
PCI_PM_PMC_VERSION_1_1 = 0x0002
PCI_PM_PMC_DSI = 1 << 5
PCI_MSI_ADDRESS_LO_MASK = 0xFFFF_FFFC  # bits 1:0 are reserved (read-only 0)
PCI_MSI_DATA_MASK = 0xFFFF
PCI_SWSCI_WRITABLE = SWSCI_SCI_SELECT | SWSCI_SCI_TRIGGER
INTEL_GMCH_GGMS_8M = 3  # GGMS value for an 8 MiB GTT (1M 8-byte entries)
HOST_GMCH_GMS = 0x01  # the host's stolen-memory size select (cleared for a vGPU)
SIM_SUBSYSTEM_VENDOR_ID = INTEL_VENDOR_ID
SIM_SUBSYSTEM_ID = 0x2015  # the simulated host board's subsystem id
HOST_IOBAR = 0xF000 | PCI_BASE_ADDRESS_SPACE_IO  # host IOBAR (not exposed to vGPUs)
IOBAR_SIZE = 64

# engine bits of a reset mask (the kernel's intel_engine_mask_t order)
ENGINE_IDS = {"rcs": 0, "bcs": 1, "vcs": 2, "vcs2": 3, "vecs": 4}
ALL_ENGINES = (1 << len(ENGINE_IDS)) - 1

# OpRegion (facts 9.6); offsets within the 8 KiB region
OPREGION_PAGES = 2
OPREGION_SIZE = OPREGION_PAGES * 4096
OPREGION_SIGNATURE = b"IntelGraphicsMem"
OPREGION_HEADER_SIZE = 0x10  # u32: region size in KiB
OPREGION_HEADER_VERSION = 0x14  # u32
OPREGION_VERSION_2_0 = 0x0200_0000
OPREGION_HEADER_MBOX = 0x58  # u32: supported mailboxes
OPREGION_MBOX_VBT = 1 << 3
OPREGION_CLID = 0x1AC  # lid state
OPREGION_CLID_OPEN = 0x3
OPREGION_SCIC = 0x200  # SWSCI mailbox: command/status
OPREGION_PARM = 0x204  # SWSCI mailbox: parameter
OPREGION_VBT = 0x400
OPREGION_VBT_MAX = 0x1800  # the VBT mailbox is 6 KiB
# SCIC layout (i915's swsci(); the function numbers are unverified, facts 12)
SWSCI_SCIC_INDICATOR = 1 << 0
SWSCI_SCIC_MAIN_FUNCTION_SHIFT = 1
SWSCI_SCIC_MAIN_FUNCTION_MASK = 0xF << 1
SWSCI_SCIC_SUB_FUNCTION_SHIFT = 8
SWSCI_SCIC_SUB_FUNCTION_MASK = 0xFF << 8
SWSCI_SCIC_EXIT_STATUS_SHIFT = 5
SWSCI_SCIC_EXIT_STATUS_MASK = 0x7 << 5
SWSCI_SCIC_EXIT_STATUS_SUCCESS = 1
SWSCI_SCIC_EXIT_STATUS_FAILURE = 0  # "failure, generic, unsupported or unknown cause"
SWSCI_GBDA = 4  # Get BIOS Data
SWSCI_SBCB = 6  # System BIOS Callbacks
SWSCI_SUB_SUPPORTED_CALLS = 0  # GBDA "supported calls" / SBCB "supported callbacks"
SWSCI_SUB_REQUESTED_CALLBACKS = 1  # GBDA "requested callbacks"
# VBT (facts 9.6; child-device field positions from i915's intel_vbt_defs.h, not re-read)
VBT_SIGNATURE = b"$VBT"
VBT_VERSION = 155
BDB_SIGNATURE = b"BIOS_DATA_BLOCK"
BDB_VERSION = 186
BDB_GENERAL_FEATURES = 1
BDB_GENERAL_DEFINITIONS = 2
VBT_CHILD_DEVICE_SIZE = 33
VBT_NUM_CHILDREN = 4
DEVICE_TYPE_DP = 0x68C6
DEVICE_HANDLE_EFP = (0x0004, 0x0040, 0x0020, 0x0010)  # EFP1..EFP4
DVO_PORT_DP = (10, 7, 8, 9)  # DVO_PORT_DPA..DPD
DP_AUX_CHANNEL = (0x40, 0x10, 0x20, 0x30)  # DP_AUX_A..D
