"""The vGPU device model: host, types, allocator, config space, MMIO, GTT."""
