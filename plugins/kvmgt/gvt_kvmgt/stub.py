"""The guest side of the kvmgt GuestPort: a tiny x86-64 stub and the firmware region.

The VMM sets up 64-bit long mode itself (no firmware runs): page tables that
identity-map guest-physical space with 2 MiB pages, a GDT with a TSS, an IDT
whose 256 gates point at per-vector thunks. All of it lives in a *firmware
region* at :data:`FW_BASE`, a memslot of its own outside guest RAM, so the
guest-driver model may use every byte of RAM.

The stub executes a list of micro-ops the VMM writes into a per-vCPU
*mailbox* (reached through the GS base, so interrupt handlers find it too):
loads, stores, ``in``/``out`` of a given size, and a wait for an interrupt
bounded by the LAPIC timer. Each access is a real instruction; each one
that leaves guest RAM or hits a write-protected page is a real KVM exit.
It reports completion with an ``out`` to :data:`DONE_PORT`. Interrupt
vectors >= 32 land in ``irq_common`` (records the vector in a ring, EOIs the
in-kernel LAPIC); exceptions land in ``fault_common`` (records vector, error
code, RIP, CR2 and reports through :data:`FAULT_PORT`).

:data:`STUB_SOURCE` is the GNU as source; :data:`STUB_CODE` its bytes, kept
pre-assembled so the wheel needs no build step (``tests/test_stub.py``
re-assembles the source and compares).
"""

from __future__ import annotations

import struct

from gvt_kvmgt import abi

# --- firmware region (guest-physical; identity-mapped) -----------------------------------
FW_BASE = 0xFF00_0000
FW_SIZE = 1 << 20
FW_PML4 = 0x0000
FW_PDPT = 0x1000
FW_PD_LOW = 0x2000  # 4 page directories: [0, 4 GiB)
FW_PD_POOL = 0x6000  # 16 spare page directories for 1 GiB regions above 4 GiB
FW_PD_POOL_PAGES = 16
FW_GDT = 0x16000
FW_TSS = 0x16100
FW_IDT = 0x17000
FW_THUNKS = 0x18000
FW_CODE = 0x19000
FW_VCPU_AREA = 0x20000
FW_VCPU_STRIDE = 0x20000  # mailbox (64 KiB) + stack (64 KiB) per vCPU
MAX_VCPUS = 4
MAILBOX_SIZE = 0x10000
#: guest RAM must end below this (the 3-4 GiB hole holds BARs, IOAPIC, LAPIC, firmware).
RAM_LIMIT = 0xC000_0000
#: Intel VMX needs three pages of guest-physical space for its real-mode TSS.
TSS_ADDR = 0xFFFB_D000
#: the stub maps guest-physical space below this (PML4 entry 0).
MAP_LIMIT = 1 << 39
LAPIC_BASE = 0xFEE0_0000

GDT_CODE64 = 0x08
GDT_DATA = 0x10
GDT_TSS = 0x18

# --- mailbox layout (offsets from the GS base) -----------------------------------------------
MB_COUNT = 0x00
MB_IRQ_COUNT = 0x08
MB_TIMER_FIRED = 0x10
MB_FAULT_VEC = 0x18
MB_FAULT_ERR = 0x20
MB_FAULT_RIP = 0x28
MB_SELF = 0x30
MB_FAULT_CR2 = 0x38
MB_IRQ_RING = 0x100
MB_IRQ_RING_SIZE = 64
MB_ENTRIES = 0x400
ENTRY_SIZE = 32
MAX_ENTRIES = (MAILBOX_SIZE - MB_ENTRIES) // ENTRY_SIZE

# --- micro-ops (entry: u32 op, u32 size, u64 addr, u64 value, u64 repeat) ----------------------
OP_LOAD = 1
OP_STORE = 2
OP_IN = 3
OP_OUT = 4
OP_WAIT = 5
ENTRY = struct.Struct("<IIQQQ")

