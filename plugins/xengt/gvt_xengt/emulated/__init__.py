"""The emulated Xen: a strict model of the hypervisor and dom0 kernel behind the two
device nodes, reached only through :class:`~gvt_xengt.emulated.transport.EmulatedTransport`.
"""

from gvt_xengt.emulated.toolstack import DomainSpec, Toolstack, parse_domains
from gvt_xengt.emulated.transport import EmulatedTransport
from gvt_xengt.emulated.xen import EmulatedXen

__all__ = ["DomainSpec", "EmulatedTransport", "EmulatedXen", "Toolstack", "parse_domains"]
