"""Standalone guest programs: C compiled freestanding with gcc, loaded flat into guest RAM.

No Python runs in such a program's loop: the vCPU executes compiled code
that probes the PCI bus, talks to the vGPU's BAR0 and takes interrupts; the
VMM only serves its exits. The bundled program ``vgpu_bringup.c`` brings up a
vGPU as a guest i915 would (see its header comment).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path

import attrs

from gvt_core.errors import GvtError
from gvt_core.hw import regs
from gvt_kvmgt import stub
from gvt_kvmgt.vm import KvmGuestVm, ProgramStatus

#: where the bring-up program and its data live in guest RAM.
LOAD_ADDR = 0x10_0000
RESULT_ADDR = 0x18_0000
WORK_ADDR = 0x20_0000
#: guest RAM the program needs (code, results, page tables and data pages).
MIN_RAM = 4 << 20
BRINGUP_GGTT_ENTRIES = 4
BRINGUP_MSI_VECTOR = 0x41

#: the step numbers vgpu_bringup.c reports, by name.
BRINGUP_STEPS = {
    1: "probe 00:02.0",
    2: "absent function reads all ones",
    3: "program BAR0",
    4: "enable memory decoding",
    5: "PVINFO magic",
    6: "PVINFO version",
    7: "ballooning ranges",
    8: "GGTT write and read back",
    9: "build a 4-level PPGTT",
    10: "announce it through g2v_notify",
    11: "rewrite PTEs (trapped writes)",
    12: "enable MSI and a GT interrupt",
    13: "wait for the MSI",
}


class GuestBuildError(GvtError):
    """A guest program could not be compiled (no gcc, or a compile error)."""


def _source(name: str) -> str:
    return resources.files("gvt_kvmgt.guest_programs").joinpath(name).read_text()


def _c_const(value: int) -> str:
    return f"{value:#x}ull"


def bringup_defines(bar0: int) -> dict[str, str]:
    """The -D parameters of vgpu_bringup.c: addresses, ports and register names."""
    names = (
        "VGT_PVINFO_PAGE", "PVINFO_MAGIC", "VGT_MAGIC", "PVINFO_VERSION_MAJOR",
        "PVINFO_AVAIL_RS_MAPPABLE_BASE", "PVINFO_AVAIL_RS_MAPPABLE_SIZE",
        "PVINFO_AVAIL_RS_NONMAPPABLE_BASE", "PVINFO_AVAIL_RS_NONMAPPABLE_SIZE",
        "GTT_START_OFFSET", "PVINFO_PDP0_LO", "PVINFO_G2V_NOTIFY",
        "VGT_G2V_PPGTT_L4_PAGE_TABLE_CREATE", "GEN8_GT_ISR_BASE", "IRQ_IMR", "IRQ_IER",
        "GEN8_MASTER_IRQ", "GEN8_MASTER_IRQ_CONTROL",
    )
    out = {n: _c_const(getattr(regs, n)) for n in names}
    out.update(
        LOAD_ADDR=_c_const(LOAD_ADDR),
        RESULT_ADDR=_c_const(RESULT_ADDR),
        WORK_ADDR=_c_const(WORK_ADDR),
        BAR0=_c_const(bar0),
        STEP_PORT=str(stub.PROGRAM_STEP_PORT),
        FAIL_PORT=str(stub.PROGRAM_FAIL_PORT),
        DONE_PORT=str(stub.PROGRAM_DONE_PORT),
        MSI_VECTOR=str(BRINGUP_MSI_VECTOR),
        GGTT_ENTRIES=str(BRINGUP_GGTT_ENTRIES),
        MB_IRQ_COUNT=str(stub.MB_IRQ_COUNT),
        MB_IRQ_RING=str(stub.MB_IRQ_RING),
    )
    return out


def build_flat(source: str, defines: dict[str, str], load_addr: int, gcc: str | None = None) -> bytes:
    """Compile freestanding C to a flat image linked at ``load_addr`` (entry = first byte)."""
    gcc = gcc or shutil.which("gcc")
    objcopy = shutil.which("objcopy")
    if gcc is None or objcopy is None:
        raise GuestBuildError("building a guest program needs gcc and objcopy (binutils) on PATH")
    with tempfile.TemporaryDirectory(prefix="gvt-kvmgt-") as tmp:
        d = Path(tmp)
        (d / "prog.c").write_text(source)
        (d / "link.ld").write_text(_source("link.ld").replace("LOAD_ADDR", f"{load_addr:#x}"))
        cmd = [
            gcc, "-O2", "-ffreestanding", "-fno-pic", "-fno-pie", "-no-pie", "-nostdlib",
            "-static", "-mno-red-zone", "-mgeneral-regs-only", "-fno-stack-protector",
            "-fcf-protection=none", "-fno-asynchronous-unwind-tables", "-Wall", "-Werror",
            *(f"-D{k}={v}" for k, v in defines.items()),
            "-Wl,-T," + str(d / "link.ld"), "-Wl,--build-id=none",
            "-o", str(d / "prog.elf"), str(d / "prog.c"),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise GuestBuildError(f"gcc failed building the guest program:\n{done.stderr}")
        subprocess.run([objcopy, "-O", "binary", str(d / "prog.elf"), str(d / "prog.bin")], check=True)
        return (d / "prog.bin").read_bytes()


def build_bringup(bar0: int, gcc: str | None = None) -> bytes:
    return build_flat(_source("vgpu_bringup.c"), bringup_defines(bar0), LOAD_ADDR, gcc)


@attrs.define(eq=False)
class ProgramRun:
    """A guest program running on one vCPU in its own (vCPU) thread."""

    vm: KvmGuestVm
    vcpu: int = 0
    status: ProgramStatus | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self, image: bytes, load_addr: int) -> None:
        if load_addr + len(image) > self.vm.mem_size:
            raise ValueError("the program does not fit in guest RAM")
        self.vm.write(load_addr, image)
        runner = self.vm.runners[self.vcpu]

        def body() -> None:
            try:
                self.status = runner.run_program(load_addr, 0)
            except BaseException as exc:  # handed to join()
                self.error = exc

        self.thread = threading.Thread(target=body, name=f"{self.vm.name}-vcpu{self.vcpu}", daemon=True)
        self.thread.start()

    @property
    def steps(self) -> list[int]:
        return list(self.vm.runners[self.vcpu].steps)

    def wait_step(self, step: int, timeout: float) -> bool:
        """Poll until the program reported ``step`` (or ended)."""
        import time

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if step in self.vm.runners[self.vcpu].steps or (self.thread and not self.thread.is_alive()):
                return step in self.vm.runners[self.vcpu].steps
            time.sleep(0.001)
        return False

    def join(self, timeout: float) -> ProgramStatus:
        assert self.thread is not None
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"guest program still running after {timeout} s (steps {self.steps})")
        if self.error is not None:
            raise self.error
        assert self.status is not None
        return self.status
