"""Execution: guests' GPU work from the ELSP write to the completion interrupt.

``submission`` (per-vGPU state and the ELSP sink), ``execlist`` (virtual
execlists, CSB, context-switch interrupt), ``workload`` (taking a workload
from the guest's context and ring; write-back), ``stages`` (the prepare
pipeline between "taken" and "executed", where the command scanner plugs
in), ``scheduler`` (the host's GPU thread, owner switches, watchdog),
``policy`` (scheduling policies), ``mmio_context`` (the MMIO context
switch), ``trace`` (Chrome trace events). The engines themselves are the
host GPU's (:mod:`gvt_core.hw.engine`); the clock is the host's, shared with
the display (:mod:`gvt_core.hw.clock`).
"""
