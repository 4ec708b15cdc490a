"""The vGPU device model.

``gvt`` (the host), ``vgpu`` (one vGPU's life cycle), ``types`` and
``allocator`` (what a vGPU is carved from), ``interrupt`` (virtual IRQs
delivered as MSI), and one subpackage per subsystem: ``registers`` (config
space, MMIO, handlers, PVINFO), ``memory`` (GGTT, PPGTT shadows, page
tracking) and ``display`` (OpRegion, monitor and port, AUX, GMBUS, planes,
flips, vblank, framebuffer decoder, screens).
"""
