"""``gvt demo``: a host on a backend, N vGPUs, the guest driver loading in each, every
guest bringing up its virtual monitor and drawing its own picture (blits through its
vGPU, then an MI_DISPLAY_FLIP), then every guest submitting a workload mix on RCS and
BCS at the same time; the host decodes each guest's screen (``--screens DIR`` writes
them as PNGs, with a labelled mosaic)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from gvt_core.cli.backend_args import add_backend_arguments, backend_options, chosen_backend
from gvt_core.cli.edid_arg import edid_file
from gvt_core.device.allocator import IDS
from gvt_core.device.capacity import Capacity
from gvt_core.errors import GvtError
from gvt_core.guest.driver import GuestDriver

if TYPE_CHECKING:
    from gvt_core.device.vgpu import Vgpu
    from gvt_core.guest.display import GuestDisplay
    from gvt_core.guest.gpu import GuestGpu

DEMO_GUEST_MEM = 64 << 20
#: rounds of the workload mix each guest runs (one RCS and one BCS workload per round).
DEMO_ROUNDS = 10
#: how the guests draw their pictures: blits through the vGPU, or CPU stores through
#: the aperture.
DRAW_MODES = ("gpu", "cpu")
#: the guest's background behind its picture (GPU drawing): its colour at this fraction.
BACKGROUND_SHADE = 0.18


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
    #: workloads that ran to completion, GPU time charged (ns), fraction of all GPU time.
    workloads_completed: int = 0
    gpu_time_ns: int = 0
    share: float = 0.0
    faults: int = 0
    #: commands the command scanner decoded and audited, and workloads it refused.
    commands_scanned: int = 0
    commands_rejected: int = 0
    #: the guest's screen as the host decodes it (0 / "" when it shows nothing).
    width: int = 0
    height: int = 0
    format: str = ""
    screen_sha256: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["low_gm"] = {"base": self.low_gm[0], "size": self.low_gm[1]}
        d["high_gm"] = {"base": self.high_gm[0], "size": self.high_gm[1]}
        return d


@attrs.frozen
class DemoRun:
    """The run as a whole."""

    #: GPU time some engine was busy (ns, the host clock: simulated by default).
    gpu_time_ns: int
    clock: str
    policy: str
    owner_switches: int
    rounds: int
    #: how the pictures were drawn, and where the screens went (None: not written).
    draw: str = "gpu"
    screens: str | None = None


def _run_guests(gpus: list[GuestGpu], rounds: int) -> None:
    """Every guest runs the mix from its own thread, all at once."""
    from gvt_core.guest.workloads import DemoMix

    mixes = [DemoMix(gpu) for gpu in gpus]
    errors: list[BaseException] = []

    def play(mix: DemoMix, n: int) -> None:
        try:
            for r in range(rounds):
                mix.run_round((n << 24) | (r + 1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=play, args=(m, i), name=f"guest{i + 1}")
               for i, m in enumerate(mixes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _shade(colour: int, fraction: float) -> int:
    return sum(int(((colour >> shift) & 0xFF) * fraction) << shift for shift in (16, 8, 0))


def show_picture(display: GuestDisplay, number: int, draw: str) -> None:
    """Guest ``number`` draws its picture on a fresh framebuffer at its mode and
    shows it: blits then an MI_DISPLAY_FLIP (``gpu``), or CPU stores through its
    aperture then a flip (``cpu``)."""
    from gvt_core.guest.picture import colour_of, picture

    mode = display.mode
    if mode is None:
        return  # no monitor: nothing to draw on
    fb = display.alloc_framebuffer(*mode.size)
    rects = picture(number, *mode.size)
    if draw == "gpu":
        display.draw_with_gpu(fb, rects, background=_shade(colour_of(number), BACKGROUND_SHADE))
    else:
        display.fill_rects(fb, rects)
        display.flip(fb)


def _screen_fields(vgpu: Vgpu) -> dict[str, Any]:
    """``width``, ``height``, ``format`` and ``screen_sha256`` of a guest's screen."""
    from gvt_core.device.display.screen import capture
    from gvt_core.errors import FramebufferError

    try:
        screen = capture(vgpu)
    except FramebufferError:
        return {}
    return {"width": screen.width, "height": screen.height, "format": screen.format,
            "screen_sha256": hashlib.sha256(screen.rgb.tobytes()).hexdigest()}


