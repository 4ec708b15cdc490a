"""What the backends' host-kernel ABI layers share (standard library only).

Backends are separate distributions that may share code only through
``gvt_core``; the pieces of the Linux user-space ABI that more than one of
them mirrors in ctypes live here, so each is written once.
"""
