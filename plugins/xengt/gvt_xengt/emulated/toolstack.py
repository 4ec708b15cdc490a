"""The emulated toolstack (``xl``): creating and destroying domains, and their guest OS.

On a Xen host the domains a device model serves come from the toolstack;
``gvt serve --backend xengt --domid N`` attaches to one. On the emulated
Xen the backend option ``domains`` plays ``xl create -p`` at host start:
each listed domain is built paused, its "guest OS" (a thread standing for
the kernel on vCPU 0) starts when the domain is first unpaused, probes PCI
00:02.0 until a GPU answers, loads the i915 guest-driver model, draws one
frame into its framebuffer, stays up ``guest_seconds`` and powers off. Xen
then tells the toolstack, which destroys the domain (``on_poweroff``).
"""

from __future__ import annotations

import logging
import threading
import time

import attrs

from gvt_core.errors import GvtError
from gvt_core.guest.driver import GuestDriver
from gvt_xengt import abi
from gvt_xengt.emulated.domain import HvmDomain
from gvt_xengt.emulated.xen import EmulatedXen

log = logging.getLogger(__name__)

DEFAULT_MEM_MIB = 64
#: how often a guest that found no GPU yet probes 00:02.0 again.
PROBE_INTERVAL_S = 0.02
INTEL_VENDOR_ID = 0x8086


@attrs.frozen
class DomainSpec:
    """One domain of the ``domains`` option: ``ID[:MEM_MIB[:VCPUS]]``."""

    domid: int
    mem_mib: int = DEFAULT_MEM_MIB
    vcpus: int = 1


def parse_domains(text: str) -> list[DomainSpec]:
    """``"5,7:128:2"`` -> domain 5 (64 MiB, 1 vCPU) and domain 7 (128 MiB, 2 vCPUs)."""
    specs = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        parts = item.split(":")
        if len(parts) > 3 or not all(p.isdigit() for p in parts):
            raise ValueError(
                f"domain spec {item!r} is not ID[:MEM_MIB[:VCPUS]] (e.g. 5 or 7:128:2)"
            )
        nums = [int(p) for p in parts]
        specs.append(DomainSpec(*nums))
    ids = [s.domid for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"domain ids repeat in {text!r}")
    return specs


class GuestOs(threading.Thread):
    """The guest kernel of a toolstack domain, on vCPU 0."""

    def __init__(self, domain: HvmDomain, lifetime: float) -> None:
        super().__init__(name=f"guest-os-dom{domain.domid}", daemon=True)
        self.domain = domain
        self.lifetime = lifetime
        self.report: object | None = None
        self.error = ""

    def run(self) -> None:
        from gvt_xengt.port import XenGuestPort

        d = self.domain
        port = XenGuestPort(d, 0)
        try:
            while port.cfg_read(0, 2) != INTEL_VENDOR_ID:
                time.sleep(PROBE_INTERVAL_S)
            driver = GuestDriver(port)
            self.report = report = driver.load()
            frame = bytes((i * 29) & 0xFF for i in range(abi.PAGE_SIZE))
            port.mem_write(report.framebuffer_gpa, frame)
            if d.ended.wait(self.lifetime):
                return
            d.xen.shutdown(d, abi.SHUTDOWN_poweroff)
        except GvtError as exc:
            # the domain went away or its device misbehaved: the guest stops
            self.error = f"{type(exc).__name__}: {exc}"
            log.info("guest OS of domain %d stopped: %s", d.domid, self.error)
            if not d.dying:
                d.xen.shutdown(d, abi.SHUTDOWN_crash)


class Toolstack:
    """``xl`` for one emulated machine."""

    def __init__(self, xen: EmulatedXen) -> None:
        self.xen = xen
        self.guests: dict[int, GuestOs] = {}
        self._lock = threading.Lock()

    def create(self, mem_size: int, vcpus: int = 1, name: str = "", domid: int | None = None,
               paused: bool = False) -> HvmDomain:
        return self.xen.create_domain(mem_size, vcpus, name, domid, paused)

    def destroy(self, domid: int) -> None:
        self.xen.destroy_domain(domid)

    def boot(self, spec: DomainSpec, guest_seconds: float) -> HvmDomain:
        """``xl create -p``: the domain waits paused for its device model; its
        guest OS runs once it is unpaused."""
        d = self.create(spec.mem_mib << 20, spec.vcpus, f"guest{spec.domid}", spec.domid,
                        paused=True)
        guest = GuestOs(d, guest_seconds)
        with self._lock:
            self.guests[d.domid] = guest
        watcher = threading.Thread(target=self._start_when_running, args=(d, guest),
                                   name=f"xl-dom{d.domid}", daemon=True)
        watcher.start()
        return d

    @staticmethod
    def _start_when_running(d: HvmDomain, guest: GuestOs) -> None:
        while not d.ended.is_set():
            if not d.paused and d.shutdown_reason is None:
                guest.start()
                return
            d.ended.wait(PROBE_INTERVAL_S)
