"""The whole MPT contract suite again, as xengt runs on a real Xen host.

The default run covers xengt as loaded without options (emulated Xen,
aperture mapped with ``XEN_DOMCTL_memory_mapping``, one vCPU). Here every
contract test runs with ``aperture=trap`` (the aperture slice trapped on
the ioreq server and served from the simulated aperture, the default on
Xen, where that aperture has no machine frames) and two vCPUs per guest.
"""

from __future__ import annotations

from typing import Any

import pytest

from gvt_core.testing import test_contract

globals().update(
    {name: getattr(test_contract, name) for name in dir(test_contract) if name.startswith("test_")}
)

pytestmark = pytest.mark.parametrize("gvt_backend_name", ["xengt"], indirect=True)


@pytest.fixture
def gvt_backend_options() -> dict[str, Any]:
    return {"hypervisor": "emulated", "aperture": "trap", "vcpus": "2"}