# --- private ports and vectors ----------------------------------------------------------------------
DONE_PORT = 0x510
FAULT_PORT = 0x511
BADOP_PORT = 0x512
#: ports a guest program uses to report progress, failure and success.
PROGRAM_STEP_PORT = 0x518
PROGRAM_FAIL_PORT = 0x519
PROGRAM_DONE_PORT = 0x51A
TIMER_VEC = 0xFE
SPURIOUS_VEC = 0xFF
#: MSIs the guest cannot take as sent (odd delivery mode, vector < 16, a vector the stub
#: reserves, a destination with no vCPU) ring this vector on vCPU 0 instead.
DOORBELL_VEC = 0xFD
RESERVED_VECTORS = frozenset((DOORBELL_VEC, TIMER_VEC, SPURIOUS_VEC))
#: the LAPIC timer runs at the 1 GHz APIC bus clock KVM emulates; the stub divides by 16.
TIMER_NS_PER_TICK = 16

#: offsets of the stub's entry points inside STUB_CODE.
IRQ_COMMON = 0x000
FAULT_COMMON = 0x080
STUB_ENTRY = 0x100

#: vectors for which the CPU pushes an error code.
ERROR_CODE_VECTORS = frozenset((8, 10, 11, 12, 13, 14, 17, 21, 29, 30))

STUB_SOURCE = r"""    .intel_syntax noprefix
    .code64
    .set MB_COUNT, 0x00
    .set MB_IRQ_COUNT, 0x08
    .set MB_TIMER_FIRED, 0x10
    .set MB_FAULT_VEC, 0x18
    .set MB_FAULT_ERR, 0x20
    .set MB_FAULT_RIP, 0x28
    .set MB_SELF, 0x30
    .set MB_FAULT_CR2, 0x38
    .set MB_IRQ_RING, 0x100
    .set MB_ENTRIES, 0x400
    .set LAPIC, 0xFEE00000
    .set TIMER_VEC, 0xFE
    .set SPURIOUS_VEC, 0xFF
    .set DONE_PORT, 0x510
    .set FAULT_PORT, 0x511
    .set BADOP_PORT, 0x512
    .text
    .org 0x000, 0xcc
irq_common:
    push rax
    push rdx
    mov rax, [rsp+16]
    cmp eax, SPURIOUS_VEC
    je 2f
    cmp eax, TIMER_VEC
    je 1f
    mov rdx, gs:[MB_IRQ_COUNT]
    and edx, 63
    mov gs:[rdx*8 + MB_IRQ_RING], rax
    inc qword ptr gs:[MB_IRQ_COUNT]
    jmp 3f
1:  mov qword ptr gs:[MB_TIMER_FIRED], 1
3:  mov edx, LAPIC
    mov dword ptr [rdx+0xB0], 0
2:  pop rdx
    pop rax
    add rsp, 8
    iretq
    .org 0x080, 0xcc
fault_common:
    pop rax
    mov gs:[MB_FAULT_VEC], rax
    pop rax
    mov gs:[MB_FAULT_ERR], rax
    mov rax, [rsp]
    mov gs:[MB_FAULT_RIP], rax
    mov rax, cr2
    mov gs:[MB_FAULT_CR2], rax
    mov dx, FAULT_PORT
    out dx, al
4:  cli
    hlt
    jmp 4b
    .org 0x100, 0xcc
entry:
    mov edx, LAPIC
    mov dword ptr [rdx+0xF0], 0x1FF
    mov dword ptr [rdx+0x80], 0
done:
    mov dx, DONE_PORT
    out dx, al
    mov r10, gs:[MB_COUNT]
    mov rbx, gs:[MB_SELF]
    add rbx, MB_ENTRIES
next:
    test r10, r10
    jz done
    mov eax, [rbx]
    mov r8d, [rbx+4]
    mov rdi, [rbx+8]
    mov rsi, [rbx+16]
    mov rcx, [rbx+24]
    cmp eax, 5
    je op_wait
    jrcxz 1f
    cmp eax, 1
    je op_load
    cmp eax, 2
    je op_store
    cmp eax, 3
    je op_in
    cmp eax, 4
    je op_out
    mov dx, BADOP_PORT
    out dx, al
    jmp done
1:  cmp eax, 4  # a repeat count of 0 does nothing (for a known op)
    jbe advance
    mov dx, BADOP_PORT
    out dx, al
    jmp done
advance:
    add rbx, 32
    dec r10
    jmp next
op_load:
    cmp r8d, 8
    je 8f
    cmp r8d, 4
    je 4f
    cmp r8d, 2
    je 2f
1:  movzx eax, byte ptr [rdi]
    loop 1b
    jmp 9f
2:  movzx eax, word ptr [rdi]
    loop 2b
    jmp 9f
4:  mov eax, [rdi]
    loop 4b
    jmp 9f
8:  mov rax, [rdi]
    loop 8b
9:  mov [rbx+16], rax
    jmp advance
op_store:
    cmp r8d, 8
    je 8f
    cmp r8d, 4
    je 4f
    cmp r8d, 2
    je 2f
1:  mov [rdi], sil
    loop 1b
    jmp advance
2:  mov [rdi], si
    loop 2b
    jmp advance
4:  mov [rdi], esi
    loop 4b
    jmp advance
8:  mov [rdi], rsi
    loop 8b
    jmp advance
op_in:
    mov edx, edi
    xor eax, eax
    cmp r8d, 4
    je 4f
    cmp r8d, 2
    je 2f
1:  in al, dx
    loop 1b
    jmp 9f
2:  in ax, dx
    loop 2b
    jmp 9f
4:  in eax, dx
    loop 4b
9:  mov [rbx+16], rax
    jmp advance
op_out:
    mov edx, edi
    mov rax, rsi
    cmp r8d, 4
    je 4f
    cmp r8d, 2
    je 2f
1:  out dx, al
    loop 1b
    jmp advance
2:  out dx, ax
    loop 2b
    jmp advance
4:  out dx, eax
    loop 4b
    jmp advance
op_wait:
    mov qword ptr gs:[MB_TIMER_FIRED], 0
    mov edx, LAPIC
    mov dword ptr [rdx+0x3E0], 3
    mov dword ptr [rdx+0x320], TIMER_VEC
    mov [rdx+0x380], esi
1:  cmp gs:[MB_IRQ_COUNT], rdi
    jne 2f
    cmp qword ptr gs:[MB_TIMER_FIRED], 0
    jne 2f
    sti
    hlt
    cli
    jmp 1b
2:  mov edx, LAPIC
    mov dword ptr [rdx+0x380], 0
    mov dword ptr [rdx+0x320], 0x10000 | TIMER_VEC
    sti
    nop
    cli
    jmp advance
"""

