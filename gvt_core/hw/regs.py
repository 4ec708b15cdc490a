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
PPGTT_DIRTY = 1 << 6
PPGTT_HIGH_BITS = ((1 << 64) - 1) & ~((1 << 46) - 1)  # bits 63:46: kept from the guest entry
# context descriptor (facts 7.1): addressing mode in bits 4:3
GEN8_CTX_ADDRESSING_MODE_SHIFT = 3
GEN8_CTX_ADDRESSING_MODE_MASK = 0x3
ADVANCED_CONTEXT = 0
LEGACY_32B_CONTEXT = 1  # 3-level PPGTT
ADVANCED_AD_CONTEXT = 2
LEGACY_64B_CONTEXT = 3  # 4-level PPGTT
PPGTT_ENTRIES_PER_PAGE = 512
PPGTT_ENTRY_FLAGS = (1 << 12) - 1  # bits 11:0: flag bits kept from a guest entry
PPGTT_DIR_FLAGS = PPGTT_ENTRY_FLAGS & ~(PPGTT_PS | PPGTT_IPS_64K)  # flags of a shadow table pointer
PPGTT_HUGE_FLAGS = (PPGTT_ENTRY_FLAGS & ~PPGTT_IPS_64K) | PPGTT_PAT_HUGE  # flags of a 2M entry
PPGTT_PAT_HUGE_TO_4K_SHIFT = 5  # PAT moves from bit 12 (2M) to bit 7 (4K) on a split
PPGTT_64K_STRIDE = 16  # a 64K entry sits at every 16th PT index and covers 16 4K slots
PPGTT_PTE_SHIFT = 12
PPGTT_PDE_SHIFT = 21
PPGTT_PDPE_SHIFT = 30
PPGTT_PML4E_SHIFT = 39
PPGTT_INDEX_MASK = PPGTT_ENTRIES_PER_PAGE - 1
PPGTT_L3_PDPES = 4  # legacy 32-bit: four PDP root pointers
PPGTT_L3_PDPE_MASK = PPGTT_L3_PDPES - 1
PPGTT_L3_GM_SIZE = 4 * GiB  # 32-bit graphics address space of a 3-level PPGTT
PPGTT_L4_GM_SIZE = 1 << 48  # 48-bit graphics address space of a 4-level PPGTT
PAGE_SIZE_64K = 64 * KiB
PAGE_SIZE_2M = 2 * MiB
PAGE_SIZE_1G = 1 * GiB

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
# what the host i915 programmed into its MSI capability before GVT snapshotted the
# config space (pci_enable_msi runs first): enabled, to the boot CPU, a host vector
HOST_MSI_ADDRESS = 0xFEE0_0000
HOST_MSI_DATA = 0x0025
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
#: the fence registers upstream tracks: MMIO_F(FENCE_REG_GEN6_LO(0), 0x80), 16 fences (facts 0.1 #2)
FENCE_BLOCK_SIZE = 0x80

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
GEN9_GRDOM_GUC = 1 << 5  # honoured on BDW too: gdrst_mmio_write does not check the platform
FORCEWAKE_MT = 0xA188  # BDW multi-threaded forcewake (the GEN9 pairs are SKL+, facts 0.1 #5)
GEN8_RTCR = 0x4260  # TLB invalidation (facts 0.1 #1): RCS
GEN8_M1TCR = 0x4264  # VCS
GEN8_M2TCR = 0x4268  # VCS2
GEN8_BTCR = 0x426C  # BCS
GEN8_VTCR = 0x4270  # VECS
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

# --- device-model core: config space, OpRegion (facts 5.6, 9.6) -----------------------
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
INTEL_GMCH_GGMS_8M = 3  # GGMS value for an 8 MiB GTT (1M 8-byte entries)
HOST_GMCH_GMS = 0x01  # the host's stolen-memory size select (cleared for a vGPU)
SIM_SUBSYSTEM_VENDOR_ID = INTEL_VENDOR_ID
SIM_SUBSYSTEM_ID = 0x2015  # the simulated host board's subsystem id
HOST_IOBAR = 0xF000 | PCI_BASE_ADDRESS_SPACE_IO  # host IOBAR (not exposed to vGPUs)
IOBAR_SIZE = 64


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
# AcrnGT's set_opregion maps the OpRegion at this guest address and writes it to ASLS (facts 9.6)
ACRN_GUEST_OPREGION_GPA = 0xDFFF_D000
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