def write_screens(directory: str, vgpus: list[Vgpu]) -> list[Path]:
    """One PNG per guest (``vgpu<id>.png``, or a "no signal" tile saying why) and
    ``mosaic.png`` with all of them side by side, labelled with id and type."""
    from gvt_core.device.display.mosaic import build_mosaic, vgpu_tile
    from gvt_core.device.display.screen import encode_png

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tiles = [vgpu_tile(v) for v in vgpus]
    for vgpu, tile in zip(vgpus, tiles, strict=True):
        path = out / f"vgpu{vgpu.id}.png"
        image = tile.image if tile.image is not None else build_mosaic([tile], columns=1)
        path.write_bytes(encode_png(image))
        written.append(path)
    mosaic = out / "mosaic.png"
    mosaic.write_bytes(encode_png(build_mosaic(tiles)))
    written.append(mosaic)
    return written


def run_demo(
    backend: str, count: int, type_name: str | None, options: dict[str, Any] | None = None,
    *, rounds: int = DEMO_ROUNDS, trace: str | None = None, clock: str | None = None,
    policy: str = "time-based", screens: str | None = None, edid: str | None = None,
    draw: str = "gpu",
) -> tuple[str, list[DemoRow], DemoRun]:
    """Create ``count`` vGPUs, load the guest driver in each, bring up each guest's
    monitor (``edid``: then plug a monitor with that EDID file into every vGPU, and
    each guest takes the mode it now picks) and draw its picture, run ``rounds`` of
    the workload mix in every guest at once; return the rows and the run
    (``screens``: a directory for the guests' screens and the mosaic)."""
    from gvt_core.device.display.edid import load_edid
    from gvt_core.device.execution.trace import ChromeTrace
    from gvt_core.device.gvt import Gvt
    from gvt_core.guest.display import GuestDisplay
    from gvt_core.guest.gpu import GuestGpu

    if draw not in DRAW_MODES:
        raise ValueError(f"draw is one of {', '.join(DRAW_MODES)}, not {draw!r}")
    monitor = load_edid(edid) if edid is not None else None
    rows: list[DemoRow] = []
    with Gvt.open(backend, clock=clock, policy=policy, **(options or {})) as gvt:
        recorder = ChromeTrace(gvt.name) if trace else None
        if recorder is not None:
            gvt.backend.add_observer(recorder, name="gvt-demo-trace")
        chosen = type_name or gvt.smallest_type
        room = gvt.capacity(chosen)
        if count > room.count:
            raise DemoDoesNotFitError(count, room)
        vms = []
        try:
            gpus, reports, vgpus = [], [], []
            for i in range(count):
                vm = gvt.create_vm(DEMO_GUEST_MEM, name=f"demo-vm{i + 1}")
                vms.append(vm)
                vgpu = gvt.create_vgpu(chosen, vm)
                driver = GuestDriver(vm.port())
                reports.append(driver.load())
                gvt.activate_vgpu(vgpu)
                gpu = GuestGpu(driver)
                display = GuestDisplay(driver, gvt.clock.sleep)
                display.attach_gpu(gpu)
                display.bring_up()
                if monitor is not None:
                    gvt.plug_monitor(vgpu, monitor)
                    display.handle_interrupts(1.0)
                    display.service_hotplug()
                show_picture(display, vgpu.id, draw)
                gpus.append(gpu)
                vgpus.append(vgpu)
            if rounds:
                _run_guests(gpus, rounds)
            total = sum(v.execution.stats.gpu_time_ns for v in vgpus) or 1
            for vm, vgpu, report in zip(vms, vgpus, reports, strict=True):
                res, st, ex = vgpu.resources, vgpu.stats, vgpu.execution.stats
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
                        workloads_completed=ex.workloads_completed,
                        gpu_time_ns=ex.gpu_time_ns,
                        share=round(ex.gpu_time_ns / total, 4),
                        faults=len(vgpu.execution.faults),
                        commands_scanned=vgpu.execution.scanner.counters.commands_scanned,
                        commands_rejected=vgpu.execution.scanner.counters.commands_rejected,
                        **_screen_fields(vgpu),
                    )
                )
            if screens is not None:
                write_screens(screens, vgpus)
            sched = gvt.scheduler
            run = DemoRun(gpu_time_ns=sched.stats.busy_ns, clock=sched.clock.name,
                          policy=sched.policy.name, owner_switches=sched.stats.switches,
                          rounds=rounds, draw=draw, screens=screens)
        finally:
            for vgpu in list(gvt.vgpus.values()):
                gvt.destroy_vgpu(vgpu)
            for vm in vms:
                vm.close()
        if recorder is not None:
            recorder.write(trace)  # type: ignore[arg-type]
    return chosen, rows, run


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


