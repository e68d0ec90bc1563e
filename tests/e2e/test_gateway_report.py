"""A gateway's report of a failed fan-out (gateway/service.py `fan_out_failed`, beckn/steps.py
`GatewayReport`): the BAP accepts an on_search signed by a gateway only when it carries an error and no
catalog, lists it among the failures naming the BPP, and counts that BPP as answered. A gateway cannot
pass a catalog off as a BPP's, and its report is not relayed through a gateway. (The gateway sending the
report when a BPP really is down past the delivery TTL is tested in test_undeliverable.py.)"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from beckn import envelope
from beckn.identity import load_identity
from flexmarket.runner import BAP_ID, GATEWAY_ID, Network
from tests.e2e.conftest import Signer
from tests.e2e.helpers import bap_client, tomorrow_window

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway_signer(network: Network) -> Signer:
    return Signer(load_identity(Path(network.home), GATEWAY_ID))


def _report(network: Network, tx: str, bpp_id: str, **extra: Any) -> dict[str, Any]:
    bap = network.manifest["participants"]["bap"]
    ctx = envelope.context(
        "on_search",
        bap_id=BAP_ID,
        bap_uri=bap["url"],
        transaction_id=tx,
        message_id=str(uuid.uuid4()),
        city_code="GB-R13",
        country_code="GBR",
        bpp_id=bpp_id,
        bpp_uri="http://127.0.0.1:9/beckn",
    )
    return {"context": ctx, **extra}


def _post(network: Network, signer: Signer, payload: dict[str, Any], **headers: str) -> httpx.Response:
    body = envelope.dumps(payload)
    url = network.manifest["participants"]["bap"]["url"].rstrip("/") + "/on_search"
    return httpx.post(url, content=body, headers={**signer.headers(body), **headers}, timeout=10)


def test_bap_lists_a_gateway_report_naming_the_bpp(network: Network, gateway_signer: Signer) -> None:
    bap = bap_client(network)
    start, end = tomorrow_window(9, 1)
    tx = bap.search(start, end, 100, region="GB-R13")["transaction_id"]
    error = {"code": "10004", "message": "search not delivered to gone.bpp.example: HTTP 404"}
    r = _post(network, gateway_signer, _report(network, tx, "gone.bpp.example", error=error))
    assert r.status_code == 200 and r.json()["message"]["ack"]["status"] == "ACK", r.text
    failures = bap.wait(tx, lambda v: [f for f in v["failures"] if f["kind"] == "fan_out_failed"], timeout=20)
    [f] = [f for f in failures["failures"] if f["kind"] == "fan_out_failed"]
    assert f["bpp_id"] == "gone.bpp.example" and f["from"] == GATEWAY_ID and "HTTP 404" in f["reason"]


def test_a_gateway_cannot_sign_a_catalog(network: Network, gateway_signer: Signer) -> None:
    bap = bap_client(network)
    start, end = tomorrow_window(9, 1)
    tx = bap.search(start, end, 100, region="GB-R13")["transaction_id"]
    forged = _report(network, tx, "gone.bpp.example", message={"catalog": {"providers": []}})
    r = _post(network, gateway_signer, forged)
    assert r.status_code == 401 and "gateway" in r.json()["error"]["message"], r.text


def test_a_gateway_report_is_not_relayed(network: Network, gateway_signer: Signer) -> None:
    error = {"code": "10004", "message": "relay me"}
    payload = _report(network, str(uuid.uuid4()), "gone.bpp.example", error=error)
    body = envelope.dumps(payload)
    url = network.url("gateway").rstrip("/") + "/on_search"
    r = httpx.post(url, content=body, headers=gateway_signer.headers(body), timeout=10)
    assert r.status_code in (200, 400) and r.json()["message"]["ack"]["status"] == "NACK", r.text
