"""The OpRegion's VBT describes the virtual DP port the way i915's intel_bios.c reads it."""

from __future__ import annotations

import struct

import attrs

from gvt_core.device.display.opregion import build_opregion, build_vbt
from gvt_core.hw import display_regs as dr
from gvt_core.hw import regs

DEVICE_TYPE_DISPLAYPORT_OUTPUT = 1 << 2  # intel_vbt_defs.h
DVO_PORT_DPB = 7
DP_AUX_B = 0x10


@attrs.frozen
class Child:
    handle: int
    device_type: int
    dvo_port: int
    aux_channel: int
    dp_compat: bool
    integrated_encoder: bool


def parse(vbt: bytes) -> tuple[dict[int, bytes], list[Child]]:
    """Header checks and block walk as intel_bios_is_valid_vbt / parse_general_definitions."""
    sig, _version, _header_size, vbt_size, _csum, _, bdb_offset = struct.unpack_from(
        "<20sHHHBBI", vbt)
    assert sig.startswith(b"$VBT") and vbt_size == len(vbt) and sum(vbt) % 256 == 0
    bsig, _bversion, bheader, bsize = struct.unpack_from("<16sHHH", vbt, bdb_offset)
    assert bsig.startswith(b"BIOS_DATA_BLOCK") and bdb_offset + bsize == vbt_size
    blocks: dict[int, bytes] = {}
    pos = bdb_offset + bheader
    while pos < len(vbt):
        block_id, size = struct.unpack_from("<BH", vbt, pos)
        blocks[block_id] = vbt[pos + 3 : pos + 3 + size]
        pos += 3 + size
    defs = blocks[regs.BDB_GENERAL_DEFINITIONS]
    child_size = defs[4]
    children = []
    for i in range((len(defs) - 5) // child_size):
        c = defs[5 + i * child_size : 5 + (i + 1) * child_size]
        handle, dtype = struct.unpack_from("<HH", c)
        children.append(Child(handle, dtype, c[16], c[25],
                              bool(c[dr.VBT_CHILD_DP_COMPAT_BYTE] & dr.VBT_CHILD_DP_COMPAT),
                              bool(c[dr.VBT_CHILD_INTEGRATED_ENCODER_BYTE]
                                   & dr.VBT_CHILD_INTEGRATED_ENCODER)))
    return blocks, children


def test_port_b_is_a_dp_connector_with_aux_b() -> None:
    _, children = parse(build_vbt())
    port_b = [c for c in children if c.dvo_port == DVO_PORT_DPB]
    assert len(port_b) == 1
    child = port_b[0]
    assert child.device_type & DEVICE_TYPE_DISPLAYPORT_OUTPUT
    assert child.aux_channel == DP_AUX_B
    assert child.dp_compat and child.integrated_encoder
    assert regs.VGPU_DISPLAY_PORT_BDW == regs.PORT_B


def test_all_four_ports_as_upstream() -> None:
    _, children = parse(build_vbt())
    assert [c.dvo_port for c in children] == list(regs.DVO_PORT_DP)
    assert [c.aux_channel for c in children] == list(regs.DP_AUX_CHANNEL)
    assert all(c.device_type == regs.DEVICE_TYPE_DP and c.dp_compat and c.integrated_encoder
               for c in children)


def test_driver_features_say_no_lvds() -> None:
    blocks, _ = parse(build_vbt())
    driver = blocks[dr.BDB_DRIVER_FEATURES]
    assert len(driver) == dr.BDB_DRIVER_FEATURES_SIZE
    lvds_config = (struct.unpack_from("<H", driver, 7)[0] >> 11) & 0x3
    assert lvds_config == 0  # BDB_DRIVER_FEATURE_NO_LVDS


def test_vbt_in_opregion() -> None:
    vbt = build_vbt()
    assert build_opregion()[regs.OPREGION_VBT : regs.OPREGION_VBT + len(vbt)] == vbt
    assert len(vbt) <= regs.OPREGION_VBT_MAX
