"""gvt: Intel GVT-g's mediated pass-through GPU virtualization, in Python."""

__version__ = "0.1.0"
