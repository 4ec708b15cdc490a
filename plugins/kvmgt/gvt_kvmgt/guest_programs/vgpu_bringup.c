/*
 * A freestanding guest program for the kvmgt VMM: brings up a vGPU the way a
 * guest i915 would, with every access a real instruction.
 *
 * Loaded flat at LOAD_ADDR in guest RAM and entered in 64-bit mode on the
 * VMM's page tables (identity map) with interrupts off; the VMM's IDT records
 * taken vectors in the per-vCPU mailbox at the GS base. Progress goes to
 * STEP_PORT, failure (the failing step) to FAIL_PORT, success to DONE_PORT.
 * What it learned goes to the result block at RESULT_ADDR.
 *
 * Compile-time parameters (-D): LOAD_ADDR, RESULT_ADDR, WORK_ADDR, BAR0,
 * STEP_PORT, FAIL_PORT, DONE_PORT, MSI_VECTOR, GGTT_ENTRIES, plus the
 * register offsets named below (from gvt_core.hw.regs).
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" :: "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u16 inw(u16 port) { u16 v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u64 gs_read(u32 off) { u64 v; __asm__ volatile("movq %%gs:(%1), %0" : "=r"(v) : "r"((u64)off)); return v; }

#define CFG(bdf, off) (0x80000000u | ((u32)(bdf) << 8) | ((off) & 0xFC))
#define VGPU_BDF (2u << 3)
#define OTHER_BDF (3u << 3)

static u32 cfg_read32(u32 bdf, u32 off) { outl(0xCF8, CFG(bdf, off)); return inl(0xCFC); }
static u16 cfg_read16(u32 bdf, u32 off) { outl(0xCF8, CFG(bdf, off)); return inw(0xCFC + (off & 2)); }
static u8 cfg_read8(u32 bdf, u32 off) { outl(0xCF8, CFG(bdf, off)); return inb(0xCFC + (off & 3)); }
static void cfg_write32(u32 bdf, u32 off, u32 v) { outl(0xCF8, CFG(bdf, off)); outl(0xCFC, v); }
static void cfg_write16(u32 bdf, u32 off, u16 v) { outl(0xCF8, CFG(bdf, off)); outw(0xCFC + (off & 2), v); }

static volatile u64 *mmio64(u64 off) { return (volatile u64 *)(BAR0 + off); }
static volatile u32 *mmio32(u64 off) { return (volatile u32 *)(BAR0 + off); }
static volatile u16 *mmio16(u64 off) { return (volatile u16 *)(BAR0 + off); }

struct result {
    u64 magic_seen;
    u64 mappable_base, mappable_size, nonmappable_base, nonmappable_size;
    u64 ggtt_first_index, ggtt_count;
    u64 ggtt_pages[GGTT_ENTRIES];
    u64 pml4;
    u64 data_pages[8];
    u64 msi_vector;
};

#define FAIL(step) do { outl(FAIL_PORT, (step)); for (;;) __asm__ volatile("cli; hlt"); } while (0)
#define STEP(step) outl(STEP_PORT, (step))

static u64 next_page = WORK_ADDR;
static u64 alloc_page(void) {
    u64 p = next_page;
    next_page += 4096;
    volatile u64 *q = (volatile u64 *)p;
    for (int i = 0; i < 512; i++) q[i] = 0;
    return p;
}

#define PTE_P 1ull
#define PTE_RW 2ull

__attribute__((section(".text.start"), noreturn)) void _start(void) {
    struct result *r = (struct result *)RESULT_ADDR;

    STEP(1); /* probe 00:02.0 */
    if ((cfg_read32(VGPU_BDF, 0) & 0xFFFF) != 0x8086) FAIL(1);
    if ((cfg_read32(VGPU_BDF, 0x08) >> 24) != 0x03) FAIL(1);
    STEP(2); /* an absent function reads all ones */
    if (cfg_read32(OTHER_BDF, 0) != 0xFFFFFFFFu) FAIL(2);

    STEP(3); /* place BAR0 (64-bit memory BAR) and read it back */
    u32 low_bits = cfg_read32(VGPU_BDF, 0x10) & 0xF;
    cfg_write32(VGPU_BDF, 0x10, (u32)(BAR0 & 0xFFFFFFF0u) | low_bits);
    cfg_write32(VGPU_BDF, 0x14, (u32)((u64)BAR0 >> 32));
    if ((cfg_read32(VGPU_BDF, 0x10) & ~0xFu) != (u32)(BAR0 & 0xFFFFFFF0u)) FAIL(3);

    STEP(4); /* memory decoding and bus mastering on */
    cfg_write16(VGPU_BDF, 0x04, cfg_read16(VGPU_BDF, 0x04) | 0x6);

    STEP(5); /* PVINFO magic */
    u64 magic = *mmio64(VGT_PVINFO_PAGE + PVINFO_MAGIC);
    r->magic_seen = magic;
    if (magic != VGT_MAGIC) FAIL(5);
    STEP(6);
    if (*mmio16(VGT_PVINFO_PAGE + PVINFO_VERSION_MAJOR) < 1) FAIL(6);

    STEP(7); /* ballooning: the ranges this vGPU owns */
    r->mappable_base = *mmio32(VGT_PVINFO_PAGE + PVINFO_AVAIL_RS_MAPPABLE_BASE);
    r->mappable_size = *mmio32(VGT_PVINFO_PAGE + PVINFO_AVAIL_RS_MAPPABLE_SIZE);
    r->nonmappable_base = *mmio32(VGT_PVINFO_PAGE + PVINFO_AVAIL_RS_NONMAPPABLE_BASE);
    r->nonmappable_size = *mmio32(VGT_PVINFO_PAGE + PVINFO_AVAIL_RS_NONMAPPABLE_SIZE);
    if (!r->mappable_size || !r->nonmappable_size || (r->mappable_base & 0xFFF)) FAIL(7);

    STEP(8); /* GGTT entries inside the mappable range: write, read back */
    r->ggtt_first_index = r->mappable_base >> 12;
    r->ggtt_count = GGTT_ENTRIES;
    for (u64 i = 0; i < GGTT_ENTRIES; i++) {
        u64 page = alloc_page();
        ((volatile u64 *)page)[0] = 0x6767000000000000ull | i;
        r->ggtt_pages[i] = page;
        *mmio64(GTT_START_OFFSET + (r->ggtt_first_index + i) * 8) = page | PTE_P;
    }
    for (u64 i = 0; i < GGTT_ENTRIES; i++)
        if (*mmio64(GTT_START_OFFSET + (r->ggtt_first_index + i) * 8) != (r->ggtt_pages[i] | PTE_P)) FAIL(8);

    STEP(9); /* a 4-level PPGTT in guest memory: gma 0..4 pages -> data pages */
    u64 pml4 = alloc_page(), pdp = alloc_page(), pd = alloc_page(), pt = alloc_page();
    for (int i = 0; i < 8; i++) r->data_pages[i] = alloc_page();
    ((volatile u64 *)pml4)[0] = pdp | PTE_P | PTE_RW;
    ((volatile u64 *)pdp)[0] = pd | PTE_P | PTE_RW;
    ((volatile u64 *)pd)[0] = pt | PTE_P | PTE_RW;
    for (int i = 0; i < 4; i++) ((volatile u64 *)pt)[i] = r->data_pages[i] | PTE_P | PTE_RW;
    r->pml4 = pml4;

    STEP(10); /* announce it: pdp[0] = PML4, then g2v_notify */
    *mmio32(VGT_PVINFO_PAGE + PVINFO_PDP0_LO) = (u32)pml4;
    *mmio32(VGT_PVINFO_PAGE + PVINFO_PDP0_LO + 4) = (u32)(pml4 >> 32);
    *mmio32(VGT_PVINFO_PAGE + PVINFO_G2V_NOTIFY) = VGT_G2V_PPGTT_L4_PAGE_TABLE_CREATE;

    STEP(11); /* rewrite PTEs of the shadowed table: trapped writes */
    ((volatile u64 *)pt)[1] = r->data_pages[4] | PTE_P | PTE_RW;
    ((volatile u64 *)pt)[5] = r->data_pages[5] | PTE_P | PTE_RW;
    ((volatile u64 *)pt)[3] = 0;

    STEP(12); /* MSI: program the capability, unmask a GT interrupt, enable the master */
    u8 cap = cfg_read8(VGPU_BDF, 0x34) & 0xFC;
    while (cap && cfg_read8(VGPU_BDF, cap) != 0x05) cap = cfg_read8(VGPU_BDF, cap + 1) & 0xFC;
    if (!cap) FAIL(12);
    cfg_write32(VGPU_BDF, cap + 4, 0xFEE00000u);
    cfg_write16(VGPU_BDF, cap + 8, MSI_VECTOR);
    cfg_write16(VGPU_BDF, cap + 2, cfg_read16(VGPU_BDF, cap + 2) | 1);
    *mmio32(GEN8_GT_ISR_BASE + IRQ_IMR) = 0;
    *mmio32(GEN8_GT_ISR_BASE + IRQ_IER) = 0xFFFFFFFFu;
    *mmio32(GEN8_MASTER_IRQ) = GEN8_MASTER_IRQ_CONTROL;

    STEP(13); /* wait for it: the host raises an event; the IDT handler counts it */
    u64 before = gs_read(MB_IRQ_COUNT);
    while (gs_read(MB_IRQ_COUNT) == before) __asm__ volatile("sti; hlt; cli");
    u64 vec = gs_read(MB_IRQ_RING + ((gs_read(MB_IRQ_COUNT) - 1) % 64) * 8);
    r->msi_vector = vec;
    if (vec != MSI_VECTOR) FAIL(13);

    outl(DONE_PORT, 0);
    for (;;) __asm__ volatile("cli; hlt");
}