# --- device-model core, part B: more GEN8 registers (facts 5.4, 6, 7.2, 9.3) -----------------
# Engine ids as the (4.x) kernel numbers them; an engine mask has bit (1 << id).
ENGINE_RCS = 0
ENGINE_BCS = 1
ENGINE_VCS = 2
ENGINE_VCS2 = 3
ENGINE_VECS = 4
ENGINE_IDS = {"rcs": ENGINE_RCS, "bcs": ENGINE_BCS, "vcs": ENGINE_VCS, "vcs2": ENGINE_VCS2,
              "vecs": ENGINE_VECS}
ALL_ENGINES_MASK = 0x1F
# GDRST domain bit -> engine mask bit
GDRST_ENGINE_BITS = {
    GEN6_GRDOM_RENDER: 1 << ENGINE_RCS,
    GEN6_GRDOM_MEDIA: 1 << ENGINE_VCS,
    GEN6_GRDOM_BLT: 1 << ENGINE_BCS,
    GEN6_GRDOM_VECS: 1 << ENGINE_VECS,
    GEN8_GRDOM_MEDIA2: 1 << ENGINE_VCS2,
}

# more per-engine ring registers (offsets relative to the engine's MMIO base)
RING_ACTHD_UDW = 0x5C
RING_ACTHD = 0x74
RING_NOPID = 0x94
RING_HWSTAM = 0x98
RING_MI_MODE = 0x9C
RING_IMR = 0xA8
RING_INSTPM = 0xC0
RING_BBADDR = 0x140
RING_BBADDR_UDW = 0x168
RING_EXECLIST_STATUS_HI = 0x238
RING_CONTEXT_CONTROL = 0x244
RING_TIMESTAMP = 0x358
RING_TIMESTAMP_UDW = 0x35C
RING_CTX_TIMESTAMP = 0x3A8
RING_PDP_COUNT = 4
GEN8_CSB_ENTRIES = 6
CSB_SIZE = GEN8_CSB_ENTRIES * 8
CSB_WRITE_PTR_MASK = 0x7  # bits 2:0, written by the hardware
CSB_READ_PTR_MASK = 0x7 << 8  # bits 10:8, the guest's read pointer
CSB_PTR_RESET = 0x7  # write pointer 7 = "nothing written yet" (facts 7.2)
RING_ADDR_MASK = 0xFFFFF000  # page-aligned GM address in RING_START / HWS_PGA
FENCE_VALID = 1 << 0
FENCE_PAGE_MASK = 0xFFFFF000  # start (low dword) / end (high dword) page address

# masked ("mode") registers: bits 31:16 enable writing bits 15:0
MASKED_WRITE_SHIFT = 16

# global GT registers
GEN8_PRIVATE_PAT_LO = 0x40E0
GEN8_PRIVATE_PAT_HI = 0x40E4
GAM_ECOCHK = 0x4090
GEN8_RING_FAULT_REG = 0x4094
ERROR_GEN6 = 0x40A0
GEN8_FAULT_TLB_DATA0 = 0x4B10
GEN8_FAULT_TLB_DATA1 = 0x4B14
GEN6_RPNSWREQ = 0xA008
GEN6_RP_CONTROL = 0xA024
GEN6_RC_CONTROL = 0xA090
GEN6_RC_STATE = 0xA094
GEN6_GT_THREAD_STATUS_REG = 0x13805C
GEN6_GT_CORE_STATUS = 0x138060
GEN6_PCODE_MAILBOX = 0x138124
GEN6_PCODE_DATA = 0x138128
GEN6_PCODE_DATA1 = 0x13812C
GEN6_PCODE_READY = 1 << 31
GEN6_PCODE_STATUS_MASK = 0xFF  # gen7+: command byte replaced by the completion status
GEN6_RP_STATE_CAP = 0x145998  # MCHBAR mirror: RP0 7:0, RP1 15:8, RPn 23:16 (50 MHz units)
GEN6_RP_STATE_CAP_RESET = (12 << 16) | (18 << 8) | 22  # 600 / 900 / 1100 MHz
GEN6_GT_PERF_STATUS = 0x145948
FORCEWAKE_ACK_HSW = 0x130044  # BDW ack of FORCEWAKE_MT
FPGA_DBG = 0x42300
GEN7_ERR_INT = 0x44040

