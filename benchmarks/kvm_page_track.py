"""``kvm_page_track``: cost per guest page of write-protecting and releasing it on KVM.

kvmgt tracks writes with read-only memslots; changing protection means
deleting and re-creating slots. Measured per page for 1, 64 and 512 pages:
adjacent pages inside one ``page_track_batch`` (one read-only slot),
scattered pages (every other frame: one slot each) in one batch, and the
unbatched path (one slot update per call). Baseline: one unbatched
protect + unprotect of a single page, measured in the same run.
"""

from __future__ import annotations

import time

from kvm_mmio import _NullOps, _unavailable

from harness import Benchmark, Result


def run(quick: bool) -> list[Result]:
    from gvt_core.hw.sysmem import SystemMemory
    from gvt_core.mpt.ops import HostContext
    from gvt_core.testing.plugin import VgpuToken
    from gvt_kvmgt import KvmgtBackend

    repeat = 3 if quick else 9
    backend = KvmgtBackend()
    host = HostContext(ops=_NullOps(), sysmem=SystemMemory())
    backend.host_init(host)
    vm = backend.create_vm(host, 64 << 20, "bench-track")
    results: list[Result] = []
    try:
        h = backend.attach_vgpu(VgpuToken(id=1), vm)
        vm.port().store(0x1000, 1, 4)  # the guest has run: its memory is mapped in KVM

        def cycle(gfns: list[int], batched: bool, times: int = repeat) -> float:
            best = float("inf")
            for _ in range(times):
                t0 = time.perf_counter()
                if batched:
                    with backend.page_track_batch(h):
                        for g in gfns:
                            backend.enable_page_track(h, g)
                    with backend.page_track_batch(h):
                        for g in gfns:
                            backend.disable_page_track(h, g)
                else:
                    for g in gfns:
                        backend.enable_page_track(h, g)
                    for g in gfns:
                        backend.disable_page_track(h, g)
                best = min(best, time.perf_counter() - t0)
            return best / len(gfns) * 1e6

        first = 0x1000
        # KVM waits for an SRCU grace period on each slot change; on this nested, shared
        # machine that wait is sometimes a whole scheduler tick (~4 ms) instead of tens of
        # microseconds, so warm up and keep the best of several cycles.
        cycle([first], batched=False, times=5)
        base = cycle([first], batched=False, times=2 * repeat)
        for n in (1, 64, 512):
            adjacent = list(range(first, first + n))
            scattered = list(range(first, first + 2 * n, 2))
            results.append(Result(f"kvm_page_track_adjacent_{n}", cycle(adjacent, True), "us/page", base,
                                  note=f"{n} adjacent pages, batched: one read-only slot"))
            results.append(Result(f"kvm_page_track_scattered_{n}", cycle(scattered, True), "us/page", base,
                                  note=f"{n} pages one frame apart, batched: {n} read-only slots"))
            if n <= 64 or not quick:
                times = repeat if n <= 64 else 2
                results.append(Result(f"kvm_page_track_unbatched_{n}", cycle(adjacent, False, times), "us/page",
                                      base, note=f"{n} adjacent pages, one slot update per call"))
    finally:
        vm.close()
        backend.host_exit(host)
    return results


BENCHMARKS = [Benchmark("kvm_page_track", run, _unavailable)]
