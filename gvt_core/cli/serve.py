"""``gvt serve``: give an existing guest of the hypervisor's toolstack a vGPU, until it ends.

On Xen the guest is a domain ``xl create`` started (``--domid``), on ACRN a
User VM the Service VM launched (``--vmid``); the backend's ``open_vm`` hook
binds to it. The command creates and activates the vGPU, serves it until the
guest ends or the command is stopped (SIGINT or SIGTERM), then tears down in
order: vGPU, the backend's hold on the guest, the host.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from gvt_core.cli.backend_args import add_backend_arguments, backend_options, chosen_backend
from gvt_core.errors import GvtError

#: how often the serving loop looks at the stop request while waiting on the guest.
POLL_INTERVAL_S = 0.5


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
) -> ServeResult:
    """Serve guest ``vm_id`` on host ``gvt`` with a vGPU of ``type_name``.

    Returns when the guest ended or ``stop`` was set; the vGPU is destroyed
    and the backend's hold on the guest released before it returns, whatever
    happened in between.
    """
    vtype = gvt.find_type(type_name)
    vm = gvt.open_vm(vm_id)
    try:
        vgpu = gvt.create_vgpu(vtype.name, vm)
        try:
            gvt.activate_vgpu(vgpu)
            announce(
                f"serving vGPU {vgpu.id} ({vtype.name}) for guest {vm_id} on "
                f"{gvt.mpt.name}; stop with Ctrl-C"
            )
            reason = "stopped"
            while not stop.is_set():
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


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM ask the serving loop to stop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = lambda _sig, _frame: stop.set()  # noqa: E731
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def cmd_serve(args: argparse.Namespace) -> int:
    from gvt_core.device.gvt import Gvt

    backend = chosen_backend(args)
    stop = threading.Event()
    try:
        with _stop_on_signals(stop), Gvt.open(backend, **backend_options(args)) as gvt:
            result = serve(
                gvt, args.vm_id, args.type or gvt.smallest_type, stop,
                announce=lambda line: print(f"gvt serve: {line}", flush=True),
            )
    except GvtError as exc:
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
    p.set_defaults(func=cmd_serve)
