"""The vGPU's register interfaces: PCI config space, the BAR0 register file, upstream's
Broadwell register table (data) and its handlers, and PVINFO."""