# interrupt bank register offsets (facts 6.1)
GEN8_GT_BANKS = 4
GEN8_DE_PORT_IMR = GEN8_DE_PORT_ISR + IRQ_IMR
GEN8_PCU_IMR = GEN8_PCU_ISR + IRQ_IMR
SDEIMR = SDEISR + IRQ_IMR
SDEIIR = SDEISR + IRQ_IIR
SDEIER = SDEISR + IRQ_IER
# master IRQ summary bits (facts 6.1)
GEN8_GT_RCS_IRQ = 1 << 0
GEN8_GT_BCS_IRQ = 1 << 1
GEN8_GT_VCS1_IRQ = 1 << 2
GEN8_GT_VCS2_IRQ = 1 << 3
GEN8_GT_PM_IRQ = 1 << 4
GEN8_GT_VECS_IRQ = 1 << 6
GEN8_DE_PIPE_A_IRQ = 1 << 16
GEN8_DE_PORT_IRQ = 1 << 20
GEN8_DE_MISC_IRQ = 1 << 22
GEN8_DE_PCH_IRQ = 1 << 23
GEN8_PCU_IRQ = 1 << 30

# display (facts 9.3, 6.5), pipe/plane A; + PIPE_STRIDE per pipe
NUM_PIPES = 3
HTOTAL_A = 0x60000
HBLANK_A = 0x60004
HSYNC_A = 0x60008
VTOTAL_A = 0x6000C
VBLANK_A = 0x60010
VSYNC_A = 0x60014
PIPE_FRMCOUNT_G4X_A = 0x70040
PIPE_FLIPCOUNT_G4X_A = 0x70044
CURCNTR_A = 0x70080
CURBASE_A = 0x70084
CURPOS_A = 0x70088
DSPLINOFF_A = 0x70184
DSPPOS_A = 0x7018C
DSPTILEOFF_A = 0x701A4
SPRCTL_A = 0x70280
SPRLINOFF_A = 0x70284
SPRSTRIDE_A = 0x70288
SPRPOS_A = 0x7028C
SPRSIZE_A = 0x70290
SPRSURF_A = 0x7029C
SPRSURFLIVE_A = 0x702AC
HSW_PWR_WELL_CTL1 = 0x45400  # BIOS request
HSW_PWR_WELL_CTL2 = 0x45404  # driver request
HSW_PWR_WELL_CTL3 = 0x45408  # KVMR request
HSW_PWR_WELL_CTL4 = 0x4540C  # debug request
HSW_PWR_WELL_ENABLE_REQUEST = 1 << 31
HSW_PWR_WELL_STATE_ENABLED = 1 << 30
LCPLL_CTL = 0x130040
LCPLL_PLL_LOCK = 1 << 30
SFUSE_STRAP = 0xC2014
SFUSE_STRAP_DDIB_DETECTED = 1 << 2
PCH_PORT_HOTPLUG = 0xC4030

# PVINFO page bounds of the guest-writable fields (facts 3.2)
PVINFO_RSV1 = 0x014
PVINFO_HOST_END = 0x060  # [0, 0x60): host-owned fields and rsv1/rsv2
PVINFO_PDP_END = 0x858
#: what a shadow GGTT entry keeps of the guest's: everything but the address (upstream
#: copies the entry and replaces only the address, facts 0.1 #3)
GGTT_PTE_GUEST_FLAGS = ((1 << 64) - 1) & ~GTT_ADDR_MASK

