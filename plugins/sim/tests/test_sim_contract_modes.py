"""The whole MPT contract suite again, on sim's other page-track and DMA modes.

The project's default run covers sim as loaded without options (forwarded
writes, IOMMU); here every contract test runs with the three other
combinations, by overriding the plugin's ``gvt_backend_options`` fixture.
"""

from __future__ import annotations

from typing import Any

import pytest

from gvt_core.testing import test_contract

# every contract test, collected again in this module
globals().update(
    {name: getattr(test_contract, name) for name in dir(test_contract) if name.startswith("test_")}
)

pytestmark = pytest.mark.parametrize("gvt_backend_name", ["sim"], indirect=True)


@pytest.fixture(
    params=[
        {"page_track": "landed", "dma": "iommu"},
        {"page_track": "forwarded", "dma": "identity"},
        {"page_track": "landed", "dma": "identity"},
    ],
    ids=lambda o: f"{o['page_track']}-{o['dma']}",
)
def gvt_backend_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(request.param)
