"""Proof of what was agreed, end to end: an order confirmed on the network is registered with the ledger
with the BAP's signed confirm and the platform's signed on_confirm; anyone allowed to read the order
fetches both messages and re-verifies their signatures against the registry's keys, and the order's
statement lines name the agreement (the hash of the two messages)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from bap.client import order_in, order_of
from beckn import signing
from beckn.keys import public_key_from_b64
from flexmarket.runner import BAP_ID, Network
from ledger import accounts as acct
from tests.e2e.helpers import bap_client, eventually, tomorrow_window

pytestmark = pytest.mark.e2e

PLATFORM = "dc-platform.bpp.flexmarket.local"
PROVIDER, ITEM = "dc-03", "dc-03-evening-peak"  # 19:00–20:00 of dc-03: a slot the other e2e tests leave free


def _ledger(network: Network, path: str, **params: str) -> httpx.Response:
    finance = network.manifest["participants"]["ledger"]["api_keys"]["finance"]
    return httpx.get(
        f"{network.url('ledger')}/api/v1{path}", params=params, headers={"Authorization": f"Bearer {finance}"}
    )


def _reverify(network: Network, message: dict[str, str]) -> str:
    """Check one signed message offline against the key the registry holds for its signer; the signer."""
    body = base64.b64decode(message["body_base64"])
    params = signing.parse_authorization(message["authorization"])
    rows = httpx.post(
        f"{network.url('registry')}/lookup",
        json={"subscriber_id": params.subscriber_id, "unique_key_id": params.unique_key_id},
    ).json()
    (row,) = [r for r in rows if r.get("unique_key_id", r.get("key_id")) == params.unique_key_id]
    signed_at = datetime.fromtimestamp(params.created, UTC)
    assert datetime.fromisoformat(row["valid_from"]) <= signed_at <= datetime.fromisoformat(row["valid_until"])
    signing.verify(params, body, public_key_from_b64(row["signing_public_key"]), now=params.created)
    with pytest.raises(signing.SignatureError):  # and one altered byte would not verify
        signing.verify(params, body[:-2] + b" }", public_key_from_b64(row["signing_public_key"]), now=params.created)
    return params.subscriber_id


def test_a_confirmed_order_carries_both_signed_messages_into_the_ledger(network: Network) -> None:
    bap = bap_client(network)
    start, end = tomorrow_window(19, 1)
    t0 = datetime.now(UTC) - timedelta(seconds=5)
    tx = bap.search(start, end, 100, region="GB-R13")["transaction_id"]
    bap.wait(tx, lambda v: any(o["item_id"] == ITEM for o in v["offers"]), timeout=30)
    bap.order("select", tx, PLATFORM, PROVIDER, item_id=ITEM, power_kw=100, window_start=start, window_end=end)
    view = bap.wait(tx, order_in(PROVIDER, "QUOTED"), timeout=30)
    for action, state in (("init", "CREATED"), ("confirm", "ACCEPTED")):
        assert (order_of(view, PROVIDER) or {})["last_error"] is None, order_of(view, PROVIDER)
        bap.order(action, tx, PLATFORM, PROVIDER)
        view = bap.wait(tx, order_in(PROVIDER, state), timeout=30)
    order = order_of(view, PROVIDER)
    assert order is not None and order["state"] == "ACCEPTED" and order["order_id"], order
    oid = order["order_id"]

    r = eventually(lambda: (x := _ledger(network, f"/orders/{oid}/agreement")).status_code == 200 and x, timeout=30)
    doc = r.json()
    assert _reverify(network, doc["confirm"]) == BAP_ID
    assert _reverify(network, doc["on_confirm"]) == PLATFORM
    confirm = json.loads(base64.b64decode(doc["confirm"]["body_base64"]))
    on_confirm = json.loads(base64.b64decode(doc["on_confirm"]["body_base64"]))
    assert confirm["context"]["action"] == "confirm" and on_confirm["context"]["action"] == "on_confirm"
    assert confirm["context"]["message_id"] == on_confirm["context"]["message_id"]
    assert on_confirm["message"]["order"]["id"] == oid and confirm["context"]["transaction_id"] == tx
    digest = hashlib.sha256(
        bytes.fromhex(doc["confirm"]["sha256"]) + bytes.fromhex(doc["on_confirm"]["sha256"])
    ).hexdigest()
    assert doc["agreement_sha256"] == digest
    for side in ("confirm", "on_confirm"):
        assert hashlib.sha256(base64.b64decode(doc[side]["body_base64"])).hexdigest() == doc[side]["sha256"]

    # the ledger's terms are the signed on_confirm's, and its statement lines lead back to the messages
    led = _ledger(network, f"/orders/{oid}").json()
    assert led["contracted_w"] == 100_000 and led["agreement_sha256"] == digest
    period = {"from": t0.isoformat(), "to": (datetime.now(UTC) + timedelta(seconds=5)).isoformat()}
    lines = _ledger(network, f"/statements/{acct.escrow(oid)}", **period).json()["entries"]
    assert lines and all(line["agreement_sha256"] == digest for line in lines)
    assert all(f"[agreement {digest}]" in line["canonical"] for line in lines)  # inside the hashed entry

    bap.order("cancel", tx, PLATFORM, PROVIDER, reason="test done")
    bap.wait(tx, order_in(PROVIDER, "CANCELLED"), timeout=30)