def _whole(text: str, least: int, what: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < least:
        raise argparse.ArgumentTypeError(f"{what}, got {n}")
    return n


def _positive(text: str) -> int:
    return _whole(text, 1, "the demo needs at least one vGPU")


def _rounds(text: str) -> int:
    return _whole(text, 0, "rounds are 0 or more")


def _screens_dir(text: str) -> str:
    """Refused before the guests run, not after: a path that is there and is not a
    directory (it is made, parents included, when it is missing)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory; give a "
                                         "directory for the PNG files (made if missing)")
    return text


def _type_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the type name is empty; 'gvt types' lists them")
    return text.strip()


def print_work(rows: list[DemoRow], run: DemoRun, width: int | None = None) -> None:
    """The GPU work each guest did: a second table in the first one's style, seven
    narrow columns (fits 80; rich wraps the headers at 60)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"GPU work: {run.rounds} round(s) of RCS + BCS work per guest",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    for col in ("id", "workloads", "GPU time (ms)", "share", "faults", "scanned", "rejected"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r.id), str(r.workloads_completed), f"{r.gpu_time_ns / 1e6:.3f}",
                      f"{100 * r.share:.1f}%", str(r.faults), str(r.commands_scanned),
                      str(r.commands_rejected))
    console = Console(width=width) if width else Console()
    console.print(table)
    console.print(f"GPU busy {run.gpu_time_ns / 1e6:.3f} ms on the {run.clock} clock, "
                  f"{run.owner_switches} owner switches ({run.policy} policy)")


def cmd_demo(args: argparse.Namespace) -> int:
    backend = chosen_backend(args)
    try:
        chosen, rows, run = run_demo(backend, args.vgpus, args.type, backend_options(args),
                                     rounds=args.rounds, trace=args.trace, clock=args.clock,
                                     policy=args.policy, screens=args.screens, edid=args.edid,
                                     draw=args.draw)
    except (GvtError, OSError) as exc:
        print(f"gvt demo: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"backend": backend, "type": chosen, "gpu_time_ns": run.gpu_time_ns,
                          "clock": run.clock, "policy": run.policy,
                          "owner_switches": run.owner_switches,
                          "vgpus": [r.as_dict() for r in rows]}, indent=2))
    else:
        print_table(backend, rows)
        print_work(rows, run)
        print_screens(rows, run)
    return 0


def print_screens(rows: list[DemoRow], run: DemoRun) -> None:
    """One line per distinct screen size, and where the PNGs went."""
    shown = [r for r in rows if r.width]
    sizes = sorted({(r.width, r.height, r.format) for r in shown})
    what = ", ".join(f"{w}x{h} {fmt}" for w, h, fmt in sizes) or "none"
    how = "blits + MI_DISPLAY_FLIP" if run.draw == "gpu" else "CPU stores via the aperture"
    print(f"screens: {len(shown)} of {len(rows)} guests show a picture: {what}")
    print(f"drawn with {how}")
    if run.screens is not None:
        print(f"written to {run.screens}: vgpu<id>.png per guest and mosaic.png")


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
    p.add_argument("--rounds", type=_rounds, default=DEMO_ROUNDS,
                   help=f"rounds of the workload mix per guest, 0 or more (default: {DEMO_ROUNDS})")
    p.add_argument("--trace", metavar="FILE", default=None,
                   help="write a Chrome trace-event JSON of the GPU (opens in Perfetto)")
    p.add_argument("--clock", choices=("simulated", "real"), default=None,
                   help="the host clock: simulated time, or real time (default: real for "
                        "backends whose guests run in real time, kvmgt; else simulated)")
    p.add_argument("--policy", choices=("time-based", "priority"), default="time-based",
                   help="the scheduling policy (default: time-based)")
    p.add_argument("--screens", metavar="DIR", type=_screens_dir, default=None,
                   help="write each guest's screen as DIR/vgpu<id>.png and all of them, "
                        "labelled, as DIR/mosaic.png")
    p.add_argument("--edid", metavar="FILE", type=edid_file, default=None,
                   help="plug a monitor presenting this EDID (raw binary, as "
                        "/sys/class/drm/*/edid) into every vGPU; guests take the mode it offers")
    p.add_argument("--draw", choices=DRAW_MODES, default="gpu",
                   help="how guests draw their pictures: blits through the vGPU (default) "
                        "or CPU stores through the aperture")
    p.set_defaults(func=cmd_demo)
