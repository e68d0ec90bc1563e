"""A data centre runs its own BPP platform (README "Running your own platform"): `flexmarket provider
own-platform` writes its providers file, and `flexmarket serve bpp` with FLEXMARKET_AUTO_SUBSCRIBE subscribes
it through the registry's /subscribe with its own keys. Real processes — its own BPP, worker, database, home
and Celery queue beside the shared network — and a buyer's search through the gateway reaches it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flexmarket.cli import app
from flexmarket.runner import Network, own_bpp
from kernel import db
from tests.e2e.helpers import bap_client, rows

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SUBSCRIBER_ID = "own-dc.bpp.flexmarket.test"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "provider.json"


@pytest.fixture()
def own_platform(network: Network, pg_server_url: str, tmp_path: Path) -> Iterator[Network]:
    """The example data centre's own platform: a BPP and a worker of its own, started as an operator would."""
    providers_file = tmp_path / "providers.json"
    args = ["provider", "own-platform", str(EXAMPLE), "--subscriber-id", SUBSCRIBER_ID, "--slug", "own"]
    written = CliRunner().invoke(app, [*args, "--out", str(providers_file)])
    assert written.exit_code == 0, written.output
    url = db.create_database(pg_server_url, "fm_own")
    own = own_bpp(network, home=tmp_path, database_url=url, providers_file=providers_file, name="own")
    try:
        own.start(timeout=120)  # the BPP plans the example's 48 h and subscribes before it is healthy
        yield own
    finally:
        own.stop()
        db.drop_database(pg_server_url, url)


def test_an_own_platform_subscribes_with_its_own_keys_and_answers_searches(
    network: Network, own_platform: Network, db_url: str
) -> None:
    registered = rows(db_url, "select status, url from registry.subscribers where subscriber_id = %s", SUBSCRIBER_ID)
    assert registered and {r[0] for r in registered} == {"SUBSCRIBED"}
    assert {r[1] for r in registered} == {own_platform.processes["bpp"].health_url.replace("/health", "/own")}
    bap = bap_client(network)
    now = datetime.now(UTC)

    def own_offers() -> list[dict[str, Any]]:
        # a new search each time: the gateway's registry cache (FLEXMARKET_REGISTRY_CACHE_TTL_S) may predate it
        tx = bap.search(now + timedelta(hours=1), now + timedelta(hours=47), 50, region="GB-R13")["transaction_id"]
        view = bap.wait(tx, lambda v: len({o["bpp_id"] for o in v["offers"]}) >= 1, timeout=30)
        try:
            view = bap.wait(tx, lambda v: any(o["bpp_id"] == SUBSCRIBER_ID for o in v["offers"]), timeout=10)
        except TimeoutError:
            return []
        return [o for o in view["offers"] if o["bpp_id"] == SUBSCRIBER_ID]

    deadline = datetime.now(UTC) + timedelta(seconds=120)
    offers = own_offers()
    while not offers and datetime.now(UTC) < deadline:
        offers = own_offers()
    assert offers and {o["provider_id"] for o in offers} == {"example-dc"}