# the gvt-private interrupt lines the device model raises (facts 6.2)
GT_RENDER_USER_INTERRUPT = 1 << 0
GT_RENDER_PIPECTL_NOTIFY = 1 << 4
GT_CONTEXT_SWITCH_INTERRUPT = 1 << 8
GT_FLUSH_DW_NOTIFY = 1 << 4  # MI_FLUSH_DW notify, within a 16-bit engine half of a GT bank
GEN8_PIPE_VBLANK = 1 << 0
GEN8_PIPE_PRIMARY_FLIP_DONE = 1 << 4  # BDW
GEN8_PIPE_SPRITE_FLIP_DONE = 1 << 5  # BDW
GEN8_AUX_CHANNEL_A = 1 << 0
GEN8_PORT_DP_A_HOTPLUG = 1 << 3
GEN8_DE_MISC_GSE = 1 << 0
SDE_GMBUS_CPT = 1 << 17
SDE_CRT_HOTPLUG_CPT = 1 << 19
SDE_PORTB_HOTPLUG_CPT = 1 << 21
SDE_PORTC_HOTPLUG_CPT = 1 << 22
SDE_PORTD_HOTPLUG_CPT = 1 << 23
SDE_AUX_B_CPT = 1 << 25
SDE_AUX_C_CPT = 1 << 26
SDE_AUX_D_CPT = 1 << 27
GEN8_PCU_THERMAL = 1 << 24
GEN8_PCU_MAILBOX = 1 << 25
# display ports (i915 enum port); a BDW vGPU's virtual monitor is on PORT_B (facts 9.1)
PORT_A, PORT_B, PORT_C, PORT_D, PORT_E = range(5)
VGPU_DISPLAY_PORT_BDW = PORT_B

# --- upstream BDW register semantics (handlers.c, intel_gt_regs.h, i915_reg.h) ----------------
# engine registers at base + offset
RING_EXCC = 0x28
RING_SYNC_0 = 0x40
RING_SYNC_1 = 0x44
RING_INSTDONE = 0x6C
RING_RESET_CTL = 0xD0
RING_CCID = 0x180
RING_ECOSKPD = 0x1D0
RESET_CTL_REQUEST_RESET = 1 << 0
RESET_CTL_READY_TO_RESET = 1 << 1
GFX_MODE_LEGACY_BIT = 1 << 1  # RING_MODE bit 1: enabling it sends the vGPU to failsafe
RING_FORCE_TO_NONPRIV = 0x24D0  # RCS: 12 slots, one register offset each
RING_FORCE_TO_NONPRIV_SLOTS = 12
RING_FORCE_TO_NONPRIV_ADDRESS_MASK = 0x03FF_FFFC  # bits 25:2
RING_FORCE_TO_NONPRIV_END = RING_FORCE_TO_NONPRIV + 4 * RING_FORCE_TO_NONPRIV_SLOTS

# --- registers the command scanner treats specially (facts 8.4) ------------------------------
DERRMR = 0x44050  # display error reporting mask: only BCS may name it in an LRI
PS_DEPTH_COUNT = 0x2350  # what a PIPE_CONTROL depth-count post-sync reads (RCS)
GEN9_GFX_MOCS_BASE = 0xC800  # per-engine MOCS tables (i915 names them GEN9_*_MOCS) ...
GEN9_GFX_MOCS_LAST = 0xCFF8  # ... through this dword (inclusive)
GEN9_LNCFCMOCS_BASE = 0xB020  # L3 MOCS ...
GEN9_LNCFCMOCS_LAST = 0xB0A0  # ... inclusive
#: bits 22:18 of an LRI/LRM/LRR register dword: BDW refuses them on non-render engines.
BDW_REG_INHIBIT_MASK = 0x007C_0000
TIMESTAMP_FREQUENCY_HZ = 12_500_000  # gen6-8 command-streamer timestamp (80 ns ticks)
GEN7_SC_INSTDONE = 0x7100

