"""The cost model: how much GPU time a command takes on the simulated GEN8 engines.

Under the default simulated clock the host's GPU time is this model, not the
host CPU's speed: a workload takes the same simulated time on every machine,
so scheduling, fairness and the watchdog are deterministic. The figures are
round numbers of the right order for a Broadwell GT2 (a ~1 GHz command
streamer, ~10 GB/s each way for the blitter), not measurements:

* every command: ``command_ns`` plus ``dword_ns`` per dword fetched;
* a memory access by an MI command (store, load, post-sync write, semaphore
  poll): ``mem_access_ns`` plus ``byte_ns`` per byte;
* a batch-buffer start: ``batch_start_ns`` (a fresh command fetch);
* a flush (PIPE_CONTROL, MI_FLUSH_DW): ``flush_ns``;
* a blit: ``blit_setup_ns`` plus ``blit_byte_ns`` per byte read and per byte
  written (a fill moves width x height x cpp bytes, a copy twice that);
* loading and saving a context on a switch: ``context_switch_ns``;
* a poll of an unsatisfied MI_SEMAPHORE_WAIT keeps the engine busy for the
  rest of its time slice (it spins).

A 1920x1080 32-bit fill costs about 0.83 ms, a copy of it 1.66 ms.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class CostModel:
    """Nanoseconds of GPU time per unit of work (see the module docstring)."""

    command_ns: int = 40
    dword_ns: int = 2
    mem_access_ns: int = 100
    byte_ns: float = 0.1
    batch_start_ns: int = 1000
    flush_ns: int = 200
    blit_setup_ns: int = 500
    blit_byte_ns: float = 0.1
    context_switch_ns: int = 2000

    def command(self, dwords: int) -> int:
        return self.command_ns + self.dword_ns * dwords

    def memory(self, nbytes: int) -> int:
        return self.mem_access_ns + int(self.byte_ns * nbytes)

    def blit(self, bytes_read: int, bytes_written: int) -> int:
        return self.blit_setup_ns + int(self.blit_byte_ns * (bytes_read + bytes_written))


#: the model every engine uses unless a host is built with another.
DEFAULT_COST_MODEL = CostModel()
#: BDW command-streamer timestamps tick at 12.5 MHz (80 ns per tick).
TIMESTAMP_NS_PER_TICK = 80
