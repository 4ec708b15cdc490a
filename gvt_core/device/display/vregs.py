"""The display subsystem's view of a vGPU's virtual registers.

Display models read and update registers that belong to the register file
(plane control, pipe timings, straps, hotplug status). They reach it only
through :class:`RegisterView`, which the vGPU's MMIO layer provides
(``Mmio.get32`` / ``Mmio.set32``); tests can hand in any object with the two
methods.
"""

from __future__ import annotations

from typing import Protocol

import attrs

_DWORD = 0xFFFF_FFFF


class RegisterView(Protocol):
    def get32(self, offset: int) -> int:
        """The virtual register dword at MMIO ``offset``."""
        ...

    def set32(self, offset: int, value: int) -> None:
        """Store ``value`` in the virtual register at MMIO ``offset``."""
        ...


@attrs.frozen
class RegUpdate:
    """Read-modify-write of one register: clear ``clear`` bits, then set ``set`` bits."""

    offset: int
    clear: int = 0
    set: int = 0

    def apply(self, regs: RegisterView) -> None:
        regs.set32(self.offset, ((regs.get32(self.offset) & ~self.clear) | self.set) & _DWORD)


def apply_all(regs: RegisterView, updates: list[RegUpdate]) -> None:
    for update in updates:
        update.apply(regs)