# fuses a BDW GT2 reports (intel_sseu.c bdw_sseu_info_init; gt/intel_gt_regs.h)
GEN8_FUSE2 = 0x9120
GEN8_F2_SS_DIS_SHIFT = 21
GEN8_F2_SS_DIS_MASK = 0x7 << GEN8_F2_SS_DIS_SHIFT
GEN8_F2_S_ENA_SHIFT = 25
GEN8_F2_S_ENA_MASK = 0x7 << GEN8_F2_S_ENA_SHIFT
GEN8_EU_DISABLE0 = 0x9134
GEN8_EU_DISABLE1 = 0x9138
GEN8_EU_DISABLE2 = 0x913C
BDW_GT2_SLICE_MASK = 0x1  # one slice, three subslices of eight EUs: 24 EUs
BDW_MAX_SUBSLICES = 3
BDW_MAX_EUS_PER_SUBSLICE = 8
FUSE_STRAP = 0x42014
SFUSE_STRAP_FUSE_LOCK = 1 << 13
SFUSE_STRAP_DISPLAY_DISABLED = 1 << 7
SFUSE_STRAP_DDIC_DETECTED = 1 << 1
SFUSE_STRAP_DDID_DETECTED = 1 << 0

# PCODE mailbox
GEN6_PCODE_ERROR_MASK = 0xFF
GEN6_PCODE_COMMAND_MASK = 0xFF
GEN6_PCODE_READ_RC6VIDS = 0x5

# forcewake
FORCEWAKE = 0xA18C
FORCEWAKE_ACK = 0x130090

# ring HWS_PGA of the gen7 layout upstream keeps tracking
BSD_HWS_PGA_GEN7 = 0x4180
BLT_HWS_PGA_GEN7 = 0x4280
VEBOX_HWS_PGA_GEN7 = 0x4380
GM_ADDR_MASK_PAGE = 0xFFFF_F000  # MMIO_GM: page-aligned graphics address
GM_ADDR_MASK_RING = 0xFFFF_0000  # MMIO_RING_GM: ring start, batch buffer, HWS

# misc GT
GEN8_GAMW_ECO_DEV_RW_IA = 0x4080
GAMW_ECO_ENABLE_64K_IPS_FIELD = 0xF
GEN6_MBCTL = 0x907C
GEN6_MBCTL_ENABLE_BOOT_FETCH = 1 << 4
GUC_STATUS = 0xC000
GS_MIA_IN_RESET = 1 << 0
FPGA_DBG_RM_NOCLAIM = 1 << 31
EDP_PSR_IMR = 0x64834
EDP_PSR_IIR = 0x64838
CPU_VGACNTRL = 0x41000
VGA_DISP_DISABLE = 1 << 31
MCHBAR_MIRROR_BASE_SNB = 0x140000
MCHBAR_MIRROR_SIZE = 0x40000
#: an MMIO record this large or larger is a block (upstream's gvt_mmio_block)
MMIO_BLOCK_MIN_SIZE = 1024

# display: transcoders, planes, flips (i915_reg.h)
TRANSCODER_EDP_OFFSET = 0x7F000  # TRANSCONF(EDP) = 0x7F008
PIPECONF_EDP = 0x7F008
PLANE_CTL_ASYNC_FLIP = 1 << 9  # DSPCNTR / SPRCTL
REG_50080_PRIMARY = (0x50080, 0x50088, 0x5008C)  # per pipe
REG_50080_SPRITE = (0x50090, 0x50098, 0x5009C)
REG50080_FLIP_TYPE_MASK = 0x3
REG50080_FLIP_TYPE_ASYNC = 0x1
SPRCTL_A_OFFSET = 0x70280

# display: PCH transcoders and FDI
PCH_TRANSACONF = 0xF0008
PCH_TRANSBCONF = 0xF1008
TRANS_ENABLE = 1 << 31
TRANS_STATE_ENABLE = 1 << 30
FDI_RXA_CTL = 0xF000C
FDI_RXA_IIR = 0xF0014
FDI_RXA_IMR = 0xF0018
FDI_TXA_CTL = 0x60100
FDI_PIPE_STRIDE = 0x1000
FDI_RX_ENABLE = 1 << 31
FDI_TX_ENABLE = 1 << 31
FDI_AUTO_TRAINING = 1 << 10
FDI_LINK_TRAIN_PATTERN_1 = 0 << 28
FDI_LINK_TRAIN_PATTERN_2 = 1 << 28
FDI_LINK_TRAIN_PATTERN_1_CPT = 0 << 8
FDI_LINK_TRAIN_PATTERN_2_CPT = 1 << 8
FDI_RX_BIT_LOCK = 1 << 8
FDI_RX_SYMBOL_LOCK = 1 << 9

