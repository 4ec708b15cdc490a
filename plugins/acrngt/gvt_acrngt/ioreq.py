"""The request loop of one User VM: acrn-dm's ``vm_loop`` for the vGPU.

One thread per VM, the default ioreq client's:

1. ``ACRN_IOCTL_ATTACH_IOREQ_CLIENT`` blocks until the HSM dispatched a
   request to the client (ENODEV once the client is destroyed: by us at
   close, or by the HSM when the VM is destroyed);
2. every slot that is PROCESSING and not ``kernel_handled`` is served by the
   :class:`~gvt_acrngt.router.RequestRouter` (its value written into the slot);
3. ``ACRN_IOCTL_NOTIFY_REQUEST_FINISH`` for that vCPU, exactly once per request.

The discipline the HSM expects: the client never writes ``processed`` (the
HSM sets COMPLETE when notified, the hypervisor sets FREE), never touches a
slot that is PENDING, COMPLETE, FREE or handled by a kernel client, and
completes each request it was given once. An error while serving a request
still completes it (a read answers all ones) and puts the vGPU into failsafe;
the loop goes on serving the VM.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable

from gvt_acrngt import abi
from gvt_acrngt.hsm import HsmFile
from gvt_acrngt.router import RequestRouter
from gvt_core.errors import HypervisorCallError

log = logging.getLogger(__name__)

_PROCESSING = abi.ACRN_IOREQ_STATE_PROCESSING


class RequestLoop:
    """The thread serving one VM's requests."""

    def __init__(
        self,
        hsm: HsmFile,
        buffer: abi.acrn_io_request_buffer,
        vmid: int,
        vcpu_num: int,
        router: RequestRouter,
        name: str,
        on_failure: Callable[[str], None],
        on_end: Callable[[str], None],
    ) -> None:
        self.hsm = hsm
        self.buffer = buffer
        self.vmid = vmid
        self.vcpu_num = vcpu_num
        self.router = router
        self.on_failure = on_failure
        self.on_end = on_end
        self.served = 0
        self.end_reason = ""
        self._thread = threading.Thread(target=self._run, name=f"acrngt-ioreq-{name}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        slots = self.buffer.req_slot
        hsm, router, vmid = self.hsm, self.router, self.vmid
        try:
            while True:
                try:
                    hsm.attach_client()
                except HypervisorCallError as exc:
                    self._end("the ioreq client was destroyed" if exc.errno == errno.ENODEV
                              else str(exc))
                    return
                for vcpu in range(self.vcpu_num):
                    slot = slots[vcpu]
                    if slot.processed != _PROCESSING or slot.kernel_handled:
                        continue
                    try:
                        router.handle(slot)
                    except Exception as exc:  # any failure: failsafe, go on
                        router.answer_failed(slot)
                        self.on_failure(f"{type(exc).__name__}: {exc}")
                    self.served += 1
                    try:
                        hsm.notify_finish(vmid, vcpu)
                    except HypervisorCallError as exc:
                        self._end(f"completing vCPU {vcpu}'s request failed: {exc}")
                        return
        except BaseException as exc:  # the loop must never die silently
            log.exception("acrngt request loop of User VM %d failed", vmid)
            self._end(f"the request loop failed: {type(exc).__name__}: {exc}")

    def _end(self, reason: str) -> None:
        self.end_reason = reason
        self.on_end(reason)
