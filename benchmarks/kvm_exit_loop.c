/*
 * Baseline for kvm_mmio_roundtrip: the cheapest possible VMM exit loop in C.
 * A real-mode guest loops on one store to an address with no memslot (each
 * store a KVM_EXIT_MMIO) or one `out` (each a KVM_EXIT_IO), then one branch
 * back, the shape of the kvmgt stub's repeat loop (`mov; loop`); the loop
 * counts exits and resumes. Prints nanoseconds per exit.
 * Usage: kvm_exit_loop mmio|io N
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>

int main(int argc, char **argv) {
    int io = argc > 1 && strcmp(argv[1], "io") == 0;
    long n = argc > 2 ? atol(argv[2]) : 100000;
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) { perror("/dev/kvm"); return 1; }
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    unsigned char *mem = mmap(NULL, 0x4000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    /* mov [0x5000], al ; jmp back   or   out 0x10, al ; jmp back */
    static const unsigned char mmio_loop[] = {0xA2, 0x00, 0x50, 0xEB, 0xFB};
    static const unsigned char io_loop[] = {0xE6, 0x10, 0xEB, 0xFC};
    if (io) memcpy(mem + 0x1000, io_loop, sizeof io_loop);
    else memcpy(mem + 0x1000, mmio_loop, sizeof mmio_loop);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = 0x4000, .userspace_addr = (unsigned long)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) { perror("memslot"); return 1; }
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    int size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    struct kvm_sregs sregs;
    ioctl(vcpu, KVM_GET_SREGS, &sregs);
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    ioctl(vcpu, KVM_SET_SREGS, &sregs);
    struct kvm_regs regs = {.rip = 0x1000, .rflags = 2};
    ioctl(vcpu, KVM_SET_REGS, &regs);
    unsigned want = io ? KVM_EXIT_IO : KVM_EXIT_MMIO;
    for (int warm = 0; warm < 1000; warm++) ioctl(vcpu, KVM_RUN, 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0 || run->exit_reason != want) {
            fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
    printf("%.1f\n", ns / n);
    return 0;
}
