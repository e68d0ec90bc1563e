"""A data centre joins a running BPP platform through its admin API (`flexmarket provider join`), on the shared
network's real processes: its agent plans at once and its offers are in the next search, a restarted BPP still
hosts it, and after `provider leave` its offers are gone and a select of one is refused. Without the admin
token the BPP refuses (401 / 403)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from bpp.provider_file import provider_template
from flexmarket.cli import app
from flexmarket.runner import Network
from tests.e2e.conftest import Signer
from tests.e2e.helpers import bap_client, rows
from tests.e2e.test_bad_input import assert_nack, request

pytestmark = pytest.mark.e2e

PROVIDER_ID = "dc-joined-e2e"
runner = CliRunner()


def _admin(network: Network) -> tuple[str, str]:
    bpp = network.manifest["participants"]["bpp"]
    return bpp["base_url"], bpp["admin_token"]


def _slug(platform: dict[str, Any]) -> str:
    return str(platform["url"]).rstrip("/").rsplit("/", 1)[1]


def _offers_of(network: Network, provider_id: str, *, present: bool) -> list[dict[str, Any]]:
    """A new search's offers from `provider_id`, once the file's three London providers have answered."""
    bap = bap_client(network)
    now = datetime.now(UTC)
    tx = bap.search(now + timedelta(hours=1), now + timedelta(hours=47), 50, region="GB-R13")["transaction_id"]

    def answered(view: dict[str, Any]) -> bool:
        providers = {o["provider_id"] for o in view["offers"]}
        return len(providers - {provider_id}) >= 3 and (provider_id in providers) is present

    view = bap.wait(tx, answered, timeout=30)
    return [o for o in view["offers"] if o["provider_id"] == provider_id]


def test_join_without_the_admin_token_is_refused(network: Network, bpp_platform: dict[str, Any]) -> None:
    base, _ = _admin(network)
    url = f"{base}/admin/{_slug(bpp_platform)}/providers"
    body = provider_template("dc-intruder")
    assert httpx.post(url, json=body, timeout=10).status_code == 401
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer not-the-token"}, timeout=10)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    assert httpx.delete(f"{url}/dc-01", timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer not-the-token"}, timeout=10).status_code == 403
    assert rows(network.manifest["database_url"], "select 1 from bpp.providers where provider_id = 'dc-intruder'") == []


def test_a_bad_provider_file_is_refused_naming_the_field(network: Network, bpp_platform: dict[str, Any]) -> None:
    base, token = _admin(network)
    body = provider_template("dc-bad") | {
        "sites": [{"id": "s", "region": "GB-R13", "meter_id": "m", "baseline_kw": -1}]
    }
    r = httpx.post(
        f"{base}/admin/{_slug(bpp_platform)}/providers",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 400 and "sites[0].baseline_kw" in r.json()["error"]["message"]
    for raw in (b'{"id": NaN}', b"[1, 2]", b"not json"):
        r = httpx.post(
            f"{base}/admin/{_slug(bpp_platform)}/providers",
            content=raw,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", raw


def test_join_search_restart_leave(
    network: Network, bpp_platform: dict[str, Any], bap_signer: Signer, tmp_path: Path
) -> None:
    base, token = _admin(network)
    slug = _slug(bpp_platform)
    data = provider_template(PROVIDER_ID)
    data["agent"]["jobs"]["n_jobs"] = 60  # a small job mix: the BPP plans it within the request
    file = tmp_path / "provider.json"
    file.write_text(json.dumps(data))
    common = ["--bpp", base, "--platform", slug, "--token", token]
    try:
        joined = runner.invoke(app, ["provider", "join", str(file), *common])
        assert joined.exit_code == 0, joined.output
        assert f"{PROVIDER_ID} joined {slug}" in joined.output

        offers = _offers_of(network, PROVIDER_ID, present=True)
        assert offers and all(o["bpp_id"] == bpp_platform["subscriber_id"] for o in offers)

        network.processes["bpp"].stop()  # a restarted BPP hosts it again (bpp.joined_providers)
        network.start(["bpp"], timeout=90)
        assert _offers_of(network, PROVIDER_ID, present=True)
    finally:
        left = runner.invoke(app, ["provider", "leave", PROVIDER_ID, *common])
    assert left.exit_code == 0, left.output
    assert "withdrawn" in left.output

    assert _offers_of(network, PROVIDER_ID, present=False) == []
    select = {"order": _order(PROVIDER_ID, offers[0])}
    refused = bap_signer.post(bpp_platform["url"] + "/select", request(bap_signer, bpp_platform, "select", select))
    assert_nack(refused, 200, "30004", offers[0]["item_id"])


def _order(provider_id: str, offer: dict[str, Any]) -> dict[str, Any]:
    from schemas.flex import OrderSpec, order_spec_to_order

    start = datetime.fromisoformat(offer["window_start"])
    spec = OrderSpec(provider_id, offer["item_id"], 50, start, start + timedelta(minutes=30))
    return order_spec_to_order(spec).dump()