STUB_CODE = bytes.fromhex(
    "5052488b4424103dff00000074433dfe000000742065488b14250800000083e2"
    "3f65488904d5000100006548ff042508000000eb0d6548c70425100000000100"
    "0000ba0000e0fec782b0000000000000005a584883c40848cfcccccccccccccc"
    "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
    "5865488904251800000058654889042520000000488b04246548890425280000"
    "000f20d065488904253800000066ba1105eefaf4ebfccccccccccccccccccccc"
    "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
    "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
    "ba0000e0fec782f0000000ff010000c782800000000000000066ba1005ee654c"
    "8b14250000000065488b1c25300000004881c3000400004d85d274dd8b03448b"
    "4304488b7b08488b7310488b4b1883f8050f84e9000000e32383f801743383f8"
    "02745f83f8030f848300000083f8040f84a100000066ba1205eeeb9d83f80476"
    "0766ba1205eeeb914883c32049ffcaeba64183f80874204183f80474144183f8"
    "0274070fb607e2fbeb120fb707e2fbeb0b8b07e2fceb05488b07e2fb48894310"
    "ebc64183f80874204183f80474144183f8027407408837e2fbebad668937e2fb"
    "eba68937e2fceba0488937e2fbeb9989fa31c04183f80474114183f8027405ec"
    "e2fdeb0966ede2fceb03ede2fd48894310e972ffffff89fa4889f04183f80474"
    "174183f8027408eee2fde959ffffff66efe2fce950ffffffefe2fde948ffffff"
    "6548c704251000000000000000ba0000e0fec782e003000003000000c7822003"
    "0000fe00000089b2800300006548393c250800000075116548833c2510000000"
    "007505fbf4faebe4ba0000e0fec7828003000000000000c78220030000fe0001"
    "00fb90fae9dffeffff"
)


