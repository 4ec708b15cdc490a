"""``gvt serve``: give an existing guest of the hypervisor's toolstack a vGPU, until it ends.

On Xen the guest is a domain ``xl create`` started (``--domid``), on ACRN a
User VM the Service VM launched (``--vmid``); the backend's ``open_vm`` hook
binds to it. The command creates and activates the vGPU, serves it until the
guest ends or the command is stopped (SIGINT or SIGTERM), then tears down in
order: vGPU, the backend's hold on the guest, the host.

The vGPU's monitor: the type's built-in one, or with ``--edid FILE`` one
presenting that EDID. While serving, SIGUSR1 unplugs the monitor and SIGHUP
plugs it in again (reading FILE anew), each a hotplug the guest sees.
"""

from __future__ import annotations

import argparse
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from gvt_core.cli.backend_args import add_backend_arguments, backend_options, chosen_backend
from gvt_core.cli.edid_arg import edid_file
from gvt_core.errors import GvtError

#: how often the serving loop looks at the stop request while waiting on the guest.
POLL_INTERVAL_S = 0.5
#: monitor requests the serving loop acts on (``monitor`` queue of :func:`serve`).
PLUG, UNPLUG = "plug", "unplug"


@attrs.frozen
class ServeResult:
    """How a serve session ended."""

    vgpu_id: int
    type: str
    #: "guest ended" or "stopped".
    reason: str
    mmio_traps: int
    cfg_traps: int


def serve(
    gvt: Any,
    vm_id: int,
    type_name: str,
    stop: threading.Event,
    announce: Callable[[str], None] = lambda _line: None,
    *,
    edid: str | None = None,
    monitor: queue.SimpleQueue[str] | None = None,
) -> ServeResult:
    """Serve guest ``vm_id`` on host ``gvt`` with a vGPU of ``type_name``.

    ``edid``: a file whose EDID the vGPU's monitor presents (the type's built-in
    one otherwise). ``monitor``: requests (:data:`PLUG`, :data:`UNPLUG`) acted on
    while serving. Returns when the guest ended or ``stop`` was set; the vGPU is
    destroyed and the backend's hold on the guest released before it returns,
    whatever happened in between.
    """
    vtype = gvt.find_type(type_name)
    vm = gvt.open_vm(vm_id)
    try:
        vgpu = gvt.create_vgpu(vtype.name, vm)
        try:
            if edid is not None:
                gvt.plug_monitor(vgpu, edid)
            gvt.activate_vgpu(vgpu)
            announce(
                f"serving vGPU {vgpu.id} ({vtype.name}) for guest {vm_id} on "
                f"{gvt.mpt.name}; stop with Ctrl-C"
            )
            reason = "stopped"
            while not stop.is_set():
                _monitor_requests(gvt, vgpu, edid, monitor, announce)
                if vm.wait_ended(POLL_INTERVAL_S):
                    reason = "guest ended"
                    break
            stats = vgpu.stats
            return ServeResult(
                vgpu_id=vgpu.id,
                type=vtype.name,
                reason=reason,
                mmio_traps=stats.mmio_reads + stats.mmio_writes,
                cfg_traps=stats.cfg_reads + stats.cfg_writes,
            )
        finally:
            if vgpu.id in gvt.vgpus:
                gvt.destroy_vgpu(vgpu)
    finally:
        vm.close()


def _monitor_requests(gvt: Any, vgpu: Any, edid: str | None,
                      requests: queue.SimpleQueue[str] | None,
                      announce: Callable[[str], None]) -> None:
    """Plug or unplug the vGPU's monitor as asked (a bad EDID file is announced and
    leaves the monitor as it was)."""
    while requests is not None and not requests.empty():
        what = requests.get_nowait()
        try:
            if what == PLUG:
                got = gvt.plug_monitor(vgpu, edid)
                announce(f"monitor plugged into vGPU {vgpu.id} (EDID from {got.source})")
            elif what == UNPLUG:
                gvt.unplug_monitor(vgpu)
                announce(f"monitor unplugged from vGPU {vgpu.id}")
        except (GvtError, OSError) as exc:
            announce(f"monitor {what} failed: {exc}")


@contextmanager
def _stop_on_signals(stop: threading.Event,
                     monitor: queue.SimpleQueue[str]) -> Iterator[None]:
    """SIGINT and SIGTERM ask the serving loop to stop, SIGHUP to plug the monitor
    in, SIGUSR1 to unplug it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {
        signal.SIGINT: lambda _sig, _frame: stop.set(),
        signal.SIGTERM: lambda _sig, _frame: stop.set(),
        signal.SIGHUP: lambda _sig, _frame: monitor.put(PLUG),
        signal.SIGUSR1: lambda _sig, _frame: monitor.put(UNPLUG),
    }
    old = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def cmd_serve(args: argparse.Namespace) -> int:
    from gvt_core.device.gvt import Gvt

    backend = chosen_backend(args)
    stop = threading.Event()
    monitor: queue.SimpleQueue[str] = queue.SimpleQueue()
    try:
        with _stop_on_signals(stop, monitor), Gvt.open(backend, **backend_options(args)) as gvt:
            result = serve(
                gvt, args.vm_id, args.type or gvt.smallest_type, stop,
                announce=lambda line: print(f"gvt serve: {line}", flush=True),
                edid=args.edid, monitor=monitor,
            )
    except (GvtError, OSError) as exc:
        print(f"gvt serve: {exc}", file=sys.stderr)
        return 1
    print(
        f"gvt serve: {result.reason}; vGPU {result.vgpu_id} ({result.type}) destroyed after "
        f"{result.cfg_traps} config and {result.mmio_traps} MMIO traps"
    )
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="give an existing guest (a Xen domain, an ACRN User VM) a vGPU until it ends",
    )
    add_backend_arguments(p)
    p.add_argument(
        "--vm-id", "--domid", "--vmid", dest="vm_id", type=int, required=True,
        help="the hypervisor's id of the guest (Xen domid, ACRN vmid)",
    )
    p.add_argument("--type", default=None, help="vGPU type name (default: the smallest)")
    p.add_argument("--edid", metavar="FILE", type=edid_file, default=None,
                   help="the monitor presents this EDID (raw binary, as /sys/class/drm/*/edid); "
                        "SIGUSR1 unplugs it, SIGHUP plugs it in again")
    p.set_defaults(func=cmd_serve)
