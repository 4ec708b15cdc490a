"""The command scanner's fuzz campaign: hostile command buffers from a real guest, on any backend.

One host, three guests over the backend under test: an *attacker* between
two idle *victims* (so its graphics memory has another vGPU's on both sides).
The attacker loads the guest-driver model, switches every engine to execlist
mode and submits command buffers through ELSP, as i915 does, that are

* mutations (:class:`Mutator`, seeded) of real workloads of the guest-driver
  model (:func:`seed_workloads`: the demo's store batch and blits, chained and
  second-level batches, register round trips, 3D pipeline state, semaphores,
  display flips), or
* drawn by hypothesis from the command table (:func:`workload_strategy`).

Each buffer is scanned, then either rejected (counted by reason; the vGPU
hangs or, for upstream's unhealthy errors, goes to failsafe and the host
resets it) or executed. The campaign checks what must hold whatever the
guest sends (:class:`Canaries`): no host exception in the GPU thread, every
host page that is not the attacker's (shadow tables of the victims, scratch
pages, canary blocks in the host's own graphics memory, OpRegions) and every
host GGTT entry outside the attacker's partition byte-identical, the victims'
RAM (with canary pages at both ends of each of their graphics-memory ranges)
and their registers byte-identical, and no host graphics memory left behind.
"""

from __future__ import annotations

import hashlib
import random
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from gvt_core.device.gvt import Gvt
from gvt_core.device.vgpu import Vgpu
from gvt_core.guest import commands as cmd
from gvt_core.guest.driver import GuestDriver
from gvt_core.guest.gpu import GuestBuffer, GuestContext, GuestGpu
from gvt_core.guest.port import GuestVm
from gvt_core.hw import regs
from gvt_core.hw.engine import commands as C
from gvt_core.hw.engine import context as lrc

PAGE = regs.GTT_PAGE_SIZE
ENGINES = tuple(sorted(regs.ENGINE_IDS.values()))
RCS, BCS = regs.ENGINE_RCS, regs.ENGINE_BCS
GUEST_MEM = 32 << 20
#: GPU time one fuzz workload may take before the watchdog ends it (hostile loops).
WATCHDOG_NS = 2_000_000
#: how long the harness waits for one buffer to end one way or another.
STUCK_S = 60.0
SURFACE_W, SURFACE_H = 64, 32
PITCH = 4 * SURFACE_W
#: register dwords a workload may legitimately use (F_CMD_ACCESS, per engine base).
SAFE_REGS = {RCS: (0x2028, 0x24D0, 0x2358), BCS: (0x22028, 0x22200, 0x22358),
             regs.ENGINE_VCS: (0x12028, 0x12358), regs.ENGINE_VCS2: (0x1C028, 0x1C358),
             regs.ENGINE_VECS: (0x1A028, 0x1A358)}
_CANARY = b"\xca\x5e\xed\xfe"
#: owners of the pages the core registers: the host's, each vGPU's, the campaign's canaries.
_HOST_OWNERS = ("host", "vgpu", "fuzz-canary")


class CampaignError(AssertionError):
    """Something the campaign must never see: a host exception, a stuck buffer, a
    changed canary."""


@attrs.define
class FuzzStats:
    """What one campaign did; ``rejected`` counts scanner rejections by reason."""

    tried: int = 0
    accepted: int = 0
    completed: int = 0
    engine_faults: int = 0
    watchdog: int = 0
    rejected: Counter[str] = attrs.Factory(Counter)
    failsafes: int = 0
    hangs: int = 0
    commands_scanned: int = 0

    def summary(self, label: str) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items()))
        return (f"scanner fuzz [{label}]: {self.tried} buffers tried, {self.accepted} accepted "
                f"({self.completed} completed, {self.engine_faults} engine faults, "
                f"{self.watchdog} watchdog), {sum(self.rejected.values())} rejected "
                f"({reasons}); {self.failsafes} failsafe resets, {self.hangs} engine resets, "
                f"{self.commands_scanned} commands scanned")


