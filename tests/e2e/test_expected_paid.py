"""Every offer in a search states, beside its planned kW, the reduction it expects to be paid for against the
settlement baseline — on the shared network's real processes, where no site has metered history yet, so each
says so: null, with the reason (bpp/paid_reduction.py, README "Offers that stay true")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flexmarket.runner import Network
from tests.e2e.helpers import bap_client

pytestmark = pytest.mark.e2e


def test_search_offers_state_their_expected_paid_reduction(network: Network) -> None:
    bap = bap_client(network)
    now = datetime.now(UTC)
    tx = bap.search(now + timedelta(hours=1), now + timedelta(hours=47), 50, region="GB-R13")["transaction_id"]
    view = bap.wait(tx, lambda v: len({o["provider_id"] for o in v["offers"]}) >= 3, timeout=30)
    assert view["offers"]
    for offer in view["offers"]:
        assert "expected_paid_kw" in offer and offer["expected_paid_kw"] is None, offer
        assert "no metered history for site" in offer["expected_paid_reason"], offer
