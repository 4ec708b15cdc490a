"""``gvt demo``: a host on a backend, N vGPUs, the guest driver loading in each."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import attrs

from gvt_core.cli.backend_args import add_backend_arguments, backend_options, chosen_backend
from gvt_core.errors import GvtError
from gvt_core.guest.driver import GuestDriver

DEMO_GUEST_MEM = 64 << 20


@attrs.frozen
class DemoRow:
    id: int
    type: str
    vm_id: int
    low_gm: tuple[int, int]
    high_gm: tuple[int, int]
    fences: int
    cfg_traps: int
    mmio_traps: int
    ggtt_writes: int
    ggtt_to_scratch: int
    framebuffer_gm: int
    ring_gm: int

    def as_dict(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["low_gm"] = {"base": self.low_gm[0], "size": self.low_gm[1]}
        d["high_gm"] = {"base": self.high_gm[0], "size": self.high_gm[1]}
        return d


def run_demo(
    backend: str, count: int, type_name: str | None, options: dict[str, Any] | None = None
) -> tuple[str, list[DemoRow]]:
    """Create ``count`` vGPUs, load the guest driver in each; return the rows."""
    from gvt_core.device.gvt import Gvt

    rows: list[DemoRow] = []
    with Gvt.open(backend, **(options or {})) as gvt:
        chosen = type_name or gvt.smallest_type
        vms = []
        try:
            for i in range(count):
                vm = gvt.create_vm(DEMO_GUEST_MEM, name=f"demo-vm{i + 1}")
                vms.append(vm)
                vgpu = gvt.create_vgpu(chosen, vm)
                report = GuestDriver(vm.port()).load()
                res, st = vgpu.resources, vgpu.stats
                rows.append(
                    DemoRow(
                        id=vgpu.id,
                        type=chosen,
                        vm_id=vm.vm_id,
                        low_gm=(res.low_gm_base, res.low_gm_size),
                        high_gm=(res.high_gm_base, res.high_gm_size),
                        fences=len(res.fences),
                        cfg_traps=st.cfg_reads + st.cfg_writes,
                        mmio_traps=st.mmio_reads + st.mmio_writes,
                        ggtt_writes=st.ggtt_writes,
                        ggtt_to_scratch=st.ggtt_to_scratch,
                        framebuffer_gm=report.framebuffer_gm,
                        ring_gm=report.ring_gm,
                    )
                )
        finally:
            for vgpu in list(gvt.vgpus.values()):
                gvt.destroy_vgpu(vgpu)
            for vm in vms:
                vm.close()
    return chosen, rows


def _range(base: int, size: int) -> str:
    return f"{base:#x}+{size >> 20}M"


def print_table(backend: str, rows: list[DemoRow]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gvt demo on {backend}: {len(rows)} vGPU(s), guest driver loaded in each")
    for col in ("id", "type", "low GM (aperture)", "high GM (hidden)", "fences",
                "cfg traps", "MMIO traps", "GGTT writes", "to scratch"):
        table.add_column(col, justify="right" if col not in ("type",) else "left")
    for r in rows:
        table.add_row(
            str(r.id), r.type,
            _range(*r.low_gm), _range(*r.high_gm),
            str(r.fences), str(r.cfg_traps), str(r.mmio_traps), str(r.ggtt_writes),
            str(r.ggtt_to_scratch),
        )
    # a pipe or a CI log gets the whole table rather than 80 wrapped columns
    Console(width=None if sys.stdout.isatty() else 132).print(table)


def cmd_demo(args: argparse.Namespace) -> int:
    backend = chosen_backend(args)
    try:
        chosen, rows = run_demo(backend, args.vgpus, args.type, backend_options(args))
    except GvtError as exc:
        print(f"gvt demo: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"backend": backend, "type": chosen,
                          "vgpus": [r.as_dict() for r in rows]}, indent=2))
    else:
        print_table(backend, rows)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="create vGPUs on a backend and load the guest driver model in each"
    )
    add_backend_arguments(p)
    p.add_argument("--vgpus", type=int, default=2, help="how many vGPUs (default: 2)")
    p.add_argument("--type", default=None, help="vGPU type name (default: the smallest)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_demo)
