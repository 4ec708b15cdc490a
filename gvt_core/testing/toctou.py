"""Time-of-check / time-of-use: a guest rewriting its commands after it submitted them.

The scanner audits copies (the ring section copied at the ELSP write, each
batch copied before it is decoded) and the engine executes those copies, so
what a guest writes into its ring or batches after the copy never runs. Two
scenarios, usable on any backend:

* :func:`rewrite_after_scan`: the batch waits on a semaphore in guest memory;
  once the host has scanned the workload the guest rewrites the batch (and its
  ring) into a command the scanner would refuse, then releases the semaphore.
  The original runs, the rewritten command never does.
* :func:`race_rewrites`: a second writer (another thread on the same guest, or
  a second vCPU where the backend has one) flips the batch between a benign
  and a hostile version while the guest submits it over and over. Each round
  either runs the benign version or is refused by the scanner (the hostile
  one, seen before the copy); the hostile command never executes.

The hostile command is an MI_STORE_DATA_IMM with the GGTT bit, in a PPGTT
(non-privileged) batch, aimed at a victim guest's canary page: refused by the
scanner as a privileged form (-EPERM: the engine hangs, no failsafe).
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import attrs

from gvt_core.guest import commands as cmd
from gvt_core.guest.gpu import GuestBuffer, GuestContext, GuestGpu
from gvt_core.guest.port import GuestPort, GuestVm
from gvt_core.hw import regs
from gvt_core.hw.engine import context as lrc

GOOD, BAD = 0x600D_600D, 0x0BAD_0BAD
CANARY = 0x5A5A_A5A5
PAGE = regs.GTT_PAGE_SIZE


@attrs.define(eq=False)
class Target:
    """A victim's page (GGTT) that must never change."""

    buf: GuestBuffer

    def plant(self) -> None:
        self.buf.write_dwords(0, [CANARY] * (PAGE // 4))

    def intact(self) -> bool:
        return self.buf.read_dwords(0, PAGE // 4) == (CANARY,) * (PAGE // 4)


def hostile(target: Target, value: int = BAD) -> list[int]:
    """The command that must never run: a GGTT store into the victim's page."""
    return cmd.store_dword(target.buf.gma + 0x10, value, ggtt=True)


def _bytes(words: list[int]) -> bytes:
    return struct.pack(f"<{len(words)}I", *words)


def _wait_end(vgpu: Any, gpu: GuestGpu, engine: int, before: int, timeout: float) -> None:
    ex = vgpu.execution
    deadline = time.monotonic() + timeout
    while True:
        # under the vGPU lock: the GPU thread counts a failure and hangs the engine in
        # one hold of it, so the caller never sees the one without the other
        with vgpu.lock:
            st = ex.stats
            ended = st.workloads_completed + st.workloads_failed > before or engine in ex.hung
        if ended:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"the workload did not end in {timeout} s: {st}")
        gpu.wait(0.005)
    gpu.poll()


def _ended(vgpu: Any) -> int:
    st = vgpu.execution.stats
    return int(st.workloads_completed + st.workloads_failed)


def rewrite_after_scan(vgpu: Any, gpu: GuestGpu, ctx: GuestContext, target: Target,
                       timeout: float = 30.0) -> None:
    """The first scenario of the module docstring; raises AssertionError if it fails."""
    ppgtt = ctx.ppgtt
    out, flag, batch = ppgtt.alloc(PAGE), ppgtt.alloc(PAGE), ppgtt.alloc(PAGE)
    gate = cmd.semaphore_wait(flag.gma, 1)
    batch.write(0, _bytes(gate + cmd.store_dword(out.gma, GOOD) + cmd.batch_buffer_end()))
    scanner = vgpu.execution.scanner.counters
    scanned = scanner.workloads_scanned
    start = ctx.tail
    before = _ended(vgpu)
    sched = vgpu.gvt.scheduler
    watchdog, sched.watchdog_ns = sched.watchdog_ns, 60_000_000_000  # it waits on purpose
    try:
        ctx.emit(cmd.batch_buffer_start(batch.gma))
        gpu.submit(ctx)
        deadline = time.monotonic() + timeout
        while scanner.workloads_scanned == scanned:  # the host copied and audited it
            if time.monotonic() > deadline:
                raise AssertionError("the workload was never scanned")
            time.sleep(0.001)
        # now the guest rewrites its batch and its ring section
        batch.write(len(gate) * 4, _bytes(hostile(target) + cmd.batch_buffer_end()))
        ring_words = cmd.batch_buffer_start(target.buf.gma, ppgtt=False)
        ctx.ring.write(start, _bytes(ring_words))
        flag.write_dwords(0, [1])
        _wait_end(vgpu, gpu, ctx.engine, before, timeout)
    finally:
        sched.watchdog_ns = watchdog
    assert batch.read_dwords(len(gate) * 4, 4) == tuple(hostile(target)), "the rewrite happened"
    assert out.read_dwords(0, 1) == (GOOD,), "the audited batch ran"
    assert target.intact(), "the rewritten command ran"
    assert not vgpu.execution.faults and not vgpu.failsafe


@attrs.define
class RaceResult:
    rounds: int = 0
    #: the benign version ran.
    ran_benign: int = 0
    #: the scanner copied the hostile version (or a torn mix with its GGTT bit): refused.
    refused: int = 0
    #: the scanner copied a torn mix without the GGTT bit: a PPGTT store at the victim's
    #: address, unmapped in the guest's own PPGTT, so the engine faulted.
    torn: int = 0
    rewrites: int = 0


def race_rewrites(vgpu: Any, gpu: GuestGpu, ctx: GuestContext, writer: GuestPort,
                  target: Target, rounds: int, timeout: float = 30.0) -> RaceResult:
    """The second scenario of the module docstring, ``writer`` being the second writer's
    port (a second vCPU's, or the guest's own used from another thread)."""
    ppgtt = ctx.ppgtt
    out, batch = ppgtt.alloc(PAGE), ppgtt.alloc(PAGE)
    # the two versions differ in the GGTT bit and the address only; the second writer's
    # stores may tear them (the scanner then audits the mix it copied)
    benign = _bytes(cmd.store_dword(out.gma, GOOD) + cmd.batch_buffer_end())
    evil = _bytes(hostile(target, GOOD) + cmd.batch_buffer_end())
    assert len(benign) == len(evil)
    batch.write(0, benign)
    result = RaceResult()
    stop = threading.Event()
    errors: list[BaseException] = []

    def rewrite() -> None:
        try:
            while not stop.is_set():
                writer.mem_write(batch.gpa, evil)
                writer.mem_write(batch.gpa, benign)
                result.rewrites += 2
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    thread = threading.Thread(target=rewrite, name="toctou-writer", daemon=True)
    thread.start()
    ex = vgpu.execution
    try:
        for _ in range(rounds):
            out.write_dwords(0, [0])
            before = _ended(vgpu)
            ctx.emit(cmd.batch_buffer_start(batch.gma))
            gpu.submit(ctx)
            _wait_end(vgpu, gpu, ctx.engine, before, timeout)
            result.rounds += 1
            if ctx.engine in ex.hung:
                reason = ex.faults[-1].reason
                if reason.startswith("privileged-command"):
                    result.refused += 1
                else:
                    assert reason.startswith("engine fault: address not mapped"), reason
                    result.torn += 1
                gpu.reset_engine(ctx.engine)  # and the guest skips what it submitted
                ctx.lrc.write(PAGE + 4 * (lrc.CTX_RING_HEAD + 1), struct.pack("<I", ctx.tail))
            else:
                assert out.read_dwords(0, 1) == (GOOD,)
                result.ran_benign += 1
            assert target.intact(), "the rewritten command ran"
            assert not vgpu.failsafe
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    return result


def race_on_host(gvt: Any, writer_port: Callable[[GuestVm], GuestPort], rounds: int,
                 engines: tuple[int, ...] = (regs.ENGINE_RCS, regs.ENGINE_BCS)) -> RaceResult:
    """:func:`race_rewrites` on a fresh victim and attacker of ``gvt``, the second writer's
    port chosen by ``writer_port`` (the attacker VM's second vCPU, or its own port used
    from another thread); every guest is destroyed afterwards."""
    from gvt_core.guest.driver import GuestDriver

    vms: list[GuestVm] = []
    total = RaceResult()
    try:
        gpus = []
        for name in ("victim", "attacker"):
            vm = gvt.create_vm(32 << 20, name=name)
            vms.append(vm)
            vgpu = gvt.create_vgpu(gvt.smallest_type, vm)
            driver = GuestDriver(vm.port(), fb_width=32, fb_height=16, ring_pages=2)
            driver.load()
            gvt.activate_vgpu(vgpu)
            gpus.append((vgpu, GuestGpu(driver)))
        (_, victim), (vgpu, gpu) = gpus
        target = Target(victim.ggtt_buffer(PAGE))
        target.plant()
        for engine in engines:
            r = race_rewrites(vgpu, gpu, gpu.context(engine), writer_port(vms[1]), target,
                              rounds)
            for field in ("rounds", "ran_benign", "refused", "torn", "rewrites"):
                setattr(total, field, getattr(total, field) + getattr(r, field))
    finally:
        for v in list(gvt.vgpus.values()):
            gvt.destroy_vgpu(v)
        for vm in vms:
            vm.close()
    return total
