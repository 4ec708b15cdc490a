"""What the guest's display engine sees, and what the host sees of it.

OpRegion and VBT; the virtual DP monitor (EDID, DPCD, DDC EEPROM) on its port
with straps and hotplug; DP AUX channels and GMBUS; pipe timings, planes,
flips and vblank timers; the framebuffer decoder, screens and the mosaic.
:class:`~gvt_core.device.display.vdisplay.VirtualDisplay` puts one vGPU's
display together behind register entry points.
"""
