"""Shadow PPGTTs: the per-vGPU manager of shadow page tables (facts 4.3-4.6).

The guest's PPGTT holds guest frame numbers the GPU cannot use, so every
guest page-table page reachable from a live root gets a *shadow* page in host
memory (from the host's :class:`~gvt_core.hw.sysmem.HostPagePool`, registered
in system memory so the simulated GPU walks it) whose entries hold DMA
addresses instead. A :class:`ShadowMm` is one root set (3-level: four PD
pointers; 4-level: one PML4), created from a PVINFO ``g2v_notify`` or when a
workload brings roots not seen before.

Decisions worth knowing:

* **One shadow per (guest frame, table kind).** The hardware reads a page as
  whatever level it reaches it at, so a page used at two levels (or as a 4K
  and as a 64K PT) gets one shadow per use, all fed by the same trapped
  writes. Because a shadow's children are always one level lower, the shadow
  graph has no cycles: a guest entry pointing at its own table or at an
  ancestor is walked exactly as the hardware would walk it, four levels at
  most. Such pages are counted (``multi_kind_pages``).
* **Scratch pre-fill.** A fresh shadow page is filled with the scratch entry
  of its level before anything else, so any slot the guest leaves empty (or
  that cannot be shadowed) already points into the scratch tree.
* **Anything the guest gets wrong ends on scratch**, counted: frames outside
  guest RAM, tables that cannot be read or tracked, more shadow pages than
  ``max_shadow_pages``.
* **Broadwell's page sizes** (``PpgttHostConfig``): the PDE's 64K (IPS) bit
  is ignored (upstream's ``vgpu_ips_enabled`` is false on graphics version 8)
  and every 2 MiB entry is split into 512 4K entries (BDW's GTT has 4K pages
  only). A 1 GiB entry makes shadowing a PPGTT fail as upstream's does
  (:class:`~gvt_core.errors.PpgttShadowError`, "GVT doesn't support 1GB
  entry"); one written into a table that is already shadowed leaves that
  slot on scratch (departure: upstream's write handler fails before it drops
  the old entry, leaving the GPU on a mapping the guest removed).
* **Entries keep the guest's bits**: a shadow entry is the guest's with only
  the address replaced (bits 11:0 and 63:46 as written), as upstream does.
* **Writes.** An 8-byte aligned store replaces the entry (new shadowed first,
  then the old one dropped, so a child shared by both survives); a store that
  covers an entry only partly points it at scratch and parks the index until
  :meth:`PpgttManager.sync`, which the execution layer calls before every
  workload.
* **Out of sync** (on by default): a PT page trapped twice stops being
  tracked; its snapshot lives in an :class:`~gvt_core.device.memory.oos.OosPool`
  slot and :meth:`PpgttManager.sync` diffs the guest page against it.
* **Whole tables in bulk.** Shadowing a PD that brings hundreds of new PTs
  costs a few backend calls, not one per page or entry: the new PTs are
  tracked with one ``enable_page_tracks``, allocated with one pool call,
  read in coalesced runs and filled from one ``dma_map_guest_pages`` whose
  array answer is used as is (each PT's DMA addresses are a row of it).
  Dying leaf shadows queue their maps, dropped with one
  ``dma_unmap_guest_pages`` when the operation ends. The backend's bulk
  hooks are optional: the facade falls back to one call per page.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from gvt_core.device.memory import gma_walk
from gvt_core.device.memory.oos import DEFAULT_OOS_PAGES, OosPool
from gvt_core.device.memory.page_track import PageTrack
from gvt_core.device.memory.ppgtt_entry import TOP_KIND, Roots, TableKind, normalize_roots
from gvt_core.device.memory.ppgtt_entry import split_2m_leaf_flags as _split_flags
from gvt_core.device.memory.scratch import ScratchTree
from gvt_core.errors import (
    DmaMapError,
    GuestMemoryError,
    HookUnsupportedError,
    InvalidGfnError,
    PageTrackError,
    PpgttShadowError,
    ResourceExhaustedError,
    VgpuStateError,
)
from gvt_core.hw import regs
from gvt_core.hw.sysmem import PAGE_MASK, PAGE_SHIFT, PAGE_SIZE, HostPagePool, SystemMemory
from gvt_core.mpt.facade import Mpt

if TYPE_CHECKING:
    from gvt_core.device.vgpu import Vgpu

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_MMS",
    "DEFAULT_MAX_SHADOW_PAGES",
    "GuestTable",
    "PpgttHostConfig",
    "PpgttManager",
    "PpgttStats",
    "ShadowEnv",
    "ShadowMm",
    "ShadowPage",
    "host_config",
]

#: shadow pages one vGPU may hold: 64 GiB of 4K-mapped GM, ~10 KiB of host memory
#: each with its side arrays (~320 MiB per vGPU at most; docs/architecture.md, Limits).
DEFAULT_MAX_SHADOW_PAGES = 1 << 15
#: distinct root sets (shadow mm's) one vGPU may hold.
DEFAULT_MAX_MMS = 512

_P = regs.PPGTT_PRESENT
_PS = regs.PPGTT_PS
_IPS = regs.PPGTT_IPS_64K
_HIGH = regs.PPGTT_HIGH_BITS
_FLAGS = regs.PPGTT_ENTRY_FLAGS | _HIGH
_DIR_FLAGS = regs.PPGTT_DIR_FLAGS | _HIGH
_HUGE_FLAGS = regs.PPGTT_HUGE_FLAGS | _HIGH
_SPLIT_PDE_FLAGS = _DIR_FLAGS & ~regs.PPGTT_DIRTY
_A4K = regs.ADDR_MASK_4K
_A64K = regs.ADDR_MASK_64K
_A2M = regs.ADDR_MASK_2M
_SPLIT = regs.GVT_SHADOW_64K_SPLIT
_N = regs.PPGTT_ENTRIES_PER_PAGE
_STRIDE = regs.PPGTT_64K_STRIDE
_SIZE_2M = regs.PAGE_SIZE_2M
_FRAMES_2M = regs.PAGE_SIZE_2M >> PAGE_SHIFT
_U64 = np.uint64
_A4K_U = np.uint64(_A4K)
_A64K_U = np.uint64(_A64K)
_FLAGS_U = np.uint64(_FLAGS)
_DIR_FLAGS_U = np.uint64(_DIR_FLAGS)
_HUGE_BITS_U = np.uint64(_PS | _IPS)
_PS_U = np.uint64(_PS)
_SHIFT_U = np.uint64(PAGE_SHIFT)
_ONE_U = np.uint64(1)
_STRIDE_GFNS = np.arange(_STRIDE, dtype=_U64)
_SPLIT_GFNS = np.arange(_FRAMES_2M, dtype=_U64)
_ALL_SLOTS = np.arange(_N, dtype=np.int64)
_STRIDE_SLOTS = np.arange(0, _N, _STRIDE, dtype=np.int64)
_STRIDE_IDX = np.arange(_STRIDE, dtype=np.int64)
#: guest-caused mapping failures; anything else is a backend or host bug and propagates.
_MAP_ERRORS = (InvalidGfnError, DmaMapError, GuestMemoryError)


# --- the dependencies ---------------------------------------------------------------------


@attrs.define(eq=False)
class ShadowEnv:
    """What shadowing needs of a vGPU: its backend handle and page track, and the
    host memory the shadows live in. Built from a :class:`Vgpu` in production,
    from a backend and a :class:`HostPagePool` directly in low-level tests."""

    mpt: Mpt
    handle: Any
    page_track: PageTrack
    sysmem: SystemMemory
    pages: HostPagePool
    #: system-memory owner tag of this vGPU's shadow and scratch pages (leak checks).
    owner: str = "ppgtt"

    @classmethod
    def for_vgpu(cls, vgpu: Vgpu) -> ShadowEnv:
        gpu = vgpu.gvt.gpu
        return cls(
            mpt=vgpu.mpt,
            handle=vgpu.handle,
            page_track=vgpu.page_track,
            sysmem=gpu.sysmem,
            pages=gpu.pages,
            owner=f"vgpu{vgpu.id}-ppgtt",
        )


@attrs.define(eq=False)
class PpgttHostConfig:
    """Per-host PPGTT settings, shared by the host's vGPUs.

    ``enable_out_of_sync`` is read on every trapped write, so flipping it takes
    effect at once (pages already out of sync are resynced at the next
    :meth:`PpgttManager.sync` and then stay tracked).
    """

    enable_out_of_sync: bool = True
    oos_pool: OosPool = attrs.field(factory=lambda: OosPool(DEFAULT_OOS_PAGES))
    #: honour the PDE's 64K (IPS) bit. False on Broadwell: upstream's
    #: ``vgpu_ips_enabled`` is true only on graphics version 9 (with the guest's
    #: GAMW_ECO_DEV_RW_IA) and 11+.
    ips_64k: bool = False
    #: keep 2 MiB entries huge where the backend maps 2 MiB at once. False on
    #: Broadwell: its GTT has 4K pages only, so upstream always splits them.
    huge_2m: bool = False


_HOST_CONFIGS: weakref.WeakKeyDictionary[Any, PpgttHostConfig] = weakref.WeakKeyDictionary()


def host_config(gvt: Any) -> PpgttHostConfig:
    """The PPGTT settings of host ``gvt`` (its ``ppgtt_config`` attribute if it has
    one, else one kept alongside it): ``host_config(gvt).enable_out_of_sync = False``
    switches out-of-sync off for every vGPU of that host."""
    cfg = getattr(gvt, "ppgtt_config", None)
    if isinstance(cfg, PpgttHostConfig):
        return cfg
    cfg = _HOST_CONFIGS.get(gvt)
    if cfg is None:
        cfg = _HOST_CONFIGS[gvt] = PpgttHostConfig(
            enable_out_of_sync=bool(getattr(gvt, "enable_out_of_sync", True))
        )
    return cfg


# --- state -----------------------------------------------------------------------------------


@attrs.define(eq=False, slots=True, repr=False)
class ShadowPage:
    """One host shadow table: 512 entries the GPU walks, and what each holds."""

    kind: TableKind
    #: guest frame of the table (SPLIT2M: first guest frame of the 2 MiB page).
    gfn: int
    #: host bus frame of the shadow page.
    frame: int
    buf: memoryview
    #: the shadow entries (a uint64 view of ``buf``).
    ents: np.ndarray
    #: the scratch entry of this kind.
    fill: int
    refs: int = 0
    #: directory kinds: the shadow child each slot points at.
    children: list[ShadowPage | None] | None = None
    #: PD: slot -> DMA address of a 2 MiB mapping kept huge.
    huge: dict[int, int] | None = None
    #: leaf kinds: DMA address held by each slot, and whether it holds one.
    dma: np.ndarray | None = None
    mapped: np.ndarray | None = None
    #: indices parked on scratch by partial writes until the next sync.
    post: set[int] = attrs.field(factory=set)
    #: SPLIT2M: the 4K flags, part of its identity.
    split_flags: int = 0
    populated: bool = False
    dead: bool = False

    def __repr__(self) -> str:
        return (f"ShadowPage({self.kind.value}, gfn={self.gfn:#x}, frame={self.frame:#x}, "
                f"refs={self.refs})")


@attrs.define(eq=False, slots=True)
class GuestTable:
    """A guest page used as a page table: its shadows, tracking and out-of-sync state."""

    gfn: int
    shadows: dict[TableKind, ShadowPage] = attrs.field(factory=dict)
    #: trapped writes so far (drives out-of-sync).
    write_cnt: int = 0
    #: out-of-sync pool slot holding the snapshot, kept across syncs.
    oos_slot: int | None = None
    #: write tracking is off and the snapshot is authoritative until the next sync.
    oos: bool = False


@attrs.define(eq=False)
class ShadowMm:
    """One guest PPGTT (a root set) and its shadow roots."""

    manager: PpgttManager = attrs.field(repr=False)
    levels: int
    guest_roots: Roots
    #: bus addresses a shadow context carries (4-level: only ``[0]``, the PML4).
    shadow_roots: tuple[int, int, int, int] = (0, 0, 0, 0)
    root_pages: list[ShadowPage | None] = attrs.field(factory=lambda: [None] * 4, repr=False)
    #: references from the API (workloads) and from the guest's g2v notifications.
    refs: int = 0
    g2v_refs: int = 0
    #: in use by the GPU: not reclaimable.
    pins: int = 0
    shadowed: bool = False
    dead: bool = False

    def gma_to_gpa(self, gma: int) -> int | None:
        return gma_walk.gma_to_gpa(self, gma)

    def gma_to_dma(self, gma: int) -> int:
        return gma_walk.gma_to_dma(self, gma)


@attrs.define(slots=True)
class PpgttStats:
    """What the shadow PPGTT code did for one vGPU (counters only grow)."""

    mms_created: int = 0
    mms_destroyed: int = 0
    #: unpinned mm's whose shadows were dropped to make room.
    mms_reclaimed: int = 0
    trapped_writes: int = 0
    #: stores that covered an entry only partly (parked until the next sync).
    partial_writes: int = 0
    #: stores that were neither 4 nor 8 bytes, or misaligned.
    odd_writes: int = 0
    #: trapped writes to pages with no shadow (a stale trap).
    stray_writes: int = 0
    #: parked entries re-shadowed by a sync.
    post_flushed: int = 0
    #: leaf entries put on scratch: frame outside guest RAM or the map refused.
    invalid_entries: int = 0
    #: of those, maps the backend refused for a valid frame (out of pin quota).
    map_refused: int = 0
    #: table entries put on scratch: the table page is not RAM or cannot be tracked.
    bad_tables: int = 0
    #: roots put on scratch (the same reasons).
    bad_roots: int = 0
    #: guest pages shadowed as more than one table kind.
    multi_kind_pages: int = 0
    huge_64k: int = 0
    huge_2m: int = 0
    huge_2m_split: int = 0
    #: 1 GiB entries written into shadowed tables, put on scratch (unsupported).
    huge_1g: int = 0
    #: PPGTTs that could not be shadowed (a 1 GiB entry in reach).
    shadow_failures: int = 0
    #: entries put on scratch because the vGPU reached ``max_shadow_pages``.
    shadow_limit: int = 0
    oos_entered: int = 0
    oos_synced: int = 0
    oos_reclaimed: int = 0
    #: pages that would have gone out of sync but the pool had no slot.
    oos_pool_empty: int = 0
    g2v_bad: int = 0
    g2v_unknown: int = 0
    g2v_refused: int = 0
    #: shadow pages still alive after every mm was destroyed (a bug if ever > 0).
    leak_swept: int = 0

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


# --- the manager -----------------------------------------------------------------------------


class PpgttManager:
    """The shadow PPGTTs of one vGPU (implements :class:`~gvt_core.device.memory.g2v.PpgttOwner`).

    Every public method is safe to call from the trap path and the workload
    path concurrently (one re-entrant lock).
    """

    def __init__(
        self,
        env: ShadowEnv,
        *,
        config: PpgttHostConfig | None = None,
        max_shadow_pages: int = DEFAULT_MAX_SHADOW_PAGES,
        max_mms: int = DEFAULT_MAX_MMS,
    ) -> None:
        self.env = env
        self.config = config if config is not None else PpgttHostConfig()
        self.max_shadow_pages = max_shadow_pages
        self.max_mms = max_mms
        self.stats = PpgttStats()
        #: calls of the :class:`PpgttOwner` methods by kind, as ``G2vLog`` counts them
        #: (``l3_create``, ``l4_destroy``, ``invalidate``, ``release``, ...).
        self.counts: Counter[str] = Counter()
        self.scratch = ScratchTree(env.pages, env.owner + "-scratch")
        self.released = False
        self._mpt = env.mpt
        self._handle = env.handle
        self._track = env.page_track
        self._lock = threading.RLock()
        self._huge_2m = self.config.huge_2m and env.mpt.caps.max_dma_page >= _SIZE_2M
        self._ips = self.config.ips_64k
        self._huge_bits = _HUGE_BITS_U if self._ips else _PS_U
        #: shadowing a PPGTT from its roots (not a trapped write): a 1G entry fails it.
        self._creating = False
        self._mms: dict[tuple[int, Roots], ShadowMm] = {}
        self._tables: dict[int, GuestTable] = {}
        self._splits: dict[tuple[int, int], ShadowPage] = {}
        self._shadow_count = 0
        #: leaf shadows created but not filled yet (filled in one batch).
        self._pending: list[ShadowPage] = []
        #: DMA addresses of destroyed leaf shadows, dropped by :meth:`_flush_unmaps`.
        self._unmaps: list[np.ndarray] = []
        #: shadows with parked entries (insertion ordered).
        self._post: dict[ShadowPage, None] = {}
        #: guest tables holding an out-of-sync slot, least recently used first.
        self._oos_lru: dict[int, GuestTable] = {}
        #: guest tables out of sync right now.
        self._oos_now: dict[int, GuestTable] = {}

    @classmethod
    def for_vgpu(cls, vgpu: Vgpu, **options: Any) -> PpgttManager:
        """The manager of a vGPU whose backend handle and page track exist."""
        if vgpu.handle is None or vgpu.page_track is None:
            raise VgpuStateError(
                f"vGPU {vgpu.id} has no backend handle or page track yet; build its "
                "PPGTT manager after attach_vgpu"
            )
        return cls(ShadowEnv.for_vgpu(vgpu), config=host_config(vgpu.gvt), **options)

    # --- introspection ---------------------------------------------------------------------
    @property
    def enable_out_of_sync(self) -> bool:
        return self.config.enable_out_of_sync

    def set_page_sizes(self, *, ips_64k: bool, huge_2m: bool) -> None:
        """The page sizes of a host other than Broadwell (GEN9 with IPS enabled, 2M GTT
        pages). Only before anything is shadowed.

        :raises VgpuStateError: a PPGTT is shadowed already.
        """
        if self._mms:
            raise VgpuStateError("page sizes are set before the first PPGTT is shadowed")
        self._ips = ips_64k
        self._huge_bits = _HUGE_BITS_U if ips_64k else _PS_U
        self._huge_2m = huge_2m and self._mpt.caps.max_dma_page >= _SIZE_2M

    @property
    def huge_2m(self) -> bool:
        """Whether 2 MiB guest entries may stay huge (else they are always split)."""
        return self._huge_2m

    @property
    def ips_64k(self) -> bool:
        """Whether the PDE's IPS bit makes its PT a 64K PT."""
        return self._ips

    @property
    def shadow_page_count(self) -> int:
        return self._shadow_count

    @property
    def mms(self) -> list[ShadowMm]:
        return list(self._mms.values())

    def guest_table_gfns(self) -> set[int]:
        """Guest frames shadowed as page tables."""
        return set(self._tables)

    def is_out_of_sync(self, gfn: int) -> bool:
        gt = self._tables.get(gfn)
        return gt is not None and gt.oos

    @property
    def out_of_sync_count(self) -> int:
        return len(self._oos_now)

    def shadow_pages(self) -> list[ShadowPage]:
        """Every live shadow page (guest-backed and split 2M ones)."""
        out = [sp for gt in self._tables.values() for sp in gt.shadows.values()]
        return out + list(self._splits.values())

    def shadow_of(self, gfn: int, kind: TableKind) -> ShadowPage | None:
        gt = self._tables.get(gfn)
        return None if gt is None else gt.shadows.get(kind)

    # --- mm life cycle ----------------------------------------------------------------------
    def find(self, levels: int, roots: Roots) -> ShadowMm | None:
        if levels not in TOP_KIND:
            return None
        return self._mms.get((levels, normalize_roots(levels, roots)))

    def find_or_create(self, levels: int, roots: Roots) -> ShadowMm:
        """The shadow of the PPGTT at ``roots``, shadowed, with one more reference
        (drop it with :meth:`put`).

        :raises ValueError: ``levels`` is not 3 or 4 (see
            :func:`~gvt_core.device.memory.ppgtt_entry.levels_for_addressing_mode`).
        :raises ResourceExhaustedError: the vGPU already holds ``max_mms`` PPGTTs.
        :raises PpgttShadowError: the tables reach a 1 GiB entry.
        """
        with self._lock:
            mm = self._get_mm(levels, roots)
            mm.refs += 1
            return mm

    def put(self, mm: ShadowMm) -> None:
        """Drop a reference from :meth:`find_or_create`; the last one destroys the shadow."""
        with self._lock:
            if mm.dead:
                return  # already dropped by a reset
            if mm.refs <= 0:
                raise VgpuStateError("put() on a shadow PPGTT without references from find_or_create")
            mm.refs -= 1
            self._maybe_destroy(mm)

    def pin(self, mm: ShadowMm) -> None:
        """Keep ``mm`` shadowed while the GPU uses it (re-shadows a reclaimed mm).

        :raises PpgttShadowError: re-shadowing met a 1 GiB entry the guest wrote
            while the shadow was reclaimed.
        """
        with self._lock:
            if mm.dead:
                raise VgpuStateError("cannot pin a shadow PPGTT dropped by a vGPU reset")
            if not mm.shadowed:
                self._reclaim_if_needed()
                self._shadow_or_fail(mm)
            mm.pins += 1

    def unpin(self, mm: ShadowMm) -> None:
        with self._lock:
            if mm.dead:
                return
            if mm.pins <= 0:
                raise VgpuStateError("unpin() on a shadow PPGTT that is not pinned")
            mm.pins -= 1
            self._maybe_destroy(mm)

    def sync(self) -> None:
        """Bring every shadow up to date with the guest: re-shadow entries parked by
        partial writes ("flush post shadow") and resync out-of-sync pages. Call
        before every workload."""
        with self._lock:
            self._flush_post()
            oos_on = self.config.enable_out_of_sync
            for gt in list(self._oos_now.values()):
                self._resync(gt)
            if not oos_on:
                for gt in list(self._oos_lru.values()):
                    self._drop_oos_slot(gt)
            self._flush_pending()

    # --- PpgttOwner --------------------------------------------------------------------------
    def g2v_create(self, levels: int, roots: Roots) -> None:
        """PVINFO ``VGT_G2V_PPGTT_L{3,4}_PAGE_TABLE_CREATE``: shadow and hold the PPGTT."""
        with self._lock:
            self.counts[f"l{levels}_create"] += 1
            if levels not in TOP_KIND or self.released:
                self.stats.g2v_bad += 1
                return
            try:
                mm = self._get_mm(levels, roots)
            except (ResourceExhaustedError, PpgttShadowError):
                self.stats.g2v_refused += 1
                return
            mm.g2v_refs += 1

    def g2v_destroy(self, levels: int, roots: Roots) -> None:
        """PVINFO ``..._DESTROY``: drop one g2v reference. A guest can only drop the
        references its own notifications took, never a workload's."""
        with self._lock:
            self.counts[f"l{levels}_destroy"] += 1
            mm = self.find(levels, roots)
            if mm is None or mm.g2v_refs <= 0:
                self.stats.g2v_unknown += 1
                return
            mm.g2v_refs -= 1
            self._maybe_destroy(mm)

    def invalidate(self) -> None:
        """vGPU reset: drop every shadow PPGTT, whoever holds it."""
        with self._lock:
            self.counts["invalidate"] += 1
            for mm in list(self._mms.values()):
                self._destroy_mm(mm)
            self._post.clear()
            self._sweep()

    def release(self) -> None:
        """vGPU destroy: drop every shadow, page track and DMA map, and the scratch tree."""
        with self._lock:
            self.counts["release"] += 1
            if self.released:
                return
            for mm in list(self._mms.values()):
                self._destroy_mm(mm)
            self._post.clear()
            self._sweep()
            self.scratch.release()
            self.released = True

    # --- walk API (facts 4.8) ------------------------------------------------------------------
    def gma_to_gpa(self, mm: ShadowMm, gma: int) -> int | None:
        return gma_walk.gma_to_gpa(mm, gma)

    def gma_to_dma(self, mm: ShadowMm, gma: int) -> int:
        return gma_walk.gma_to_dma(mm, gma)

    # --- mm internals -----------------------------------------------------------------------------
    def _get_mm(self, levels: int, roots: Roots) -> ShadowMm:
        if levels not in TOP_KIND:
            raise ValueError(f"a PPGTT has 3 or 4 levels, not {levels}")
        if self.released:
            raise VgpuStateError("the vGPU's PPGTT manager was released (vGPU destroyed)")
        key = (levels, normalize_roots(levels, roots))
        mm = self._mms.pop(key, None)
        if mm is None:
            if len(self._mms) >= self.max_mms:
                raise ResourceExhaustedError("shadow PPGTTs", len(self._mms) + 1, self.max_mms)
            mm = ShadowMm(self, levels, key[1])
            self.stats.mms_created += 1
        self._mms[key] = mm  # most recently used last
        if not mm.shadowed:
            self._reclaim_if_needed()
            try:
                self._shadow_or_fail(mm)
            except PpgttShadowError:
                self._maybe_destroy(mm)
                raise
        return mm

    def _shadow_or_fail(self, mm: ShadowMm) -> None:
        """Shadow ``mm`` from its roots; on a 1 GiB entry nothing of it stays."""
        self._creating = True
        try:
            self._shadow_mm(mm)
        except PpgttShadowError:
            self.stats.shadow_failures += 1
            self._flush_pending()
            self._flush_unmaps()
            raise
        finally:
            self._creating = False
        self._flush_pending()

    def _shadow_mm(self, mm: ShadowMm) -> None:
        top = TOP_KIND[mm.levels]
        count = 1 if mm.levels == 4 else regs.PPGTT_L3_PDPES
        scratch_root = self.scratch.table_address(top.level)
        out = [0, 0, 0, 0]
        mm.pins += 1  # not reclaimable while its own tables are built
        try:
            for i in range(count):
                root = mm.guest_roots[i]
                sp = self._get_table((root & _A4K) >> PAGE_SHIFT, top) if root else None
                if root and sp is None:
                    self.stats.bad_roots += 1
                mm.root_pages[i] = sp
                out[i] = sp.frame << PAGE_SHIFT if sp is not None else scratch_root
        except PpgttShadowError:
            pages, mm.root_pages = mm.root_pages, [None] * 4
            for sp in pages:
                if sp is not None:
                    self._unref(sp)
            raise
        finally:
            mm.pins -= 1
        mm.shadow_roots = (out[0], out[1], out[2], out[3])
        mm.shadowed = True

    def _unshadow_mm(self, mm: ShadowMm) -> None:
        pages, mm.root_pages = mm.root_pages, [None] * 4
        mm.shadow_roots = (0, 0, 0, 0)
        mm.shadowed = False
        for sp in pages:
            if sp is not None:
                self._unref(sp)
        self._flush_unmaps()

    def _maybe_destroy(self, mm: ShadowMm) -> None:
        if mm.refs + mm.g2v_refs + mm.pins == 0:
            self._destroy_mm(mm)

    def _destroy_mm(self, mm: ShadowMm) -> None:
        self._unshadow_mm(mm)
        del self._mms[(mm.levels, mm.guest_roots)]
        mm.dead = True
        self.stats.mms_destroyed += 1

    def _reclaim_if_needed(self) -> None:
        """Drop the shadows of unpinned mm's, least recently used first, while the
        vGPU is at its shadow-page limit (only here, never mid-walk)."""
        if self._shadow_count < self.max_shadow_pages:
            return
        for mm in list(self._mms.values()):
            if mm.shadowed and mm.pins == 0:
                self._unshadow_mm(mm)
                self.stats.mms_reclaimed += 1
                if self._shadow_count < self.max_shadow_pages:
                    return

    def _sweep(self) -> None:
        """Free whatever outlived every mm (never expected; counted)."""
        leftovers = [sp for gt in self._tables.values() for sp in gt.shadows.values()]
        leftovers += list(self._splits.values())
        for sp in leftovers:
            if not sp.dead:
                self.stats.leak_swept += 1
                sp.refs = 1
                self._unref(sp)
        self._flush_unmaps()
        self._pending.clear()

    # --- shadow pages ----------------------------------------------------------------------------
    def _alloc_shadow(self, kind: TableKind, gfn: int) -> ShadowPage:
        frame, buf = self.env.pages.alloc(owner=self.env.owner)
        ents = np.frombuffer(buf, dtype="<u8")
        fill = self.scratch.fill(kind)
        ents[:] = fill
        sp = ShadowPage(kind, gfn, frame, buf, ents, fill, refs=1)
        if kind.is_leaf:
            sp.dma = np.zeros(_N, dtype=_U64)
            sp.mapped = np.zeros(_N, dtype=bool)
        else:
            sp.children = [None] * _N
            if kind is TableKind.PD:
                sp.huge = {}
        self._shadow_count += 1
        return sp

    def _get_table(self, gfn: int, kind: TableKind) -> ShadowPage | None:
        """A referenced shadow of guest table ``gfn`` read as ``kind``; None (counted)
        when the guest page cannot serve as a table. Leaf tables are filled later,
        in one batch (:meth:`_flush_pending`)."""
        gt = self._tables.get(gfn)
        if gt is not None:
            sp = gt.shadows.get(kind)
            if sp is not None:
                sp.refs += 1
                return sp
        if self._shadow_count >= self.max_shadow_pages:
            self.stats.shadow_limit += 1
            return None
        if gt is None:
            gt = self._track_table(gfn)
            if gt is None:
                self.stats.bad_tables += 1
                return None
        else:
            self.stats.multi_kind_pages += 1
            if gt.oos:
                self._resync(gt)  # a new kind needs the page tracked again
        sp = self._alloc_shadow(kind, gfn)
        gt.shadows[kind] = sp
        if kind.is_leaf:
            self._pending.append(sp)
            return sp
        guest = self._read_table(gfn)
        sp.populated = True
        if guest is None:
            self.stats.bad_tables += 1
            return sp
        try:
            self._populate_dir(sp, guest)
        except PpgttShadowError:
            self._unref(sp)  # nothing of a table that cannot be shadowed stays
            raise
        return sp

    def _populate_dir(self, sp: ShadowPage, guest: np.ndarray) -> None:
        """Shadow every present entry of fresh directory ``sp``. A PD's plain 4K-PT
        entries go through :meth:`_set_pts` (tables tracked and allocated in
        bulk) when the shadow-page limit cannot cut in, so the result is what
        :meth:`_set_dir` entry by entry gives."""
        idxs = np.flatnonzero(guest & _ONE_U)
        if (
            sp.kind is TableKind.PD
            and idxs.size > 1
            and self._shadow_count + int(idxs.size) <= self.max_shadow_pages
        ):
            ents = guest[idxs]
            plain = (ents & self._huge_bits) == 0
            if plain.any():
                self._set_pts(sp, idxs[plain], ents[plain])
                idxs = idxs[~plain]
        for idx in idxs.tolist():
            self._set_dir(sp, idx, int(guest[idx]))

    def _set_pts(self, sp: ShadowPage, idxs: np.ndarray, ents: np.ndarray) -> None:
        """Shadow present 4K-PT entries ``ents`` into empty slots ``idxs`` of PD ``sp``."""
        assert sp.children is not None
        gfns = ((ents & _A4K_U) >> _SHIFT_U).tolist()
        children = self._get_pts(gfns)
        slots = idxs.tolist()
        table = sp.children
        frames = []
        for idx, child in zip(slots, children, strict=True):
            if child is not None:
                table[idx] = child
                frames.append(child.frame)
            else:
                frames.append(-1)
        fr = np.array(frames, dtype=np.int64)
        ok = fr >= 0
        if not ok.all():
            idxs, ents, fr = idxs[ok], ents[ok], fr[ok]
        sp.ents[idxs] = (fr.astype(_U64) << _SHIFT_U) | (ents & _DIR_FLAGS_U)

    def _get_pts(self, gfns: list[int]) -> list[ShadowPage | None]:
        """:meth:`_get_table` (kind PT) for each of ``gfns``: pages not shadowed
        yet are validated, tracked and allocated as one batch."""
        out: list[ShadowPage | None] = [None] * len(gfns)
        tables = self._tables
        fresh: dict[int, list[int]] = {}
        known: list[int] = []
        for i, gfn in enumerate(gfns):
            if gfn in tables:
                known.append(i)
            elif gfn in fresh:
                fresh[gfn].append(i)
            else:
                fresh[gfn] = [i]
        if fresh:
            for gfn, sp in zip(fresh, self._new_pts(list(fresh)), strict=True):
                where = fresh[gfn]
                if sp is None:
                    self.stats.bad_tables += len(where)
                    continue
                sp.refs = len(where)
                for i in where:
                    out[i] = sp
        for i in known:
            out[i] = self._get_table(gfns[i], TableKind.PT)
        return out

    def _new_pts(self, gfns: list[int]) -> list[ShadowPage | None]:
        """Track and allocate 4K-PT shadows of guest pages no shadow uses yet (each
        listed once); None where the page cannot serve as a table. Tracking
        starts before the pages are read (at the next pending flush)."""
        made = self._track_tables(gfns)
        if not made:
            return [None] * len(gfns)
        by_gfn: dict[int, ShadowPage] = {}
        for gt, shadow in zip(made, self._alloc_leaves(TableKind.PT, [gt.gfn for gt in made]),
                              strict=True):
            gt.shadows[TableKind.PT] = shadow
            by_gfn[gt.gfn] = shadow
        return [by_gfn.get(gfn) for gfn in gfns]

    def _track_tables(self, gfns: list[int]) -> list[GuestTable]:
        """:meth:`_track_table` for many untracked pages: one registration and one
        backend call when all of them can be tracked, else page by page."""
        valid, handle, track = self._mpt.is_valid_gfn, self._handle, self._track
        good = [gfn for gfn in gfns if valid(handle, gfn)]
        try:
            track.register_many(good, self._on_write)
        except PageTrackError:
            return [gt for gt in map(self._track_table, good) if gt is not None]
        try:
            track.enable_many(good)
        except BaseException as exc:
            for gfn in good:
                track.unregister(gfn)
            if not isinstance(exc, PageTrackError | InvalidGfnError):
                raise
            return [gt for gt in map(self._track_table, good) if gt is not None]
        made = [GuestTable(gfn) for gfn in good]
        self._tables.update(zip(good, made, strict=True))
        return made

    def _alloc_leaves(self, kind: TableKind, gfns: list[int]) -> list[ShadowPage]:
        """:meth:`_alloc_shadow` of leaf tables for many pages at once, queued for
        the next pending flush (which fills them)."""
        n = len(gfns)
        fill = self.scratch.fill(kind)
        pages = self.env.pages.alloc_many(n, owner=self.env.owner,
                                          fill=fill.to_bytes(8, "little") * _N)
        # each shadow owns its side arrays: rows of one batch matrix would keep the
        # whole matrix alive for as long as any one of its pages lives
        out = [
            ShadowPage(kind, gfn, frame, buf, np.frombuffer(buf, dtype=_U64), fill, 1,
                       None, None, np.zeros(_N, dtype=_U64), np.zeros(_N, dtype=bool))
            for gfn, (frame, buf) in zip(gfns, pages, strict=True)
        ]
        self._shadow_count += n
        self._pending.extend(out)
        return out

    def _track_table(self, gfn: int) -> GuestTable | None:
        """Start tracking guest page ``gfn`` as a page table (before reading it, so
        no store between the read and the protection is missed)."""
        if not self._mpt.is_valid_gfn(self._handle, gfn):
            return None
        try:
            self._track.register(gfn, self._on_write)
        except PageTrackError:
            return None
        try:
            self._track.enable(gfn)
        except (PageTrackError, InvalidGfnError):
            self._track.unregister(gfn)
            return None
        gt = GuestTable(gfn)
        self._tables[gfn] = gt
        return gt

    def _read_table(self, gfn: int) -> np.ndarray | None:
        try:
            raw = self._mpt.read_gpa(self._handle, gfn << PAGE_SHIFT, PAGE_SIZE)
        except (GuestMemoryError, InvalidGfnError):
            return None
        return np.frombuffer(raw, dtype="<u8")

    def _get_split(self, base: int, flags: int) -> ShadowPage | None:
        """The host-only PT a 2 MiB guest entry is split into, shared by identical entries."""
        key = (base, flags)
        sp = self._splits.get(key)
        if sp is not None:
            sp.refs += 1
            return sp
        if self._shadow_count >= self.max_shadow_pages:
            self.stats.shadow_limit += 1
            return None
        sp = self._alloc_shadow(TableKind.SPLIT2M, base)
        sp.split_flags = flags
        self._splits[key] = sp
        self._pending.append(sp)
        return sp

    def _unref(self, sp: ShadowPage) -> None:
        sp.refs -= 1
        if sp.refs == 0:
            self._destroy(sp)

    def _destroy(self, sp: ShadowPage) -> None:
        sp.dead = True
        if sp.mapped is not None:
            assert sp.dma is not None
            if sp.mapped.any():
                self._unmaps.append(sp.dma[sp.mapped])
                sp.mapped[:] = False
        else:
            assert sp.children is not None
            children, sp.children = sp.children, [None] * _N
            if sp.huge:
                for addr in sp.huge.values():
                    self._mpt.dma_unmap_guest_page(self._handle, addr)
                sp.huge.clear()
            for child in children:
                if child is not None:
                    self._unref(child)
        self._post.pop(sp, None)
        self.env.pages.free(sp.frame, sp.buf)
        self._shadow_count -= 1
        if sp.kind is TableKind.SPLIT2M:
            del self._splits[(sp.gfn, sp.split_flags)]
            return
        gt = self._tables[sp.gfn]
        del gt.shadows[sp.kind]
        if not gt.shadows:
            self._untrack_table(gt)

    def _untrack_table(self, gt: GuestTable) -> None:
        """The page is no table anymore: forget it (no resync, nothing to sync into)."""
        if gt.oos:
            gt.oos = False
            del self._oos_now[gt.gfn]
        if gt.oos_slot is not None:
            self.config.oos_pool.free(gt.oos_slot)
            gt.oos_slot = None
        self._oos_lru.pop(gt.gfn, None)
        del self._tables[gt.gfn]
        self._track.unregister(gt.gfn)

    # --- entries -------------------------------------------------------------------------------------
    def _set_dir(self, sp: ShadowPage, idx: int, e: int) -> None:
        """Shadow guest entry ``e`` into empty slot ``idx`` of directory ``sp``."""
        assert sp.children is not None
        if not e & _P:
            sp.ents[idx] = sp.fill
            return
        kind = sp.kind
        if kind is TableKind.PML4:
            child_kind = TableKind.PDP
        elif kind is TableKind.PDP:
            if e & _PS:
                # 1 GiB pages: unsupported, as in GVT. Shadowing from the roots fails;
                # a trapped write leaves the slot on scratch (module docstring).
                if self._creating:
                    raise PpgttShadowError("GVT doesn't support 1GB entry", sp.gfn)
                self.stats.huge_1g += 1
                sp.ents[idx] = sp.fill
                return
            child_kind = TableKind.PD
        elif e & _PS:
            self._set_2m(sp, idx, e)
            return
        elif e & _IPS and self._ips:
            child_kind = TableKind.PT64K
            self.stats.huge_64k += 1
        else:
            child_kind = TableKind.PT
        child = self._get_table((e & _A4K) >> PAGE_SHIFT, child_kind)
        if child is None:
            sp.ents[idx] = sp.fill
            return
        sp.children[idx] = child
        sp.ents[idx] = (child.frame << PAGE_SHIFT) | (e & _DIR_FLAGS)

    def _set_2m(self, sp: ShadowPage, idx: int, e: int) -> None:
        """A 2 MiB guest entry: kept huge when the backend maps 2 MiB contiguously,
        else split into a shadow PT of 512 4K entries."""
        assert sp.children is not None and sp.huge is not None
        base = (e & _A2M) >> PAGE_SHIFT
        if self._huge_2m:
            try:
                addr = self._mpt.dma_map_guest_page(self._handle, base, _SIZE_2M)
            except (*_MAP_ERRORS, HookUnsupportedError):
                addr = None
            if addr is not None and addr & (_SIZE_2M - 1):
                # a 2M PDE needs a 2M-aligned bus address: this one cannot stay huge
                self._mpt.dma_unmap_guest_page(self._handle, addr)
                addr = None
            if addr is not None:
                sp.huge[idx] = addr
                sp.ents[idx] = addr | (e & _HUGE_FLAGS)
                self.stats.huge_2m += 1
                return
        split = self._get_split(base, _split_flags(e))
        if split is None:
            sp.ents[idx] = sp.fill
            return
        self.stats.huge_2m_split += 1
        sp.children[idx] = split
        sp.ents[idx] = (split.frame << PAGE_SHIFT) | (e & _SPLIT_PDE_FLAGS)

    def _map4k(self, gfn: int) -> int | None:
        if self._mpt.is_valid_gfn(self._handle, gfn):
            try:
                return self._mpt.dma_map_guest_page(self._handle, gfn, PAGE_SIZE)
            except DmaMapError as exc:  # the backend refused (pin quota): visible
                self._map_refused(gfn, exc)
            except _MAP_ERRORS:
                pass
        self.stats.invalid_entries += 1
        return None

    def _map_refused(self, gfn: int, exc: Exception) -> None:
        self.stats.map_refused += 1
        if self.stats.map_refused == 1:
            log.warning("%s: guest frame %#x cannot be mapped for the GPU (%s); the shadow "
                        "entry points at scratch; later refusals are counted in "
                        "ppgtt.stats.map_refused", self.env.owner, gfn, exc)

    def _map_many(self, gfns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """DMA-map 4K frames in one backend call; (addresses, mapped) per frame.

        The bulk call relies on the backend's own validation (it raises
        :class:`InvalidGfnError` for non-RAM frames, mapping none); then every
        frame is retried alone so only the bad ones end on scratch.
        """
        n = int(gfns.size)
        if n == 0:
            return np.zeros(0, _U64), np.zeros(0, bool)
        try:
            out = self._mpt.dma_map_guest_pages(self._handle, gfns, PAGE_SIZE)
            return np.asarray(out, dtype=_U64), np.ones(n, dtype=bool)
        except _MAP_ERRORS:
            pass
        dma = np.zeros(n, dtype=_U64)
        ok = np.zeros(n, dtype=bool)
        for i, gfn in enumerate(gfns.tolist()):
            addr = self._map4k(gfn)
            if addr is not None:
                dma[i] = addr
                ok[i] = True
        return dma, ok

    def _unmap_all(self, addrs: np.ndarray) -> None:
        """Drop the 4K maps at ``addrs`` with one backend call."""
        if addrs.size:
            self._mpt.dma_unmap_guest_pages(self._handle, addrs)

    def _flush_unmaps(self) -> None:
        """Drop the maps of the leaf shadows destroyed since the last flush, in one
        backend call (a dying 1 GiB PPGTT holds 262,144 of them)."""
        if self._unmaps:
            parts, self._unmaps = self._unmaps, []
            self._unmap_all(parts[0] if len(parts) == 1 else np.concatenate(parts))

    def _set_leaf(self, sp: ShadowPage, idx: int, e: int) -> None:
        """Shadow 4K guest PTE ``e`` into empty slot ``idx``."""
        assert sp.dma is not None and sp.mapped is not None
        if e & _P:
            addr = self._map4k((e & _A4K) >> PAGE_SHIFT)
            if addr is not None:
                sp.ents[idx] = addr | (e & _FLAGS)
                sp.dma[idx] = addr
                sp.mapped[idx] = True
                return
        sp.ents[idx] = sp.fill

    def _set_leaf64(self, sp: ShadowPage, idx: int, e: int) -> None:
        """Shadow 64K guest PTE ``e`` (at a 16-aligned index) as 16 4K entries."""
        assert sp.dma is not None and sp.mapped is not None
        span = slice(idx, idx + _STRIDE)
        if not e & _P:
            sp.ents[span] = sp.fill
            return
        gfns = np.uint64((e & _A64K) >> PAGE_SHIFT) + _STRIDE_GFNS
        dma, ok = self._map_many(gfns)
        flags = np.uint64((e & _FLAGS) | _SPLIT)
        sp.ents[span] = np.where(ok, dma | flags, np.uint64(sp.fill))
        sp.dma[span] = dma
        sp.mapped[span] = ok

    def _replace(self, sp: ShadowPage, idx: int, e: int) -> None:
        """Guest entry ``idx`` of ``sp``'s table is now ``e``: shadow the new entry,
        then drop what the old one held (a child shared by both survives)."""
        if sp.post:
            sp.post.discard(idx)
        kind = sp.kind
        if kind is TableKind.PT:
            assert sp.mapped is not None and sp.dma is not None
            old = int(sp.dma[idx]) if sp.mapped[idx] else None
            sp.mapped[idx] = False
            self._set_leaf(sp, idx, e)
            if old is not None:
                self._mpt.dma_unmap_guest_page(self._handle, old)
        elif kind is TableKind.PT64K:
            if idx % _STRIDE:
                return  # the hardware reads only every 16th entry of a 64K PT
            assert sp.mapped is not None and sp.dma is not None
            span = slice(idx, idx + _STRIDE)
            olds = sp.dma[span][sp.mapped[span]]
            sp.mapped[span] = False
            self._set_leaf64(sp, idx, e)
            self._unmap_all(olds)
        else:
            assert sp.children is not None
            old_child = sp.children[idx]
            sp.children[idx] = None
            old_huge = sp.huge.pop(idx, None) if sp.huge else None
            self._set_dir(sp, idx, e)
            if old_child is not None:
                self._unref(old_child)
                self._flush_unmaps()
            if old_huge is not None:
                self._mpt.dma_unmap_guest_page(self._handle, old_huge)

    def _replace_many(self, sp: ShadowPage, idxs: np.ndarray, guest: np.ndarray) -> None:
        """:meth:`_replace` for many indices, with one bulk map for a 4K PT."""
        if sp.dead:
            return
        if sp.kind is not TableKind.PT or idxs.size < 2:
            for i in idxs.tolist():
                if sp.dead:
                    return
                self._replace(sp, i, int(guest[i]))
            return
        assert sp.mapped is not None and sp.dma is not None
        if sp.post:
            sp.post.difference_update(idxs.tolist())
        was = sp.mapped[idxs]
        olds = sp.dma[idxs][was]
        sp.mapped[idxs] = False
        vals = guest[idxs]
        live = (vals & _ONE_U) != 0
        li, lv = idxs[live], vals[live]
        dma, ok = self._map_many((lv & _A4K_U) >> _SHIFT_U)
        sp.ents[idxs] = sp.fill
        good = li[ok]
        sp.ents[good] = dma[ok] | (lv[ok] & _FLAGS_U)
        sp.dma[good] = dma[ok]
        sp.mapped[good] = True
        self._unmap_all(olds)

    def _park(self, sp: ShadowPage, idx: int) -> None:
        """A store covered entry ``idx`` only partly: scratch until the next sync."""
        if sp.kind is TableKind.PT64K and idx % _STRIDE:
            return
        if idx in sp.post:
            return
        self._replace(sp, idx, 0)
        sp.post.add(idx)
        self._post[sp] = None

    # --- batched leaf population --------------------------------------------------------------------
    def _flush_pending(self) -> None:
        """Fill every leaf shadow created since the last flush: read the guest tables
        (contiguous frames in one read), decode with numpy, DMA-map all present
        entries in one bulk backend call, scatter the results."""
        while self._pending:
            batch = [sp for sp in self._pending if not sp.dead and not sp.populated]
            self._pending = []
            for sp in batch:
                sp.populated = True
            pts = [sp for sp in batch if sp.kind is TableKind.PT]
            if pts:
                self._fill_pts(pts)
            owners: list[ShadowPage] = []
            slot_parts: list[np.ndarray] = []
            gfn_parts: list[np.ndarray] = []
            flag_parts: list[np.ndarray] = []
            pt64 = [sp for sp in batch if sp.kind is TableKind.PT64K]
            for sp, g in zip(pt64, self._read_tables([sp.gfn for sp in pt64]), strict=True):
                if g is None:
                    self.stats.bad_tables += 1
                    continue
                heads = _STRIDE_SLOTS[(g[_STRIDE_SLOTS] & _ONE_U) != 0]
                he = g[heads]
                owners.append(sp)
                slot_parts.append((heads[:, None] + _STRIDE_IDX).reshape(-1))
                gfn_parts.append((((he & _A64K_U) >> _SHIFT_U)[:, None]
                                  + _STRIDE_GFNS).reshape(-1))
                flag_parts.append(np.repeat((he & _FLAGS_U) | np.uint64(_SPLIT), _STRIDE))
            for sp in batch:
                if sp.kind is TableKind.SPLIT2M:
                    owners.append(sp)
                    slot_parts.append(_ALL_SLOTS)
                    gfn_parts.append(np.uint64(sp.gfn) + _SPLIT_GFNS)
                    flag_parts.append(np.full(_N, sp.split_flags, dtype=_U64))
            if not owners:
                continue
            dma, ok = self._map_many(np.concatenate(gfn_parts))
            vals = np.where(ok, dma | np.concatenate(flag_parts), _U64(0))
            pos = 0
            for sp, slots in zip(owners, slot_parts, strict=True):
                n = int(slots.size)
                if not n:
                    continue
                assert sp.dma is not None and sp.mapped is not None
                k = ok[pos : pos + n]
                good = slots[k]
                sp.ents[good] = vals[pos : pos + n][k]
                sp.dma[good] = dma[pos : pos + n][k]
                sp.mapped[good] = True
                pos += n

    def _fill_pts(self, sps: list[ShadowPage]) -> None:
        """Fill fresh 4K shadow PTs from their guest pages, whole pages at a time:
        one bulk map of every present entry, then one row copy per page (the DMA
        and mapped arrays of each page become rows of the batch's matrices)."""
        mat, readable = self._read_matrix([sp.gfn for sp in sps])
        if not readable.all():
            self.stats.bad_tables += int(np.count_nonzero(~readable))
            sps = [sp for sp, r in zip(sps, readable.tolist(), strict=True) if r]
            mat = mat[readable]
            if not sps:
                return
        # bit 0 of each entry is bit 0 of its first byte (little endian): no uint64 temporary
        present = (mat.view(np.uint8)[:, ::8] & 1).view(bool)
        if present.all():
            gfns = mat & _A4K_U
            gfns >>= _SHIFT_U
            dma, ok = self._map_many(gfns.reshape(-1))
            dmat = dma.reshape(mat.shape)
            okm = ok.reshape(mat.shape)
            out = np.bitwise_and(mat, _FLAGS_U, out=gfns)  # the frames are used up
        else:
            dma, ok = self._map_many((mat[present] & _A4K_U) >> _SHIFT_U)
            dmat = np.zeros(mat.shape, dtype=_U64)
            dmat[present] = dma
            okm = present
            if not ok.all():
                okm = np.zeros(mat.shape, dtype=bool)
                okm[present] = ok
            out = mat & _FLAGS_U
        out |= dmat
        if not okm.all():
            out[~okm] = _U64(sps[0].fill)
        for sp, row, drow, mrow in zip(sps, out, dmat, okm, strict=True):
            sp.ents[:] = row
            sp.dma = drow.copy()  # own copies: a row view would pin the batch matrix
            sp.mapped = mrow.copy()

    def _read_matrix(self, gfns: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Guest pages ``gfns`` as rows of one uint64 matrix (runs of consecutive
        frames in one read each; a single ascending run is not copied), and
        which rows could be read."""
        n = len(gfns)
        g = np.array(gfns, dtype=np.int64)
        if n > 1 and bool((np.diff(g) == 1).all()):
            try:
                raw = self._mpt.read_gpa(self._handle, gfns[0] << PAGE_SHIFT, n << PAGE_SHIFT)
                return np.frombuffer(raw, dtype="<u8").reshape(n, _N), np.ones(n, dtype=bool)
            except (GuestMemoryError, InvalidGfnError):
                pass
        mat = np.zeros((n, _N), dtype=_U64)
        readable = np.zeros(n, dtype=bool)
        for i, row in enumerate(self._read_tables(gfns)):
            if row is not None:
                mat[i] = row
                readable[i] = True
        return mat, readable

    def _read_tables(self, gfns: list[int]) -> list[np.ndarray | None]:
        """Guest pages ``gfns`` as uint64 arrays, runs of consecutive frames in one read."""
        out: list[np.ndarray | None] = [None] * len(gfns)
        order = sorted(range(len(gfns)), key=gfns.__getitem__)
        i = 0
        while i < len(order):
            j = i + 1
            while j < len(order) and gfns[order[j]] - gfns[order[j - 1]] in (0, 1):
                j += 1
            first, last = gfns[order[i]], gfns[order[j - 1]]
            try:
                raw = self._mpt.read_gpa(self._handle, first << PAGE_SHIFT,
                                         (last - first + 1) << PAGE_SHIFT)
                mat = np.frombuffer(raw, dtype="<u8").reshape(-1, _N)
                for k in order[i:j]:
                    out[k] = mat[gfns[k] - first]
            except (GuestMemoryError, InvalidGfnError):
                for k in order[i:j]:
                    out[k] = self._read_table(gfns[k])
            i = j
        return out

    # --- trapped writes ------------------------------------------------------------------------------
    def _on_write(self, gpa: int, data: bytes) -> None:
        """Page-track handler: the guest stored ``data`` at ``gpa`` (already in guest RAM)."""
        with self._lock:
            off = gpa & PAGE_MASK
            n = len(data)
            if off + n <= PAGE_SIZE:
                self._write_page(gpa >> PAGE_SHIFT, off, data)
            else:  # a store across a page boundary: each page gets its part
                cut = PAGE_SIZE - off
                self._write_page(gpa >> PAGE_SHIFT, off, data[:cut])
                if ((gpa >> PAGE_SHIFT) + 1) in self._tables:
                    self._write_page((gpa >> PAGE_SHIFT) + 1, 0, data[cut:])
            if self._pending:
                self._flush_pending()

    def _write_page(self, gfn: int, off: int, data: bytes) -> None:
        gt = self._tables.get(gfn)
        if gt is None:
            self.stats.stray_writes += 1
            return
        self.stats.trapped_writes += 1
        n = len(data)
        if n == 8 and not off & 7:
            e = int.from_bytes(data, "little")
            idx = off >> 3
            shadows = list(gt.shadows.values())
            for sp in shadows:
                if not sp.dead:
                    self._replace(sp, idx, e)
        else:
            if n != 4 or off & 3:
                self.stats.odd_writes += 1
            first, last = off >> 3, (off + n - 1) >> 3
            for sp in list(gt.shadows.values()):
                for idx in range(first, last + 1):
                    if sp.dead:
                        break
                    s = idx << 3
                    if off <= s and s + 8 <= off + n:
                        self._replace(sp, idx, int.from_bytes(data[s - off : s - off + 8], "little"))
                    else:
                        self.stats.partial_writes += 1
                        self._park(sp, idx)
        if self._tables.get(gfn) is not gt:
            return  # the write removed the page's last use (a self-referencing entry)
        if gt.oos_slot is not None:
            snap = self.config.oos_pool.snapshot(gt.oos_slot).view(np.uint8)
            snap[off : off + n] = np.frombuffer(data, dtype=np.uint8)
        gt.write_cnt += 1
        if gt.write_cnt >= 2 and not gt.oos and self.config.enable_out_of_sync:
            for kind in gt.shadows:
                if not kind.is_leaf:
                    return
            self._go_oos(gt)

    # --- out of sync -----------------------------------------------------------------------------------
    def _go_oos(self, gt: GuestTable) -> None:
        pool = self.config.oos_pool
        slot = gt.oos_slot
        if slot is None:
            # a vGPU at its share of the host's pool reuses one of its own slots
            slot = pool.alloc() if len(self._oos_lru) < pool.share else None
            if slot is None:
                slot = self._reclaim_oos_slot(gt)
            if slot is None:
                self.stats.oos_pool_empty += 1
                return
            guest = self._read_table(gt.gfn)
            if guest is None:
                pool.free(slot)
                return
            pool.snapshot(slot)[:] = guest
            gt.oos_slot = slot
        self._oos_lru.pop(gt.gfn, None)
        self._oos_lru[gt.gfn] = gt
        self._track.disable(gt.gfn)
        gt.oos = True
        self._oos_now[gt.gfn] = gt
        self.stats.oos_entered += 1

    def _reclaim_oos_slot(self, keep: GuestTable) -> int | None:
        """Take the slot of this vGPU's least recently used out-of-sync page (synced
        first). Only own pages: another vGPU's are under that vGPU's lock."""
        for victim in self._oos_lru.values():
            if victim is keep:
                continue
            if victim.oos:
                self._resync(victim)
            slot = victim.oos_slot
            victim.oos_slot = None
            del self._oos_lru[victim.gfn]
            self.stats.oos_reclaimed += 1
            return slot
        return None

    def _resync(self, gt: GuestTable) -> None:
        """Track the page again, then re-shadow what changed since the snapshot."""
        assert gt.oos_slot is not None
        self._track.enable(gt.gfn)
        gt.oos = False
        del self._oos_now[gt.gfn]
        self.stats.oos_synced += 1
        guest = self._read_table(gt.gfn)
        if guest is None:
            return
        snap = self.config.oos_pool.snapshot(gt.oos_slot)
        changed = np.flatnonzero(guest != snap)
        snap[:] = guest
        if changed.size:
            for sp in list(gt.shadows.values()):
                self._replace_many(sp, changed, guest)

    def _drop_oos_slot(self, gt: GuestTable) -> None:
        if gt.oos:
            self._resync(gt)
        if gt.oos_slot is not None:
            self.config.oos_pool.free(gt.oos_slot)
            gt.oos_slot = None
        self._oos_lru.pop(gt.gfn, None)

    # --- post shadow -------------------------------------------------------------------------------------
    def _flush_post(self) -> None:
        items = list(self._post)
        self._post.clear()
        guests: dict[int, np.ndarray | None] = {}
        for sp in items:
            if sp.dead or not sp.post:
                continue
            idxs = np.array(sorted(sp.post), dtype=np.int64)
            sp.post.clear()
            if sp.gfn not in guests:
                guests[sp.gfn] = self._read_table(sp.gfn)
            guest = guests[sp.gfn]
            self.stats.post_flushed += int(idxs.size)
            if guest is not None:
                self._replace_many(sp, idxs, guest)