# --- the guests ------------------------------------------------------------------------------------
@attrs.define(eq=False)
class Attacker:
    """The fuzzing guest: its vGPU, driver, one context per engine, buffers to aim at."""

    gvt: Gvt
    vm: GuestVm
    vgpu: Vgpu
    gpu: GuestGpu = attrs.field(init=False)
    contexts: dict[int, GuestContext] = attrs.field(init=False)
    surfaces: list[GuestBuffer] = attrs.field(init=False)
    batches: list[GuestBuffer] = attrs.field(init=False)
    ggtt_batch: GuestBuffer = attrs.field(init=False)
    ggtt_data: GuestBuffer = attrs.field(init=False)
    loads: int = 0

    def load(self) -> None:
        """Driver bring-up (again after a DMLR), contexts and buffers."""
        driver = GuestDriver(self.vm.port(), fb_width=32, fb_height=16, ring_pages=2)
        driver.load()
        self.loads += 1
        gpu = self.gpu = GuestGpu(driver, engines=ENGINES)
        ppgtt = gpu.ppgtt(4)
        self.contexts = {e: gpu.context(e, ppgtt) for e in ENGINES}
        self.surfaces = [ppgtt.alloc(PITCH * SURFACE_H) for _ in range(2)]
        self.batches = [ppgtt.alloc(2 * PAGE) for _ in range(2)]
        self.ggtt_batch = gpu.ggtt_buffer(PAGE)
        self.ggtt_data = gpu.ggtt_buffer(PAGE)

    @property
    def hwsp(self) -> GuestBuffer:
        return self.gpu.hwsp[RCS]