def vcpu_mailbox(index: int) -> int:
    """Guest-physical address of vCPU ``index``'s mailbox."""
    return FW_BASE + FW_VCPU_AREA + index * FW_VCPU_STRIDE


def vcpu_stack_top(index: int) -> int:
    return vcpu_mailbox(index) + FW_VCPU_STRIDE


def _idt_gate(handler: int) -> bytes:
    return struct.pack(
        "<HHBBHII",
        handler & 0xFFFF,
        GDT_CODE64,
        0,  # IST
        0x8E,  # present, DPL 0, 64-bit interrupt gate
        (handler >> 16) & 0xFFFF,
        handler >> 32,
        0,
    )


def _thunk(vector: int) -> bytes:
    """``[push 0;] push vector; jmp common`` -- 16 bytes per vector."""
    at = FW_BASE + FW_THUNKS + 16 * vector
    code = b"" if vector in ERROR_CODE_VECTORS or vector >= 32 else b"\x6a\x00"
    code += b"\x68" + struct.pack("<I", vector)
    target = FW_BASE + FW_CODE + (FAULT_COMMON if vector < 32 else IRQ_COMMON)
    code += b"\xe9" + struct.pack("<i", target - (at + len(code) + 5))
    return code.ljust(16, b"\xcc")


def _gdt() -> bytes:
    tss = FW_BASE + FW_TSS
    limit = 0x67
    tss_lo = (
        (limit & 0xFFFF)
        | ((tss & 0xFFFFFF) << 16)
        | (0x89 << 40)  # present, 64-bit available TSS
        | (((limit >> 16) & 0xF) << 48)
        | (((tss >> 24) & 0xFF) << 56)
    )
    return struct.pack(
        "<QQQQQ",
        0,
        0x00AF_9A00_0000_FFFF,  # 64-bit code, DPL 0
        0x00CF_9200_0000_FFFF,  # data, DPL 0
        tss_lo,
        tss >> 32,
    )


PTE_P = 1 << 0
PTE_RW = 1 << 1
PTE_PS = 1 << 7


_FIRMWARE_IMAGE: bytes | None = None


def build_firmware(fw: memoryview) -> None:
    """Lay out page tables, GDT, TSS, IDT, thunks and the stub in the firmware region
    (the image is the same for every VM: built once, then copied)."""
    global _FIRMWARE_IMAGE
    if _FIRMWARE_IMAGE is None:
        image = bytearray(FW_SIZE)
        _layout_firmware(memoryview(image))
        _FIRMWARE_IMAGE = bytes(image)
    fw[:] = _FIRMWARE_IMAGE


def _layout_firmware(fw: memoryview) -> None:
    base = FW_BASE
    struct.pack_into("<Q", fw, FW_PML4, (base + FW_PDPT) | PTE_P | PTE_RW)
    for i in range(4):
        pd = FW_PD_LOW + i * 0x1000
        struct.pack_into("<Q", fw, FW_PDPT + 8 * i, (base + pd) | PTE_P | PTE_RW)
        entries = [((i << 30) + (j << 21)) | PTE_P | PTE_RW | PTE_PS for j in range(512)]
        struct.pack_into("<512Q", fw, pd, *entries)
    fw[FW_GDT : FW_GDT + 40] = _gdt()
    idt = b"".join(_idt_gate(base + FW_THUNKS + 16 * v) for v in range(256))
    fw[FW_IDT : FW_IDT + len(idt)] = idt
    thunks = b"".join(_thunk(v) for v in range(256))
    fw[FW_THUNKS : FW_THUNKS + len(thunks)] = thunks
    fw[FW_CODE : FW_CODE + len(STUB_CODE)] = STUB_CODE
    for i in range(MAX_VCPUS):
        mb = vcpu_mailbox(i) - base
        struct.pack_into("<Q", fw, mb + MB_SELF, vcpu_mailbox(i))