# display: DDI ports (A..E at +0x100 each)
DDI_BUF_CTL_A = 0x64000
DP_TP_CTL_A = 0x64040
DP_TP_STATUS_A = 0x64044
DDI_PORT_STRIDE = 0x100
DDI_BUF_CTL_ENABLE = 1 << 31
DDI_BUF_IS_IDLE = 1 << 7
DDI_INIT_DISPLAY_DETECTED = 1 << 0
DP_TP_CTL_ENABLE = 1 << 31
DP_TP_CTL_FDI_AUTOTRAIN = 1 << 15
DP_TP_CTL_LINK_TRAIN_SHIFT = 8
DP_TP_CTL_LINK_TRAIN_MASK = 0x7 << DP_TP_CTL_LINK_TRAIN_SHIFT
DP_TP_CTL_LINK_TRAIN_IDLE = 0x2
DP_TP_STATUS_IDLE_DONE = 1 << 25
DP_TP_STATUS_AUTOTRAIN_DONE = 1 << 12
DP_TP_STATUS_STICKY = (0x3 << 26) | (1 << 24)  # write-1-to-clear bits

# display: panel power, CRT, PLLs, sideband
PCH_PP_STATUS = 0xC7200
PCH_PP_CONTROL = 0xC7204
PANEL_POWER_ON = 1 << 0
PP_ON = 1 << 31
PP_SEQUENCE_POWER_DOWN = 2 << 28
PP_CYCLE_DELAY_ACTIVE = 1 << 27
PP_SEQUENCE_STATE_ON_IDLE = 0x8
PCH_ADPA = 0xE1100
ADPA_CRT_HOTPLUG_FORCE_TRIGGER = 1 << 16
ADPA_CRT_HOTPLUG_MONITOR_MASK = 0x3 << 24
LCPLL_PLL_DISABLE = 1 << 31
LCPLL_CD_SOURCE_FCLK = 1 << 21
LCPLL_CD_SOURCE_FCLK_DONE = 1 << 19
SOUTH_CHICKEN2 = 0xC2004
FDI_MPHY_IOSFSB_RESET_CTL = 1 << 12
FDI_MPHY_IOSFSB_RESET_STATUS = 1 << 13
SBI_ADDR = 0xC6000
SBI_DATA = 0xC6004
SBI_CTL_STAT = 0xC6008
SBI_STAT_MASK = 0x1  # busy
SBI_RESPONSE_SHIFT = 1
SBI_RESPONSE_MASK = 0x3
SBI_OPCODE_SHIFT = 8
SBI_OPCODE_MASK = 0xFF << SBI_OPCODE_SHIFT
SBI_CMD_CRRD = 6
SBI_CMD_CRWR = 7
SBI_ADDR_OFFSET_SHIFT = 16
SBI_ADDR_OFFSET_MASK = 0xFFFF << SBI_ADDR_OFFSET_SHIFT
SBI_REG_MAX = 20  # sideband registers a vGPU may cache (display.h)
#: what the PHY status registers read (handlers.c dpy_reg_mmio_read)
DPY_REG_READ_VALUES = {
    0xE651C: 1 << 17, 0xE661C: 1 << 17, 0xE671C: 1 << 17, 0xE681C: 1 << 17,
    0xE6C04: 0x3, 0xE6E1C: 0x2F << 16,
}
# PCH hotplug status bits (read-only to the guest upstream)
PORTA_HOTPLUG_STATUS_MASK = 0x3 << 24
PORTB_HOTPLUG_STATUS_MASK = 0x3 << 0
PORTC_HOTPLUG_STATUS_MASK = 0x3 << 8
PORTD_HOTPLUG_STATUS_MASK = 0x3 << 16
# DP AUX channel (transactions belong to the display subsystem)
DPA_AUX_CH_CTL = 0x64010
PCH_DPB_AUX_CH_CTL = 0xE4110
PCH_DPC_AUX_CH_CTL = 0xE4210
PCH_DPD_AUX_CH_CTL = 0xE4310
PCH_GMBUS0 = 0xC5100
PCH_GPIO_BASE = 0xC5010
