"""The software GEN8 engines of the host GPU.

``commands`` (the command table), ``memory`` (GGTT / PPGTT address spaces
an engine reaches memory through), ``context`` (LRC image and descriptor
layout), ``state`` (what an engine holds for a running context), ``engine``
(register file and command streamer), ``blitter`` (the 2D engine),
``cost`` (the cost model of the simulated clock). Nothing here knows about
vGPUs: the device model hands an engine a context image and the address
spaces the context may use.
"""
