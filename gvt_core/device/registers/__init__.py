"""The vGPU's register interfaces: PCI config space, the BAR0 register file, its handlers and PVINFO."""
