"""A real network for end-to-end tests: uvicorn processes on loopback (registry, gateway, BAP, BPP,
ledger) and two Celery workers (one for the BPP's queue, one for the rest, as separate hosts would
run them), against real PostgreSQL and Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bap.client import order_in
from beckn import envelope, signing
from beckn.identity import Identity, load_identity
from bpp.catalog import example_config
from flexmarket.runner import BAP_ID, Network, prepare_network
from kernel.config import environment
from kernel.embedded import free_port_range
from tests.e2e.helpers import bap_client, tomorrow_window

OTHER_CITY = "GB-R1"  # North Scotland: a second BPP platform that a London search must not reach


def two_city_config() -> dict[str, Any]:
    london = example_config(3)
    north = example_config(1, city_code=OTHER_CITY)["platforms"][0]
    north.update(subscriber_id="north-platform.bpp.flexmarket.local", slug="north-platform", name="North platform")
    north["providers"][0]["id"] = "dc-north-scotland"
    for o in north["providers"][0]["offers"] + north["providers"][0].get("cft_series", []):
        o["id"] = o["id"].replace("dc-01", "dc-north-scotland")
    for site in north["providers"][0]["sites"]:  # its own meter: the ledger binds a meter to one provider
        site["meter_id"] = site["meter_id"].replace("MTR-", "MTR-N")
    london["platforms"].append(north)
    return london


@pytest.fixture(scope="session")
def network(
    db_url: str, redis_url: str, celery_queue: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Network]:
    home = tmp_path_factory.mktemp("network")
    providers_file = home / "providers.json"
    providers_file.write_text(json.dumps(two_city_config()))
    env = {"REDIS_URL": redis_url, "FLEXMARKET_CELERY_QUEUE": celery_queue, "FLEXMARKET_HOME": str(home)}
    with environment(env):
        net = prepare_network(
            home=home,
            base_port=free_port_range(5),
            providers_file=providers_file,
            worker_concurrency=8,
            workers={"worker": "registry,gateway,bap,ledger", "worker-bpp": "bpp"},
            extra_env={
                "FLEXMARKET_SWEEP_INTERVAL_S": "1",
                "FLEXMARKET_REDELIVER_AFTER_S": "2",
                "FLEXMARKET_DELIVERY_TTL_S": "120",
                "FLEXMARKET_OUTCOME_SYNC_INTERVAL_S": "1",  # outcomes flow back within a second or two
                "FLEXMARKET_LOG_LEVEL": "INFO",
            },
        )
        try:
            net.start(timeout=90)
            yield net
        finally:
            net.stop()


class Signer:
    """Builds and signs Beckn messages as a registered participant (for tests that talk raw Beckn)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    def headers(self, body: bytes, created: int | None = None, validity_s: int = 60) -> dict[str, str]:
        auth = signing.authorization_header(
            body,
            self.identity.keys.signing_private_key,
            self.identity.subscriber_id,
            self.identity.unique_key_id,
            created=created,
            validity_s=validity_s,
        )
        return {"Authorization": auth, "Content-Type": "application/json"}

    def post(self, url: str, payload: dict[str, Any] | bytes, **kw: Any) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else envelope.dumps(payload)
        return httpx.post(url, content=body, headers=self.headers(body, **kw), timeout=10)


@pytest.fixture(scope="session")
def bap_signer(network: Network) -> Signer:
    return Signer(load_identity(Path(network.home), BAP_ID))


@pytest.fixture(scope="session")
def bpp_platform(network: Network) -> dict[str, Any]:
    return network.manifest["participants"]["bpp"]["platforms"][0]


@pytest.fixture(scope="session")
def bpp_signer(network: Network, bpp_platform: dict[str, Any]) -> Signer:
    return Signer(load_identity(Path(network.home), bpp_platform["subscriber_id"]))


@pytest.fixture(scope="session")
def flow(network: Network, db_url: str) -> dict[str, Any]:
    """One complete purchase, shared by the assertions below."""
    bap = bap_client(network)
    start, end = tomorrow_window()
    tx = bap.search(start, end, 1500, region="GB-R13")["transaction_id"]
    view = bap.wait(tx, lambda v: len({o["provider_id"] for o in v["offers"]}) >= 3, timeout=30)
    choices = bap.plan(tx, 1500)["choices"]
    for action, states in [
        ("select", ("QUOTED",)),
        ("init", ("CREATED",)),
        ("confirm", ("ACCEPTED",)),
        ("status", ("ACCEPTED",)),
    ]:
        for c in choices:
            bap.order_choice(action, tx, c, start, end)
        for c in choices:
            view = bap.wait(tx, order_in(c["provider_id"], *states), timeout=30)
    # on_status is the last callback: wait until every chosen provider's on_status is stored.
    view = bap.wait(tx, lambda v: sum(1 for cb in v["callbacks"] if cb["action"] == "on_status") >= len(choices))
    return {"tx": tx, "view": view, "choices": choices, "window": (start, end)}
