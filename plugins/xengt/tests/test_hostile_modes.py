"""The hostile-guest suite again, as xengt runs on a real Xen host.

The default run covers xengt with the aperture mapped into the domain
(``XEN_DOMCTL_memory_mapping``). Here every hostile-guest test runs with
``aperture=trap``, the default on Xen: the backend itself serves the aperture
slice from the host's frames, so an access blocked across a destroy, or a
write to an unmapped aperture page, is the backend's to stop, not Xen's.
"""

from __future__ import annotations

from typing import Any

import pytest

from gvt_core.testing import test_hostile_guests

globals().update(
    {name: getattr(test_hostile_guests, name)
     for name in dir(test_hostile_guests) if name.startswith("test_")}
)
host = test_hostile_guests.host
guests = test_hostile_guests.guests

pytestmark = pytest.mark.parametrize("gvt_backend_name", ["xengt"], indirect=True)


@pytest.fixture
def gvt_backend_options() -> dict[str, Any]:
    return {"hypervisor": "emulated", "aperture": "trap", "vcpus": "2"}
