"""The command scanner's fuzz campaign on the backend under test (see ``scanner_fuzz``).

A few hundred buffers run in the default suite; the long campaign (at least
10,000 buffers per backend: mutations of real guest workloads, then
hypothesis-drawn ones) runs with the ``long`` marker::

    pytest -m long --pyargs gvt_core.testing -k scanner_fuzz --gvt-backend sim -s
    pytest -m long --pyargs gvt_core.testing -k scanner_fuzz --gvt-backend kvmgt -s

and prints its figures (buffers tried, accepted, rejected by reason).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from gvt_core.device.gvt import Gvt
from gvt_core.testing.guests import release_guests
from gvt_core.testing.scanner_fuzz import Campaign, run_drawn, workload_strategy
from gvt_core.testing.test_scenarios import gvt_host  # noqa: F401  (fixture)

#: buffers of the default run, and of the long campaign (mutations + hypothesis).
SHORT_MUTATIONS = 200
SHORT_DRAWN = 40
LONG_MUTATIONS = int(os.environ.get("GVT_FUZZ_MUTATIONS", "9000"))
LONG_DRAWN = int(os.environ.get("GVT_FUZZ_DRAWN", "1500"))
SEED = int(os.environ.get("GVT_FUZZ_SEED", "11"))


@pytest.fixture
def campaign(gvt_host: Gvt, gvt_backend_name: str) -> Iterator[Campaign]:  # noqa: F811
    c = Campaign(gvt_host)
    yield c
    if c.stats.tried:
        print("\n" + c.stats.summary(gvt_backend_name))
    release_guests(gvt_host, [c.attacker.vm, *(v.vm for v in c.victims)])


def _drawn(c: Campaign, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(workload_strategy())
    def one(drawn: tuple[int, list[int], list[int], bool]) -> None:
        run_drawn(c, *drawn)

    one()


def _campaign(c: Campaign, mutations: int, drawn: int) -> None:
    c.run_mutations(mutations, SEED)
    _drawn(c, drawn)
    c.finish()
    st = c.stats
    assert st.tried == mutations + drawn
    assert st.accepted and st.completed and sum(st.rejected.values())  # both ways were taken
    assert st.accepted + sum(st.rejected.values()) == st.tried


def test_fuzzed_buffers_never_reach_the_host_or_other_vgpus(campaign: Campaign) -> None:
    _campaign(campaign, SHORT_MUTATIONS, SHORT_DRAWN)


@pytest.mark.long
def test_fuzz_campaign_long(campaign: Campaign) -> None:
    _campaign(campaign, LONG_MUTATIONS, LONG_DRAWN)
    assert campaign.stats.tried >= 10_000 or LONG_MUTATIONS + LONG_DRAWN < 10_000


def test_campaign_canaries_see_a_change(campaign: Campaign) -> None:
    """The oracle works: a write into a victim's canary page, a host canary block or a
    victim's register is reported."""
    victim = campaign.victims[0]
    page = victim.canaries[-1]
    page.write(8, b"\x00\x01\x02\x03")
    block = campaign.canaries.host_blocks[0]
    block.write(16, b"\xff")
    victim.vgpu.mmio.set32(0x2028, victim.vgpu.mmio.get32(0x2028) ^ 1)
    bad = campaign.canaries.check()
    assert any("guest RAM of victim" in b for b in bad)
    assert any("host page" in b for b in bad)
    assert any("registers of victim" in b for b in bad)
    campaign.canaries.remove()