@attrs.define(eq=False)
class Victim:
    """An idle guest whose memory and registers must not change; canary pages at both
    ends of each of its graphics-memory ranges."""

    vm: GuestVm
    vgpu: Vgpu
    driver: GuestDriver
    gpu: GuestGpu
    canaries: list[GuestBuffer] = attrs.Factory(list)

    def plant(self) -> None:
        rep = self.driver.report
        assert rep is not None
        ram = self.driver.ram
        assert ram is not None
        # the first free page after what the driver mapped, and the last page, of each range
        for gm in (self.gpu.gm_mappable.alloc(PAGE), rep.mappable.end - PAGE,
                   self.gpu.gm.alloc(PAGE), rep.nonmappable.end - PAGE):
            gpa = ram.alloc(PAGE)
            self.driver.map_gm(gm, gpa, 1, split=False)
            buf = GuestBuffer(gm, gpa, PAGE, self.driver.port)
            buf.write(0, _CANARY * (PAGE // 4))
            self.canaries.append(buf)
        ctx = self.gpu.context(RCS)
        out = ctx.ppgtt.alloc(PAGE)
        self.gpu.run(ctx, cmd.store_dword(out.gma, 0xC0FFEE), STUCK_S)  # it has run once


def _victim(gvt: Gvt, name: str) -> Victim:
    vm = gvt.create_vm(GUEST_MEM, name=name)
    vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
    driver = GuestDriver(vm.port(), fb_width=32, fb_height=16, ring_pages=2)
    driver.load()
    gvt.activate_vgpu(vgpu)
    return Victim(vm, vgpu, driver, GuestGpu(driver))


# --- canaries ----------------------------------------------------------------------------------------
def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


@attrs.define(eq=False)
class Canaries:
    """Everything that must stay byte-identical while the attacker fuzzes."""

    gvt: Gvt
    attacker: Attacker
    victims: list[Victim]
    host_blocks: list[Any] = attrs.Factory(list)
    pages: dict[int, tuple[str, bytes]] = attrs.Factory(dict)
    ram: list[list[bytes]] = attrs.Factory(list)
    vregs: list[bytes] = attrs.Factory(list)
    ggtt: np.ndarray | None = None

    def plant_host(self) -> None:
        """Canary blocks in the host's own graphics memory (among the shadows) and in the
        host's part of the aperture, whose GGTT entries are otherwise on scratch."""
        gpu = self.gvt.gpu
        for _ in range(2):
            block = gpu.host_gm.alloc(1, owner="fuzz-canary")
            block.write(0, _CANARY * (PAGE // 4))
            self.host_blocks.append(block)
        for vpn in (1, (regs.HOST_LOW_GM_SIZE >> regs.GTT_PAGE_SHIFT) - 1):
            frame, page = gpu.pages.alloc(owner="fuzz-canary")
            page[:] = _CANARY * (PAGE // 4)
            gpu.ggtt[vpn] = (frame << regs.GTT_PAGE_SHIFT) | regs.GEN8_PAGE_PRESENT
            self.host_blocks.append((vpn, frame, page))

    def _checked(self, owner: str) -> bool:
        """A host page the core registered (the backends register guest RAM under owners
        of their own: the victims' is checked through their ports), not the attacker's."""
        return (owner.startswith(_HOST_OWNERS)
                and not owner.startswith(f"vgpu{self.attacker.vgpu.id}-"))

    def _outside_attacker(self) -> np.ndarray:
        """Host GGTT entries that are neither the attacker's nor the host's shadow area."""
        gpu = self.gvt.gpu
        res = self.attacker.vgpu.resources
        keep = np.ones(len(gpu.ggtt), dtype=bool)
        for base, end in ((res.low_gm_base, res.low_gm_end), (res.high_gm_base, res.high_gm_end),
                          (gpu.host_gm.base, gpu.host_gm.base + gpu.host_gm.size)):
            keep[base >> regs.GTT_PAGE_SHIFT: end >> regs.GTT_PAGE_SHIFT] = False
        return keep

    def snapshot(self) -> None:
        sysmem = self.gvt.gpu.sysmem
        self.pages = {f: (owner, bytes(sysmem.page(f))) for f, owner in sysmem.frames().items()
                      if self._checked(owner)}
        self.ram = [self._ram(v) for v in self.victims]
        self.vregs = [bytes(v.vgpu.mmio.vreg) for v in self.victims]
        gpu = self.gvt.gpu
        self.ggtt = gpu.ggtt[self._outside_attacker()].copy()

    @staticmethod
    def _ram(v: Victim) -> list[bytes]:
        port = v.driver.port
        step = 1 << 20
        return [_digest(port.mem_read(a, step)) for a in range(0, v.vm.mem_size, step)]

    def check(self) -> list[str]:
        """What changed (empty: nothing)."""
        bad: list[str] = []
        sysmem = self.gvt.gpu.sysmem
        now = sysmem.frames()
        for frame, (owner, data) in self.pages.items():
            if now.get(frame) != owner:
                bad.append(f"host page {frame:#x} of {owner} was released or changed hands")
            elif bytes(sysmem.page(frame)) != data:
                bad.append(f"host page {frame:#x} of {owner} changed")
        for v, ram, vreg in zip(self.victims, self.ram, self.vregs, strict=True):
            if self._ram(v) != ram:
                bad.append(f"guest RAM of victim vGPU {v.vgpu.id} changed")
            if bytes(v.vgpu.mmio.vreg) != vreg:
                diff = np.flatnonzero(np.frombuffer(bytes(v.vgpu.mmio.vreg), np.uint32)
                                      != np.frombuffer(vreg, np.uint32))
                bad.append(f"registers of victim vGPU {v.vgpu.id} changed at "
                           f"{[hex(4 * int(i)) for i in diff[:8]]}")
        gpu = self.gvt.gpu
        assert self.ggtt is not None
        if not np.array_equal(gpu.ggtt[self._outside_attacker()], self.ggtt):
            bad.append("host GGTT entries outside the attacker's partition changed")
        scratch = sysmem.page(gpu.scratch_frame)
        if any(scratch):
            bad.append("the host's scratch page is not zero")
        return bad

    def remove(self) -> None:
        gpu = self.gvt.gpu
        for item in self.host_blocks:
            if isinstance(item, tuple):
                vpn, frame, page = item
                gpu.ggtt[vpn] = gpu.scratch_pte
                gpu.pages.free(frame, page)
            else:
                gpu.host_gm.free(item)
        self.host_blocks.clear()


# --- workloads ---------------------------------------------------------------------------------------
@attrs.define
class Workload:
    """One command buffer: the ring part, and what goes into the attacker's batches."""

    engine: int
    ring: list[int]
    #: index into :attr:`Attacker.batches` (-1: the GGTT batch) -> dwords.
    batches: dict[int, list[int]] = attrs.Factory(dict)


def _targets(a: Attacker, victims: list[Victim]) -> list[int]:
    """Addresses worth aiming at: other vGPUs', the host's, the attacker's own edges."""
    gpu = a.gvt.gpu
    res = a.vgpu.resources
    out = [0, 0x1000, regs.HOST_LOW_GM_SIZE - 8, gpu.host_gm.base + 0x1000,
           res.low_gm_base - 4, res.low_gm_end - 4, res.low_gm_end, res.high_gm_base - 8,
           res.high_gm_end - 4, res.high_gm_end, regs.GM_TOTAL - 4, regs.GM_TOTAL, 1 << 32,
           a.ggtt_data.gma, a.hwsp.gma, a.surfaces[0].gma, a.batches[0].gma]
    for v in victims:
        out += [c.gma for c in v.canaries]
    return out


def seed_workloads(a: Attacker) -> list[Callable[[random.Random], Workload]]:
    """Real workloads of the guest-driver model, parametrised by a random source."""
    s0, s1 = a.surfaces
    b0, b1 = a.batches

    def demo_rcs(r: random.Random) -> Workload:  # gvt demo's RCS round
        batch = []
        for i in range(r.randint(1, 16)):
            batch += cmd.store_dword(s0.gma + 4 * i, r.getrandbits(32))
        return Workload(RCS, cmd.batch_buffer_start(b0.gma)
                        + cmd.pipe_control(s0.gma + 0x100, r.getrandbits(32), notify=True),
                        {0: batch + cmd.batch_buffer_end()})

    def demo_bcs(r: random.Random) -> Workload:  # gvt demo's BCS round
        w, h = r.randint(1, SURFACE_W), r.randint(1, SURFACE_H)
        return Workload(BCS, cmd.color_blt(s0.gma, PITCH, 0, 0, w, h, r.getrandbits(32))
                        + cmd.src_copy_blt(s1.gma, PITCH, 0, 0, w, h, s0.gma, PITCH, 0, 0)
                        + cmd.flush_dw())

    def blits_in_batch(r: random.Random) -> Workload:
        batch = (cmd.setup_clip_blt(0, 0, SURFACE_W, SURFACE_H)
                 + cmd.color_blt(s1.gma, PITCH, 1, 1, 9, 9, r.getrandbits(32), clip=True)
                 + cmd.flush_dw(s0.gma + 8, r.getrandbits(32)) + cmd.batch_buffer_end())
        return Workload(BCS, cmd.batch_buffer_start(b1.gma), {1: batch})

    def chained(r: random.Random) -> Workload:  # first level, second level, chain, GGTT batch
        engine = r.choice([RCS, BCS])
        second = cmd.store_dword(s0.gma + 8, 2) + cmd.batch_buffer_end()
        first = (cmd.store_dword(s0.gma + 4, 1)
                 + cmd.batch_buffer_start(b1.gma, second_level=True)
                 + cmd.batch_buffer_start(b1.gma + PAGE))
        ggtt = cmd.store_dword(a.ggtt_data.gma, r.getrandbits(32), ggtt=True)
        ring = cmd.batch_buffer_start(b0.gma) + cmd.batch_buffer_start(a.ggtt_batch.gma,
                                                                       ppgtt=False)
        return Workload(engine, ring, {0: first, 1: second + [0] * (PAGE // 4 - len(second))
                                       + cmd.store_dword(s0.gma + 12, 3) + cmd.batch_buffer_end(),
                                       -1: ggtt + cmd.batch_buffer_end()})

    def registers(r: random.Random) -> Workload:
        engine = r.choice(ENGINES)
        reg = r.choice(SAFE_REGS[engine])
        ring = (cmd.load_register_imm([(reg, 0x2248)])
                + cmd.store_register_mem(reg, s0.gma + 0x40)
                + cmd.load_register_mem(reg, s0.gma + 0x40)
                + cmd.load_register_reg(reg, reg)
                + cmd.store_register_mem(reg, a.ggtt_data.gma + 0x40, ggtt=True))
        return Workload(engine, ring)

    def state_3d(r: random.Random) -> Workload:  # pipeline state as Mesa emits it, in a batch
        batch: list[int] = []
        specs = [s for s in C.for_engine(RCS).values()
                 if s.type is C.CommandType.GFX and s.execution is C.Execution.NO_EFFECT]
        for spec in r.sample(specs, r.randint(3, 12)):
            n = min(spec.max_length, max(spec.min_length, r.randint(2, 12)))
            head = spec.header | (0 if spec.fixed_length else n - C.LENGTH_BIAS)
            batch += [head] + [r.getrandbits(32) & 0xFFFF_F000 for _ in range(n - 1)]
        batch += cmd.pipe_control(s0.gma, r.getrandbits(32)) + cmd.batch_buffer_end()
        return Workload(RCS, cmd.batch_buffer_start(b0.gma), {0: batch})

    def semaphores(r: random.Random) -> Workload:
        engine = r.choice([RCS, BCS])
        value = r.getrandbits(16)
        batch = (cmd.store_dword(s0.gma + 0x80, value)
                 + cmd.semaphore_wait(s0.gma + 0x80, value)
                 + cmd.conditional_batch_buffer_end(s0.gma + 0x80, value + 1)
                 + cmd.store_dword(s0.gma + 0x84, 1) + cmd.batch_buffer_end())
        return Workload(engine, cmd.batch_buffer_start(b0.gma), {0: batch})

    def flip(r: random.Random) -> Workload:
        plane = r.randrange(6)
        head = C.header("MI_DISPLAY_FLIP", 3, plane << 19)
        surface = a.gpu.driver.report.framebuffer_gm  # type: ignore[union-attr]
        return Workload(r.choice([RCS, BCS]), [head, (PITCH >> 6) << 6, surface | r.randrange(2)])

    def video(r: random.Random) -> Workload:
        engine = r.choice([regs.ENGINE_VCS, regs.ENGINE_VCS2, regs.ENGINE_VECS])
        return Workload(engine, cmd.store_dword(s0.gma + 0x200, r.getrandbits(32))
                        + cmd.flush_dw(s0.gma + 0x208, 7) + cmd.arb_check())

    return [demo_rcs, demo_bcs, blits_in_batch, chained, registers, state_3d, semaphores, flip,
            video]


class Mutator:
    """Seeded mutations of a workload's dwords: bit flips, interesting values, headers
    from the table, changed lengths and address-space bits, insertions, deletions,
    batch starts aimed anywhere."""

    def __init__(self, rnd: random.Random, targets: list[int], batch_gmas: list[int]) -> None:
        self.r = rnd
        self.targets = targets
        self.batch_gmas = batch_gmas
        self.headers = [s.header for s in C.COMMANDS]

    def _value(self) -> int:
        r = self.r
        pick = r.randrange(6)
        if pick == 0:
            return r.getrandbits(32)
        if pick == 1:
            return r.choice([0, 0xFFFF_FFFF, 0x8000_0000, 1, 0x7FFF_FFFF])
        if pick in (2, 3):
            return r.choice(self.targets) & 0xFFFF_FFFC
        if pick == 4:
            return r.choice(self.headers) | r.randrange(16)
        return r.choice(self.batch_gmas) + 4 * r.randrange(64)

    def mutate(self, words: list[int]) -> list[int]:
        r = self.r
        w = list(words)
        for _ in range(r.randint(1, 4)):
            op = r.randrange(8)
            i = r.randrange(len(w)) if w else 0
            if op == 0 and w:
                w[i] ^= 1 << r.randrange(32)
            elif op == 1 and w:
                w[i] = self._value()
            elif op == 2 and w:  # the GGTT / PPGTT / second-level / predicate bits
                w[i] ^= r.choice([1 << 22, 1 << 8, 1 << 21, 1 << 15, 1 << 24, 1 << 2, 1])
            elif op == 3 and w:  # a length field off by a little
                w[i] = (w[i] & ~0xFF) | ((w[i] + r.choice([-2, -1, 1, 2, 7])) & 0xFF)
            elif op == 4:
                w[i:i] = [self._value() for _ in range(r.randint(1, 6))]
            elif op == 5 and len(w) > 1:
                del w[i:i + r.randint(1, 4)]
            elif op == 6:
                target = r.choice(self.targets + self.batch_gmas)
                w[i:i] = cmd.batch_buffer_start(target, ppgtt=r.random() < 0.5,
                                                second_level=r.random() < 0.3)
            elif op == 7:
                w[i:i] = cmd.store_dword(r.choice(self.targets), r.getrandbits(32),
                                         ggtt=r.random() < 0.7)
        return [x & 0xFFFF_FFFF for x in w]


# --- the campaign ----------------------------------------------------------------------------------
class Campaign:
    """The attacker, the victims, the canaries; :meth:`run` submits buffers."""

    def __init__(self, gvt: Gvt) -> None:
        self.gvt = gvt
        gvt.scheduler.watchdog_ns = WATCHDOG_NS
        self.stats = FuzzStats()
        v1 = _victim(gvt, "victim1")
        vm = gvt.create_vm(GUEST_MEM, name="attacker")
        vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
        v2 = _victim(gvt, "victim2")
        self.victims = [v1, v2]
        self.attacker = Attacker(gvt, vm, vgpu)
        self.attacker.load()
        gvt.activate_vgpu(vgpu)
        for v in self.victims:
            v.plant()
        # the attacker owns every engine before the snapshot (a victim's values were
        # saved into its registers when it last gave an engine up)
        for engine, ctx in self.attacker.contexts.items():
            self.attacker.gpu.run(ctx, cmd.noop(2), STUCK_S)
            assert self.gvt.scheduler.ownership[engine].owner is vgpu
        self.canaries = Canaries(gvt, self.attacker, self.victims)
        self.canaries.plant_host()
        self.canaries.snapshot()
        self._scanned0 = vgpu.execution.scanner.counters.commands_scanned

    @property
    def vgpu(self) -> Vgpu:
        return self.attacker.vgpu

    def submit(self, wl: Workload) -> str:
        """Run one buffer to its end; what became of it."""
        a = self.attacker
        for index, words in wl.batches.items():
            buf = a.ggtt_batch if index < 0 else a.batches[index]
            data = words[: buf.size // 4]
            buf.write(0, struct.pack(f"<{len(data)}I", *data))
        ctx = a.contexts[wl.engine]
        ex = self.vgpu.execution
        counters = ex.scanner.counters
        before = (counters.workloads_rejected, ex.stats.workloads_completed,
                  ex.stats.workloads_failed, ex.stats.workloads_dropped, len(ex.faults))
        reasons = Counter(counters.rejected_by_reason)
        ctx.emit(wl.ring[:1024])
        a.gpu.submit(ctx)
        self.stats.tried += 1
        deadline = time.monotonic() + STUCK_S
        while True:
            # one snapshot under the vGPU lock: the GPU thread counts a failed workload
            # and hangs its engine in one hold of that lock, so the guest never sees
            # the failure before the hang (and resets an engine that is not hung yet)
            with self.vgpu.lock:
                st = ex.stats
                ended = (st.workloads_completed + st.workloads_failed + st.workloads_dropped
                         > before[1] + before[2] + before[3])
                stopped = ended or self.vgpu.failsafe or wl.engine in ex.hung
            if stopped:
                break
            if time.monotonic() > deadline:
                raise CampaignError(f"a buffer neither completed nor failed in {STUCK_S} s: "
                                    f"{[hex(x) for x in wl.ring[:16]]}")
            a.gpu.wait(0.002)
        a.gpu.poll()
        if counters.workloads_rejected > before[0]:
            new = Counter(counters.rejected_by_reason) - reasons
            reason = next(iter(new))
            self.stats.rejected[reason] += 1
            outcome = f"rejected:{reason}"
        else:
            self.stats.accepted += 1
            if ex.stats.workloads_failed > before[2]:
                last = ex.faults[-1].reason if len(ex.faults) > before[4] or ex.faults else ""
                if last.startswith("watchdog"):
                    self.stats.watchdog += 1
                    outcome = "watchdog"
                else:
                    self.stats.engine_faults += 1
                    outcome = "engine-fault"
            else:
                self.stats.completed += 1
                outcome = "completed"
        self._recover(wl.engine)
        return outcome

    def _recover(self, engine: int) -> None:
        a = self.attacker
        if self.vgpu.failsafe:  # the host resets the vGPU; the guest loads its driver again
            self.stats.failsafes += 1
            self.gvt.reset_vgpu(self.vgpu, dmlr=True)
            a.load()
            return
        ex = self.vgpu.execution
        if engine in ex.hung:  # the guest resets its engine and skips what it submitted
            self.stats.hangs += 1
            a.gpu.reset_engine(engine)
            ctx = a.contexts[engine]
            ctx.lrc.write(PAGE + 4 * (lrc.CTX_RING_HEAD + 1), struct.pack("<I", ctx.tail))
        if engine in ex.hung:
            raise CampaignError(f"engine {engine} stays hung after the guest reset it")

    def run_mutations(self, count: int, seed: int) -> None:
        """``count`` mutated workloads of the guest-driver model, from ``seed``."""
        r = random.Random(seed)
        for _ in range(count):
            a = self.attacker
            seeds = seed_workloads(a)
            wl = r.choice(seeds)(r)
            mut = Mutator(r, _targets(a, self.victims),
                          [b.gma for b in a.batches] + [a.ggtt_batch.gma])
            if r.random() < 0.85:
                if wl.batches and r.random() < 0.6:
                    key = r.choice(list(wl.batches))
                    wl.batches[key] = mut.mutate(wl.batches[key])
                else:
                    wl.ring = mut.mutate(wl.ring)
            self.submit(wl)

    def finish(self) -> None:
        """Every invariant of the campaign; raises :class:`CampaignError`."""
        sched = self.gvt.scheduler
        try:
            if sched.stats.internal_errors or sched.stats.observer_errors:
                raise CampaignError(f"host exceptions in the GPU thread: {sched.last_error}")
            bad = self.canaries.check()
            if bad:
                raise CampaignError("; ".join(bad[:10]))
            owner = f"vgpu{self.vgpu.id}-shadow"
            deadline = time.monotonic() + STUCK_S
            while self.vgpu.execution.pending() and time.monotonic() < deadline:
                time.sleep(0.01)
            held = self.gvt.gpu.host_gm.in_use(owner)
            if held:
                raise CampaignError(f"the attacker holds {held} bytes of host GM with nothing "
                                    "queued")
            for v in self.victims:
                if v.vgpu.failsafe or v.vgpu.execution.faults:
                    raise CampaignError(f"victim vGPU {v.vgpu.id} was disturbed")
        finally:
            self.stats.commands_scanned = (self.vgpu.execution.scanner.counters.commands_scanned
                                           - self._scanned0)
            self.canaries.remove()


def workload_strategy(engine_ids: tuple[int, ...] = ENGINES) -> Any:
    """Hypothesis: a workload whose ring and batch are commands drawn from the table of its
    engine, with random flags, lengths and operands, addresses among the interesting ones."""
    from hypothesis import strategies as st

    u32 = st.integers(0, 0xFFFF_FFFF)

    @st.composite
    def commands(draw: Any, engine: int) -> list[int]:
        specs = list(C.for_engine(engine).values())
        out: list[int] = []
        for _ in range(draw(st.integers(1, 8))):
            spec = draw(st.sampled_from(specs))
            hi = min(spec.max_length + 1, spec.min_length + 8)
            n = spec.fixed_length or draw(st.integers(max(1, spec.min_length - 1), hi))
            flags = draw(u32) & ~spec.length_mask & ((1 << C.MI_OPCODE_SHIFT) - 1
                                                    if spec.type is C.CommandType.MI else 0xFFFF)
            head = spec.header | flags | (0 if spec.fixed_length else
                                          (n - C.LENGTH_BIAS) & spec.length_mask)
            body = draw(st.lists(st.one_of(u32, st.sampled_from([0, 0x1000, 0x8000_0000])),
                                 min_size=n - 1, max_size=n - 1))
            out += [head, *body]
        return out

    @st.composite
    def workload(draw: Any) -> tuple[int, list[int], list[int], bool]:
        engine = draw(st.sampled_from(engine_ids))
        return (engine, draw(commands(engine)), draw(commands(engine)), draw(st.booleans()))

    return workload()


def run_drawn(campaign: Campaign, engine: int, ring: list[int], batch: list[int],
              via_batch: bool) -> str:
    """Submit a hypothesis-drawn workload (its batch started from the ring, or not)."""
    a = campaign.attacker
    if via_batch:
        wl = Workload(engine, ring + cmd.batch_buffer_start(a.batches[0].gma),
                      {0: batch + cmd.batch_buffer_end()})
    else:
        wl = Workload(engine, ring + batch)
    return campaign.submit(wl)