class PageDirectoryPool:
    """Maps 1 GiB regions above 4 GiB on demand, from the spare page directories."""

    def __init__(self, fw: memoryview) -> None:
        self._fw = fw
        self._used = 0

    def ensure(self, gpa: int, length: int) -> None:
        """Make ``[gpa, gpa+length)`` reachable by the stub; raises ValueError past 512 GiB
        or when the spare directories are used up."""
        if gpa < 0 or gpa + length > MAP_LIMIT:
            raise ValueError(
                f"guest-physical address {gpa:#x} is beyond the {MAP_LIMIT >> 30} GiB the "
                "kvmgt stub maps"
            )
        first, last = gpa >> 30, (gpa + max(length, 1) - 1) >> 30
        for region in range(first, last + 1):
            slot = FW_PDPT + 8 * region
            if struct.unpack_from("<Q", self._fw, slot)[0] & PTE_P:
                continue
            if self._used == FW_PD_POOL_PAGES:
                raise ValueError(
                    f"the kvmgt stub maps at most {4 + FW_PD_POOL_PAGES} distinct GiB regions; "
                    f"{gpa:#x} needs another"
                )
            pd = FW_PD_POOL + self._used * 0x1000
            self._used += 1
            entries = [((region << 30) + (j << 21)) | PTE_P | PTE_RW | PTE_PS for j in range(512)]
            struct.pack_into("<512Q", self._fw, pd, *entries)
            struct.pack_into("<Q", self._fw, slot, (FW_BASE + pd) | PTE_P | PTE_RW)


def long_mode_sregs(sregs: abi.kvm_sregs, index: int) -> None:
    """Fill ``sregs`` (as read from the vCPU) for 64-bit mode on the firmware tables."""

    def seg(s: abi.kvm_segment, selector: int, type_: int, code: bool) -> None:
        s.base = 0
        s.limit = 0xFFFF_FFFF
        s.selector = selector
        s.type = type_
        s.present = 1
        s.dpl = 0
        s.db = 0 if code else 1
        s.s = 1
        s.l = 1 if code else 0
        s.g = 1
        s.avl = 0
        s.unusable = 0

    seg(sregs.cs, GDT_CODE64, 0xB, True)
    for s in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        seg(s, GDT_DATA, 0x3, False)
    sregs.gs.base = vcpu_mailbox(index)
    tr = sregs.tr
    tr.base, tr.limit, tr.selector = FW_BASE + FW_TSS, 0x67, GDT_TSS
    tr.type, tr.present, tr.dpl, tr.db, tr.s, tr.l, tr.g, tr.avl, tr.unusable = 11, 1, 0, 0, 0, 0, 0, 0, 0
    ldt = sregs.ldt
    ldt.base, ldt.limit, ldt.selector, ldt.type, ldt.present, ldt.unusable = 0, 0, 0, 2, 0, 1
    sregs.gdt.base, sregs.gdt.limit = FW_BASE + FW_GDT, 40 - 1
    sregs.idt.base, sregs.idt.limit = FW_BASE + FW_IDT, 256 * 16 - 1
    sregs.cr0 = (
        abi.X86_CR0_PE | abi.X86_CR0_MP | abi.X86_CR0_ET | abi.X86_CR0_NE
        | abi.X86_CR0_WP | abi.X86_CR0_AM | abi.X86_CR0_PG
    )
    sregs.cr3 = FW_BASE + FW_PML4
    sregs.cr4 = abi.X86_CR4_PAE | abi.X86_CR4_OSFXSR | abi.X86_CR4_OSXMMEXCPT
    sregs.efer = abi.EFER_LME | abi.EFER_LMA | abi.EFER_SCE


def entry_regs(regs: abi.kvm_regs, index: int, rip: int = FW_BASE + FW_CODE + STUB_ENTRY,
               rdi: int = 0) -> None:
    """Registers at the stub's entry (or a program's: ``rip``, first argument ``rdi``)."""
    for name, _ in abi.kvm_regs._fields_:
        setattr(regs, name, 0)
    regs.rip = rip
    regs.rdi = rdi
    regs.rsp = vcpu_stack_top(index) - 64
    regs.rflags = abi.X86_RFLAGS_RESERVED
