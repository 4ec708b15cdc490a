"""Guest graphics memory for scanner tests: GGTT and one context PPGTT, page by page.

A strict model of what :class:`CommandReader` promises: only mapped pages read,
anything else is a :class:`GmaFault`; a read never crosses a page and must be
dword aligned. It counts reads so tests can see the walker fetched lazily.
"""

from __future__ import annotations

import numpy as np

from gvt_core.device.execution.scanner import AddressSpace
from gvt_core.errors import GmaFault

PAGE = 4096


class GuestGm:
    def __init__(self) -> None:
        self.pages: dict[tuple[AddressSpace, int], np.ndarray] = {}
        self.reads: list[tuple[AddressSpace, int, int]] = []

    def map(self, space: AddressSpace, gma: int, nbytes: int) -> None:
        first, last = gma // PAGE, (gma + nbytes - 1) // PAGE
        for p in range(first, last + 1):
            self.pages.setdefault((space, p), np.zeros(PAGE // 4, dtype=np.uint32))

    def unmap(self, space: AddressSpace, gma: int) -> None:
        self.pages.pop((space, gma // PAGE), None)

    def write(self, space: AddressSpace, gma: int, dwords: list[int] | np.ndarray) -> None:
        """Store dwords (mapping the pages they need)."""
        data = np.asarray(dwords, dtype=np.uint64).astype(np.uint32)
        self.map(space, gma, max(data.size * 4, 4))
        for i, v in enumerate(data.tolist()):
            a = gma + 4 * i
            self.pages[(space, a // PAGE)][(a % PAGE) // 4] = v

    def dword(self, space: AddressSpace, gma: int) -> int:
        return int(self.pages[(space, gma // PAGE)][(gma % PAGE) // 4])

    def read(self, space: AddressSpace, gma: int, nbytes: int) -> np.ndarray:
        assert gma % 4 == 0 and nbytes % 4 == 0 and nbytes > 0, (gma, nbytes)
        assert gma // PAGE == (gma + nbytes - 1) // PAGE, f"read crosses a page: {gma:#x}+{nbytes}"
        self.reads.append((space, gma, nbytes))
        page = self.pages.get((space, gma // PAGE))
        if page is None:
            raise GmaFault(space.value, gma, nbytes)
        off = (gma % PAGE) // 4
        return page[off:off + nbytes // 4].copy()
