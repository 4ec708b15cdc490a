"""``gvt demo``: a host on a backend, N vGPUs, the guest driver loading in each."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import attrs

from gvt_core.cli.backend_args import add_backend_arguments, backend_options, chosen_backend
from gvt_core.device.allocator import IDS
from gvt_core.device.capacity import Capacity
from gvt_core.errors import GvtError
from gvt_core.guest.driver import GuestDriver

DEMO_GUEST_MEM = 64 << 20


class DemoDoesNotFitError(GvtError):
    """More vGPUs were asked for than one host holds."""

    def __init__(self, count: int, room: Capacity) -> None:
        super().__init__(
            f"{count} vGPUs of {room.type_name} do not fit one host: at most {room.count} do, "
            f"limited by {room.limited_by} ({room.reason}); ask for --vgpus {room.count} or "
            "fewer" + ("" if room.limited_by == IDS else ", or a type with less graphics memory")
        )


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
        room = gvt.capacity(chosen)
        if count > room.count:
            raise DemoDoesNotFitError(count, room)
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
    """A graphics-memory range as base+size in MiB (both are whole MiB)."""
    return f"{base >> 20}M+{size >> 20}M"


@attrs.frozen
class DemoColumn:
    """One column of the demo table: how to show a :class:`DemoRow`.

    The table keeps the columns that fit the terminal, dropping those with
    the lowest ``priority`` first (``--json`` always has every field).
    """

    header: str
    cell: Callable[[DemoRow], str]
    priority: int
    justify: str = "right"


#: the table's columns in display order (headers wrap: two short lines each).
COLUMNS: tuple[DemoColumn, ...] = (
    DemoColumn("vGPU", lambda r: str(r.id), 100),
    DemoColumn("type", lambda r: r.type, 90, "left"),
    DemoColumn("aperture\nbase+size", lambda r: _range(*r.low_gm), 80),
    DemoColumn("hidden GM\nbase+size", lambda r: _range(*r.high_gm), 70),
    DemoColumn("MMIO\ntraps", lambda r: str(r.mmio_traps), 60),
    DemoColumn("GGTT\nwrites", lambda r: str(r.ggtt_writes), 50),
    DemoColumn("to\nscratch", lambda r: str(r.ggtt_to_scratch), 55),
    DemoColumn("cfg\ntraps", lambda r: str(r.cfg_traps), 40),
    DemoColumn("fences", lambda r: str(r.fences), 30),
)

#: one line under the table (80 columns at most).
LEGEND = "traps: guest accesses emulated; to scratch: GGTT entries given no guest page"
#: a column's padding and divider in the table style used (no outer edge).
_COLUMN_GAP = 3


def _width(col: DemoColumn, rows: list[DemoRow]) -> int:
    """Columns the cell text needs, its share of padding and dividers included."""
    header = max(len(line) for line in col.header.splitlines())
    return max([header, *(len(col.cell(r)) for r in rows)]) + _COLUMN_GAP


def fitting_columns(rows: list[DemoRow], width: int) -> tuple[list[DemoColumn], list[DemoColumn]]:
    """(shown, left out): the highest-priority columns whose cells fit ``width``."""
    shown = list(COLUMNS)
    dropped: list[DemoColumn] = []
    while len(shown) > 1 and sum(_width(c, rows) for c in shown) - _COLUMN_GAP > width:
        worst = min(shown, key=lambda c: c.priority)
        shown.remove(worst)
        dropped.append(worst)
    return shown, dropped


def print_table(backend: str, rows: list[DemoRow], width: int | None = None) -> None:
    """The table in ``width`` columns (default: the terminal's, 80 when not a
    terminal), then the legend; columns that do not fit are named, never cut."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(width=width) if width else Console()
    shown, dropped = fitting_columns(rows, console.width)
    table = Table(
        title=f"gvt demo on {backend}: {len(rows)} vGPU(s), guest driver loaded in each",
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
    )
    for col in shown:
        table.add_column(col.header, justify=col.justify, no_wrap=True)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(*(col.cell(r) for col in shown))
    console.print(table)
    console.print(LEGEND, highlight=False)
    if dropped:
        names = ", ".join(c.header.replace("\n", " ") for c in dropped)
        console.print(f"left out at this width: {names} (--json has them)", highlight=False)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"the demo needs at least one vGPU, got {n}")
    return n


def _type_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the type name is empty; 'gvt types' lists them")
    return text.strip()


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
    p.add_argument("--vgpus", type=_positive, default=2,
                   help="how many vGPUs, 1 or more (default: 2; 'gvt types' shows how many fit)")
    p.add_argument("--type", type=_type_name, default=None,
                   help="vGPU type name (default: the smallest)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_demo)
