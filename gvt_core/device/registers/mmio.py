"""BAR0 access emulation of one vGPU: the virtual register file and its dispatch.

Offsets are relative to the guest's BAR0 (facts 5.3, 4.1):

* ``[0, 2 MiB)`` registers: a 4-byte aligned access to a tracked register
  goes through one dict lookup to a handler bound at creation; sizes 1..8
  are split into dwords (partial dwords merged first); an access must be
  naturally aligned unless every register it touches is ``F_UNALIGN``. The
  dispatch is built from :mod:`~gvt_core.device.registers.table` (read-only
  masks merged in before a handler sees a written value, as upstream does);
  other subsystems replace handlers with :meth:`Mmio.attach_handler` and
  :meth:`Mmio.attach_register`. The large blocks (MCHBAR mirror, palettes)
  are plain storage found by range. Untracked offsets are served from the
  vreg, counted, and logged once each.
* ``[2 MiB, 8 MiB)`` reserved: reads all ones, writes dropped, counted.
* ``[8 MiB, 16 MiB)`` GGTT: 4/8-byte naturally aligned accesses go to
  :class:`~gvt_core.device.memory.ggtt.Ggtt` (offset made relative to the GGTT start).
* In failsafe mode everything is plain storage: the vreg, or the virtual GGTT.

Nothing here raises for guest input: bad accesses read all ones, writes are
dropped, and ``vgpu.stats.bad_accesses`` counts them.

Every entry point (the bound accessors, :meth:`Mmio.read`/:meth:`Mmio.write`)
checks, under the vGPU lock, that the vGPU was not destroyed: after
:meth:`Mmio.revoke` an access that was blocked on the lock, or arrives later
through an accessor someone kept, reads all ones, writes nothing and is
counted in ``vgpu.stats.dead_accesses``.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Callable
from typing import Any

from gvt_core.device import limits
from gvt_core.device.registers import golden
from gvt_core.device.registers.handlers import RegisterHandlers, resolve
from gvt_core.device.registers.pvinfo import Pvinfo
from gvt_core.device.registers.table import (
    BLOCKS,
    DWORD,
    F_MODE_MASK,
    F_UNALIGN,
    INFO_BY_DWORD,
    INFO_BY_NAME,
    REGISTER_TABLE,
    MmioInfo,
    find,
)
from gvt_core.errors import RegisterBehaviourError
from gvt_core.hw import regs

log = logging.getLogger(__name__)

#: dispatch-dict marker: the register is a plain vreg dword.
_PLAIN: Any = object()
#: dict.get default: the offset is not a tracked dword.
_MISS: Any = object()

#: log ``extra``: these lines are bounded here (MAX_LOGGED_OFFSETS), not by the
#: repeat limit of ``gvt_core.device.guest_log``.
_BOUNDED = {"bounded": True}

_MMIO_SIZE = regs.MMIO_SIZE
_GTT_START = regs.GTT_START_OFFSET
_BAR0_SIZE = regs.BAR0_SIZE
_SIZE_MASK = {n: (1 << (8 * n)) - 1 for n in range(1, 9)}

#: write handlers that take the written value as bits to act on (write-1-to-clear,
#: masked updates): a partial write reaches them with zeros in the bytes not written,
#: as upstream hands them the guest's data, not a merged dword.
_VALUE_HANDLERS = frozenset(
    {"w_iir", "w_fdi_rx_iir", "w_dp_tp_status", "w_mul_force_wake", "w_ring_reset_ctl",
     "w_ring_mode"}
)
#: dwords whose partial writes merge with zeros instead of the old value.
_ZERO_FILL = frozenset(
    d for i in REGISTER_TABLE
    if i.flags & F_MODE_MASK or i.write in _VALUE_HANDLERS for d in i.dwords
)
_UNALIGN_OK = frozenset(d for i in REGISTER_TABLE if i.flags & F_UNALIGN for d in i.dwords)
#: range-looked-up records (upstream's MMIO blocks) other than PVINFO, which is per dword.
_RANGE_BLOCKS = tuple(b for b in BLOCKS if b.offset != regs.VGT_PVINFO_PAGE)


def all_ones(size: int) -> int:
    """What a bad read returns: ``size`` bytes (at most 8) of 0xFF."""
    return _SIZE_MASK[min(size, 8)] if size > 0 else 0


def _dead_read(size: Any) -> int:
    """What a read of a destroyed vGPU returns (``size`` as the backend passed it)."""
    return _SIZE_MASK.get(size, _SIZE_MASK[8]) if isinstance(size, int) else _SIZE_MASK[8]


class _CallerHoldsLock:
    """Lock and BAR0 base for :meth:`Mmio.read`/:meth:`Mmio.write`: their callers
    (the ``Gvt`` entry points, host-side code) hold the vGPU lock already and
    pass offsets with BAR0 subtracted."""

    bar0_base = 0

    @staticmethod
    def acquire() -> bool:
        return True

    @staticmethod
    def release() -> None:
        return None


_CALLER_HOLDS_LOCK = _CallerHoldsLock()


class Mmio:
    """The emulated BAR0 of one vGPU."""

    def __init__(self, vgpu: Any) -> None:
        self.vgpu = vgpu
        self._stats = vgpu.stats
        #: the virtual register file, little-endian, initialised from the golden state.
        #: Whole pages of its own (not heap memory): ACRN's PV MMIO maps them into the
        #: guest read-only (``CoreOps.vreg_pages``), so nothing else may share them.
        self.vreg = mmap.mmap(-1, _MMIO_SIZE)
        self.vreg[:] = golden.VGPU_MMIO
        #: the vreg as dwords (native order is little endian on every supported host).
        self.v32 = memoryview(self.vreg).cast("I")
        self.handlers = RegisterHandlers(self)
        self.pvinfo = Pvinfo(self)
        self.pvinfo.populate()
        #: record offsets the guest has touched (the kernel's F_ACCESSED).
        self.accessed: set[int] = set()
        #: untracked dword offsets seen (each logged once), at most
        #: ``MAX_LOGGED_OFFSETS``; later ones are only counted.
        self.unknown_offsets: set[int] = set()
        #: one cell shared with every accessor closure: False once the vGPU is destroyed.
        self._live = [True]
        self._r4: dict[int, Any] = {}
        self._w4: dict[int, Any] = {}
        #: behaviour attached by other subsystems: handler name -> callable, and
        #: record offset -> (read, write).
        self._attached: dict[str, Any] = {}
        self._attached_regs: dict[int, tuple[Any, Any]] = {}
        #: records attached ``raw``: their writers see the guest's bits as written.
        self._raw_regs: set[int] = set()
        #: dwords of raw records: partial writes fill with zeros (as ``_ZERO_FILL``).
        self._raw_dwords: set[int] = set()
        self._build_dispatch()
        self._bind_fast_paths()

    # --- dispatch tables (built once per vGPU) -----------------------------------------
    def _write_rule(self, info: MmioInfo) -> Any:
        """Upstream's write path for a record: an all-ones read-only mask drops the
        write; otherwise the read-only bits are merged back before the handler (or
        the mode-mask rule, or plain storage) sees the value."""
        h = self.handlers
        if info.ro_mask == DWORD:
            return h.w_drop
        name = info.write
        handler = None
        if name is not None:
            handler = self._attached.get(name) or resolve(h, name)
        reg_write = self._attached_regs.get(info.offset, (None, None))[1]
        if reg_write is not None:
            if info.offset in self._raw_regs:
                return reg_write
            handler = reg_write
        if handler is None:
            if info.flags & F_MODE_MASK:
                return h.w_masked
            if info.ro_mask:
                return h.w_ro_mask
            return _PLAIN
        if info.ro_mask:
            return self._ro_merging(info.ro_mask, handler)
        return handler

    def _ro_merging(self, ro: int, handler: Any) -> Any:
        v32 = self.v32

        def merged(offset: int, value: int) -> None:
            handler(offset, (value & ~ro & DWORD) | (v32[offset >> 2] & ro))

        return merged

    def _read_rule(self, info: MmioInfo) -> Any:
        reg_read = self._attached_regs.get(info.offset, (None, None))[0]
        if reg_read is not None:
            return reg_read
        if info.read is None:
            return _PLAIN
        return self._attached.get(info.read) or resolve(self.handlers, info.read)

    def _bind(self, info: MmioInfo) -> None:
        read, write = self._read_rule(info), self._write_rule(info)
        touched = info.offset in self.accessed
        for d in info.dwords:
            self._r4[d] = read if touched else self._first_read(d, info.offset, read)
            self._w4[d] = write if touched else self._first_write(d, info.offset, write)

    def _build_dispatch(self) -> None:
        for info in REGISTER_TABLE:
            if not info.is_block or info.offset == regs.VGT_PVINFO_PAGE:
                self._bind(info)

    def _first_read(self, d: int, record: int, real: Any) -> Any:
        """First access marks the record accessed, then the real entry takes over."""

        def first(offset: int) -> int:
            self.accessed.add(record)
            self._r4[d] = real
            return self.v32[d >> 2] if real is _PLAIN else real(offset)

        return first

    def _first_write(self, d: int, record: int, real: Any) -> Any:
        def first(offset: int, value: int) -> None:
            self.accessed.add(record)
            self._w4[d] = real
            if real is _PLAIN:
                self.v32[d >> 2] = value
            else:
                real(offset, value)

        return first

    # --- behaviour from other subsystems ------------------------------------------------
    def attach_handler(self, name: str, fn: Callable[..., Any]) -> None:
        """Give every record whose read or write handler is ``name`` the behaviour
        ``fn`` on this vGPU (a read handler takes ``(offset)`` and returns the dword,
        a write handler takes ``(offset, value)``). The table's flags still apply: a
        read-only mask is merged in before ``fn`` sees a written value. The
        replaced default stays callable as ``mmio.handlers.<name>``.

        :raises RegisterBehaviourError: no record of the table uses ``name``.
        """
        users = [i for i in REGISTER_TABLE if name in (i.read, i.write)]
        if not users:
            raise RegisterBehaviourError(
                f"no register of the BDW table uses handler {name!r}; attach to one of "
                "the handler names in gvt_core.device.registers.table, or to a register "
                "with attach_register"
            )
        self._attached[name] = fn
        for info in users:
            if info.is_block and info.offset != regs.VGT_PVINFO_PAGE:
                continue
            self._bind(info)

    def attach_register(
        self, register: str | int, *, read: Callable[[int], int] | None = None,
        write: Callable[[int, int], None] | None = None, raw: bool = False,
    ) -> None:
        """Give one register (by table name or offset) its own read and/or write
        behaviour on this vGPU, whether or not the table names a handler for it.

        With ``raw`` the writer sees the guest's value as written: the table's
        read-only mask is not merged in, and a partial write reaches it with
        zeros in the bytes not written. That is for write-1-to-clear status bits
        the table marks read-only because only the device sets them
        (PCH_PORT_HOTPLUG's hotplug status).

        :raises RegisterBehaviourError: the register is not in the table, or is a
            range-looked-up block (the MCHBAR mirror, the palettes).
        """
        info = INFO_BY_NAME.get(register) if isinstance(register, str) else find(register)
        if info is None or (isinstance(register, int) and register != info.offset):
            raise RegisterBehaviourError(
                f"{register!r} is not the start of a register of the BDW table"
            )
        if info.is_block and info.offset != regs.VGT_PVINFO_PAGE:
            raise RegisterBehaviourError(
                f"{info.name} is a {info.size}-byte block served by range; its dwords "
                "cannot take their own behaviour"
            )
        old_read, old_write = self._attached_regs.get(info.offset, (None, None))
        self._attached_regs[info.offset] = (read or old_read, write or old_write)
        if raw:
            self._raw_regs.add(info.offset)
            self._raw_dwords.update(info.dwords)
        else:
            self._raw_regs.discard(info.offset)
            self._raw_dwords.difference_update(info.dwords)
        self._bind(info)

    # --- the guest's accesses ----------------------------------------------------------------
    # The methods are the general path. Each instance shadows them with closures
    # over its dispatch dicts and vreg view (``_bind_fast_paths``) that answer a
    # tracked 4-byte access with one dict lookup and one store or handler call,
    # no attribute lookups, and fall back to the same general path otherwise.
    def read(self, offset: int, size: int) -> int:
        """A guest load of ``size`` bytes at BAR0 + ``offset``."""
        self._stats.mmio_reads += 1
        return self._read_slow(offset, size)

    def write(self, offset: int, value: int, size: int) -> None:
        """A guest store of ``size`` bytes (``value`` little-endian) at BAR0 + ``offset``."""
        self._stats.mmio_writes += 1
        self._write_slow(offset, value, size)

    def _bind_fast_paths(self) -> None:
        read, write = self.guest_accessors(_CALLER_HOLDS_LOCK, _CALLER_HOLDS_LOCK)
        read.__doc__ = Mmio.read.__doc__
        write.__doc__ = Mmio.write.__doc__
        self.read = read  # type: ignore[method-assign]
        self.write = write  # type: ignore[method-assign]

    def guest_accessors(
        self, lock: Any, cfg: Any
    ) -> tuple[Callable[[int, int], int], Callable[[int, int, int], None]]:
        """Guest-physical load/store entry points for one vGPU, with its lock.

        The same work as ``Gvt.emulate_mmio_read/write`` (take the vGPU lock,
        subtract the current BAR0 base, dispatch) folded into one closure per
        direction over the dispatch dicts and the vreg view: a tracked 4-byte
        access is one dict lookup and one store or handler call, so a backend's
        hot path costs one call before the register handler. Everything else
        (other sizes, unknown offsets, outside BAR0) takes the validating slow
        path.
        """
        acquire, release = lock.acquire, lock.release
        r4_get, w4_get = self._r4.get, self._w4.get
        v32, stats, vgpu = self.v32, self._stats, self.vgpu
        read_slow, write_slow = self._read_slow, self._write_slow
        live = self._live

        def guest_read(gpa: int, size: int) -> int:
            acquire()
            try:
                if not live[0]:
                    stats.dead_accesses += 1
                    return _dead_read(size)
                offset = gpa - cfg.bar0_base
                stats.mmio_reads += 1
                if size == 4:
                    h = r4_get(offset, _MISS)
                    if h is _PLAIN:
                        return v32[offset >> 2]
                    if h is not _MISS and not vgpu.failsafe:
                        return h(offset)
                return read_slow(offset, size)
            finally:
                release()

        def guest_write(gpa: int, value: int, size: int) -> None:
            acquire()
            try:
                if not live[0]:
                    stats.dead_accesses += 1
                    return
                offset = gpa - cfg.bar0_base
                stats.mmio_writes += 1
                if size == 4:
                    h = w4_get(offset, _MISS)
                    if h is _PLAIN:
                        try:  # free unless the value does not fit a dword (slow path masks it)
                            v32[offset >> 2] = value
                            return
                        except (ValueError, OverflowError, TypeError):
                            pass
                    elif h is not _MISS and not vgpu.failsafe:
                        h(offset, value & 0xFFFF_FFFF)
                        return
                write_slow(offset, value, size)
            finally:
                release()

        return guest_read, guest_write

    # --- everything that is not a 4-byte access to a tracked register ---------------------------
    def _bad(self) -> None:
        self._stats.bad_accesses += 1

    def _reg_access_ok(self, offset: int, size: int) -> bool:
        if offset < 0 or offset + size > _MMIO_SIZE or not 1 <= size <= 8:
            return False
        if size in (1, 2, 4, 8) and offset % size == 0:
            return True
        return all(d in _UNALIGN_OK for d in range(offset & ~3, offset + size, 4))

    def _read_slow(self, offset: int, size: int) -> int:
        if not isinstance(size, int) or not isinstance(offset, int):
            self._bad()
            return 0
        failsafe = self.vgpu.failsafe
        if _GTT_START <= offset < _BAR0_SIZE:
            if size in (4, 8) and offset % size == 0 and offset + size <= _BAR0_SIZE:
                if failsafe:
                    return self.vgpu.ggtt.read_virtual(offset - _GTT_START, size)
                return self.vgpu.ggtt.read(offset - _GTT_START, size)
            self._bad()
            return all_ones(size)
        if failsafe:
            if offset >= 0 and offset + size <= _MMIO_SIZE and 1 <= size <= 8:
                return int.from_bytes(self.vreg[offset : offset + size], "little")
            self._bad()
            return all_ones(size)
        if not self._reg_access_ok(offset, size):
            self._bad()
            return all_ones(size)
        first = offset & ~3
        raw = bytearray()
        for d in range(first, offset + size, 4):
            raw += self._read_dword(d).to_bytes(4, "little")
        start = offset - first
        return int.from_bytes(raw[start : start + size], "little")

    def _read_dword(self, d: int) -> int:
        h = self._r4.get(d, _MISS)
        if h is _PLAIN:
            return self.v32[d >> 2]
        if h is _MISS:
            self._block_or_untracked(d)
            return self.v32[d >> 2]
        return h(d)

    def _write_slow(self, offset: int, value: int, size: int) -> None:
        if not isinstance(size, int) or not isinstance(offset, int) or not isinstance(value, int):
            self._bad()
            return
        failsafe = self.vgpu.failsafe
        if _GTT_START <= offset < _BAR0_SIZE:
            if size in (4, 8) and offset % size == 0 and offset + size <= _BAR0_SIZE:
                if failsafe:
                    self.vgpu.ggtt.write_virtual(offset - _GTT_START, value, size)
                else:
                    self.vgpu.ggtt.write(offset - _GTT_START, value, size)
                return
            self._bad()
            return
        if failsafe:
            if offset >= 0 and offset + size <= _MMIO_SIZE and 1 <= size <= 8:
                self.vreg[offset : offset + size] = (value & _SIZE_MASK[size]).to_bytes(
                    size, "little")
            else:
                self._bad()
            return
        if not self._reg_access_ok(offset, size):
            self._bad()
            return
        value &= _SIZE_MASK[size]
        end = offset + size
        for d in range(offset & ~3, end, 4):
            lo, hi = max(offset, d), min(end, d + 4)
            part = (value >> (8 * (lo - offset))) & _SIZE_MASK[hi - lo]
            if hi - lo == 4:
                dword = part
            else:
                keep = DWORD & ~(_SIZE_MASK[hi - lo] << (8 * (lo - d)))
                zero = d in _ZERO_FILL or d in self._raw_dwords
                base = 0 if zero else self.v32[d >> 2] & keep
                dword = base | (part << (8 * (lo - d)))
            self._write_dword(d, dword)
            if self.vgpu.failsafe:
                return  # a handler put the vGPU into failsafe: the rest is not emulated

    def _write_dword(self, d: int, value: int) -> None:
        h = self._w4.get(d, _MISS)
        if h is _PLAIN:
            self.v32[d >> 2] = value
        elif h is _MISS:
            self._block_or_untracked(d)
            self.v32[d >> 2] = value
        else:
            h(d, value)

    def _block_or_untracked(self, d: int) -> None:
        """A dword with no dispatch entry: inside a block (plain storage, marked
        accessed, as upstream's blocks without handlers) or untracked (counted)."""
        for block in _RANGE_BLOCKS:
            if block.offset <= d < block.end:
                self.accessed.add(block.offset)
                return
        self._untracked(d)

    def _untracked(self, d: int) -> None:
        self._stats.unknown_mmio += 1
        seen = self.unknown_offsets
        if d not in seen and len(seen) < limits.MAX_LOGGED_OFFSETS:
            seen.add(d)
            log.info("vGPU %d: untracked MMIO register %#x served from vreg", self.vgpu.id, d,
                     extra=_BOUNDED)
            if len(seen) == limits.MAX_LOGGED_OFFSETS:
                log.info("vGPU %d: %d untracked MMIO registers logged; further ones are only "
                         "counted (stats.unknown_mmio)", self.vgpu.id, len(seen), extra=_BOUNDED)

    # --- host-side access (no guest semantics) ------------------------------------------------
    def get32(self, offset: int) -> int:
        return self.v32[offset >> 2]

    def set32(self, offset: int, value: int) -> None:
        self.v32[offset >> 2] = value & DWORD

    def info(self, offset: int) -> MmioInfo | None:
        """The tracked register covering ``offset`` (the command parser's whitelist check)."""
        info = INFO_BY_DWORD.get(offset & ~3)
        return info if info is not None else find(offset)

    # --- life cycle ------------------------------------------------------------------------------
    @property
    def revoked(self) -> bool:
        return not self._live[0]

    def revoke(self) -> None:
        """vGPU destroy: every accessor, bound or not, stops acting for the vGPU."""
        self._live[0] = False

    def reset(self, dmlr: bool) -> None:
        """DMLR: the whole golden state, PVINFO repopulated (the vGPU disables its
        host fences). GT reset: only the registers below GEN8_MASTER_IRQ (facts 2.3)."""
        if dmlr:
            self.vreg[:] = golden.VGPU_MMIO
            self.pvinfo.populate()
        else:
            end = golden.GT_RESET_END
            self.vreg[:end] = golden.GOLDEN_MMIO[:end]
        self.handlers.reset()
