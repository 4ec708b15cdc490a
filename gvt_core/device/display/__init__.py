"""What the guest's display engine sees: OpRegion (and, as it grows, ports, EDID, planes)."""
