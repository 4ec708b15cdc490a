"""sim's DMA table against a plain model: refcounts, addresses, what the GPU reaches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gvt_core.errors import DmaFault, DmaMapError
from gvt_core.hw.sysmem import PAGE_SHIFT, PAGE_SIZE, SystemMemory
from gvt_core.mpt.loader import load_backend
from gvt_core.mpt.ops import HostContext
from gvt_core.testing.plugin import VgpuToken
from gvt_core.testing.recording import RecordingOps

SIZE_2M = 2 << 20
PAGES = 2048  # an 8 MiB guest: four 2 MiB chunks


class DmaModel(RuleBasedStateMachine):
    """Random maps, bulk maps, pins and unmaps; the model is {(gfn, size): (addr, refs)}."""

    dma_mode = "iommu"

    def __init__(self) -> None:
        super().__init__()
        loaded = load_backend("sim", dma=self.dma_mode)
        self.mpt = loaded.mpt
        self.sysmem = SystemMemory()
        ctx = HostContext(ops=RecordingOps(), sysmem=self.sysmem)
        self.mpt.host_init(ctx)
        self.vm: Any = self.mpt.create_vm(ctx, PAGES * PAGE_SIZE, "model")
        self.h = self.mpt.attach_vgpu(VgpuToken(1), self.vm)
        self.live: dict[tuple[int, int], list[int]] = {}  # key -> [addr, refs]
        self.dead: set[int] = set()
        # every guest page holds its own number, so a reached page identifies itself
        for g in range(PAGES):
            self.mpt.write_gpa(self.h, g << PAGE_SHIFT, g.to_bytes(4, "little"))

    def _take(self, key: tuple[int, int], addr: int) -> None:
        if key in self.live:
            assert self.live[key][0] == addr, "a live mapping changed its address"
            self.live[key][1] += 1
        else:
            self.live[key] = [addr, 1]

    @rule(gfn=st.integers(0, PAGES - 1))
    def map_4k(self, gfn: int) -> None:
        self._take((gfn, PAGE_SIZE), self.mpt.dma_map_guest_page(self.h, gfn, PAGE_SIZE))

    @rule(chunk=st.integers(0, PAGES // 512 - 1))
    def map_2m(self, chunk: int) -> None:
        gfn = chunk * 512
        self._take((gfn, SIZE_2M), self.mpt.dma_map_guest_page(self.h, gfn, SIZE_2M))

    @rule(gfns=st.lists(st.integers(0, PAGES - 1), max_size=40))
    def map_bulk(self, gfns: list[int]) -> None:
        for gfn, addr in zip(gfns, self.mpt.dma_map_guest_pages(self.h, gfns, PAGE_SIZE),
                             strict=True):
            self._take((gfn, PAGE_SIZE), addr)

    @rule(first=st.integers(0, PAGES - 1), n=st.integers(1, 600))
    def map_run(self, first: int, n: int) -> None:
        """A run of consecutive frames as a uint64 array (a page table's usual shape)."""
        gfns = np.arange(first, min(first + n, PAGES), dtype=np.uint64)
        addrs = self.mpt.dma_map_guest_pages(self.h, gfns, PAGE_SIZE)
        for gfn, addr in zip(gfns.tolist(), addrs.tolist(), strict=True):
            self._take((gfn, PAGE_SIZE), addr)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def unmap_bulk(self, data: st.DataObject) -> None:
        """Several references at once, repeats included, 4 KiB and 2 MiB mixed: the
        same as one unmap per address in order, or (too many drops) refused whole."""
        keys = data.draw(st.lists(st.sampled_from(sorted(self.live)), min_size=1, max_size=12))
        addrs = [self.live[key][0] for key in keys]
        after = {k: list(v) for k, v in self.live.items()}
        refused = False
        for addr in addrs:
            # the mapping an unmap at addr reaches: a 4 KiB one first (identity mode)
            hits = sorted((key[1], key) for key, (a, _) in after.items() if a == addr)
            if not hits:
                refused = True
                break
            key = hits[0][1]
            after[key][1] -= 1
            if after[key][1] == 0:
                del after[key]
        if refused:
            with pytest.raises(DmaMapError):
                self.mpt.dma_unmap_guest_pages(self.h, addrs)
            return  # nothing dropped: the invariants and later unmaps would notice
        self.mpt.dma_unmap_guest_pages(self.h, np.array(addrs, dtype=np.uint64))
        for key in set(self.live) - set(after):
            self.dead.add(self.live[key][0])
        self.live = after

    def _resolve(self, key: tuple[int, int]) -> tuple[int, int]:
        """The mapping an address operation reaches: in identity mode one address can
        start both a 4 KiB and a 2 MiB mapping, and the 4 KiB one is found first."""
        gfn, size = key
        small = (gfn, PAGE_SIZE)
        if size == SIZE_2M and small in self.live and self.live[small][0] == self.live[key][0]:
            return small
        return key

    def _covered(self, addr: int) -> bool:
        """Whether a live mapping still reaches ``addr`` (2 MiB maps cover 512 pages)."""
        return any(
            a <= addr < a + (SIZE_2M if size == SIZE_2M else PAGE_SIZE)
            for (_, size), (a, _) in self.live.items()
        )

    @precondition(lambda self: self.live)
    @rule(data=st.data(), pin=st.booleans())
    def unmap_or_pin(self, data: st.DataObject, pin: bool) -> None:
        key = self._resolve(data.draw(st.sampled_from(sorted(self.live))))
        addr = self.live[key][0]
        if pin:
            self.mpt.dma_pin_guest_page(self.h, addr)
            self.live[key][1] += 1
            return
        self.mpt.dma_unmap_guest_page(self.h, addr)
        self.live[key][1] -= 1
        if self.live[key][1] == 0:
            del self.live[key]
            self.dead.add(addr)

    @invariant()
    def gpu_reaches_exactly_the_live_mappings(self) -> None:
        for (gfn, size), (addr, _) in self.live.items():
            for i in (0, 1, 511) if size == SIZE_2M else (0,):
                got = int.from_bytes(self.sysmem.read(addr + i * PAGE_SIZE, 4), "little")
                assert got == gfn + i
        for addr in self.dead:
            if self._covered(addr):
                continue
            with pytest.raises(DmaFault):
                self.sysmem.read(addr, 4)
            if all(a != addr for a, _ in self.live.values()):
                with pytest.raises(DmaMapError):
                    self.mpt.dma_pin_guest_page(self.h, addr)
        assert self.vm.held().dma_maps == len(self.live)

    def teardown(self) -> None:
        self.mpt.detach_vgpu(self.h)
        assert self.vm.held().total == 0 and self.sysmem.window_count == 0
        self.vm.close()


class DmaModelIdentity(DmaModel):
    dma_mode = "identity"


_SETTINGS = settings(max_examples=30, stateful_step_count=25, deadline=None)
TestDmaIommu = DmaModel.TestCase
TestDmaIommu.settings = _SETTINGS
TestDmaIdentity = DmaModelIdentity.TestCase
TestDmaIdentity.settings = _SETTINGS
