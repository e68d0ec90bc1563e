"""bap/ledger_registration.py `ledger_process`: the BAP registers an accepted order with the ledger by presenting the
exact signed bytes — the confirm it sent (outbox body + the Authorization header it signed) and the
on_confirm it received (inbox body + header) — and amends it with the signed on_update; never a JSON
summary of terms the ledger would have to take on trust."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import bap.tasks  # noqa: F401  (registers the BAP's processor)
from bap import ledger_registration
from bap.models import CatalogOffer, Transaction
from beckn import envelope, http, processing
from kernel.config import reset_settings
from kernel.db import raw, session_scope
from schemas.flex import OrderSpec, OrderView, order_view_to_order

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)
CONFIRM_AUTH = 'Signature keyId="bap.lr|k1|ed25519",created="1"'
ANSWER_AUTH = 'Signature keyId="bpp.lr|k2|ed25519",created="2"'


@pytest.fixture()
def ledger_calls(isolated_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    monkeypatch.setenv("FLEXMARKET_HOME", str(tmp_path))
    monkeypatch.setenv("FLEXMARKET_LEDGER_URL", "http://ledger.test")
    reset_settings()
    calls: list[Any] = []

    def post_sync(url: str, body: bytes, headers: dict[str, str]) -> http.HttpResult:
        calls.append((url, json.loads(body)))
        return http.HttpResult(url, 201, b"{}")

    monkeypatch.setattr(ledger_registration.http, "post_sync", post_sync)
    yield calls
    reset_settings()


def _context(action: str, message_id: str) -> dict[str, Any]:
    return envelope.context(
        action,
        bap_id="bap.lr",
        bap_uri="http://bap.lr/beckn",
        transaction_id="tx-lr",
        bpp_id="bpp.lr",
        bpp_uri="http://bpp.lr/p",
        city_code="GB-R13",
        country_code="GBR",
        message_id=message_id,
    )


def _receive(action: str, message_id: str, *, sent: bytes | None) -> tuple[int, bytes]:
    """The BAP's outbox row of the request (if `sent`) and its inbox row of the answer; (inbox id, answer bytes)."""
    spec = OrderSpec("dc-lr", "dc-lr-item", 100, T0, T0 + timedelta(hours=1), "MTR-LR", order_id="ord-lr")
    order = order_view_to_order(OrderView(spec, "ACCEPTED", 150, 15, T0 - timedelta(days=1)))
    answer = envelope.dumps({"context": _context(action, message_id), "message": {"order": order.dump()}})
    with session_scope("bap") as s:
        if sent is not None:
            raw(s).execute(
                "INSERT INTO outbox (sender_id, receiver_url, action, message_id, transaction_id, body, status, "
                "expires_at, last_authorization) VALUES ('bap.lr', 'http://bpp.lr/p/confirm', 'confirm', %s, "
                "'tx-lr', %s, 'DELIVERED', now(), %s)",
                (message_id, sent, CONFIRM_AUTH),
            )
        inbox_id = (
            raw(s)
            .execute(
                "INSERT INTO inbox (receiver_id, sender_id, sender_key_id, signature_verified, action, message_id, "
                "transaction_id, body, \"authorization\", status) VALUES ('bap.lr', 'bpp.lr', 'k2', true, %s, %s, "
                "'tx-lr', %s, %s, 'RECEIVED') RETURNING id",
                (action, message_id, answer, ANSWER_AUTH),
            )
            .fetchone()[0]
        )
    return inbox_id, answer


def _b64(body: bytes) -> str:
    return base64.b64encode(body).decode("ascii")


def test_an_accepted_order_is_registered_with_both_signed_messages(ledger_calls: list[Any]) -> None:
    sent = envelope.dumps({"context": _context("confirm", "m-1"), "message": {"order": {"provider": {"id": "dc-lr"}}}})
    inbox_id, answer = _receive("on_confirm", "m-1", sent=sent)
    processing.process("bap", inbox_id)
    ((url, body),) = ledger_calls
    assert url == "http://ledger.test/api/v1/orders"
    assert body["confirm"] == {"body_base64": _b64(sent), "authorization": CONFIRM_AUTH}
    assert body["on_confirm"] == {"body_base64": _b64(answer), "authorization": ANSWER_AUTH}
    # no terms beside the signed messages but what they do not carry (with no catalog offer: compute)
    assert set(body) == {"confirm", "on_confirm", "supplier_id", "resource_type"} and body["resource_type"] == "compute"


def test_a_storage_order_is_registered_as_storage(ledger_calls: list[Any]) -> None:
    """The ledger's baseline rule depends on what was sold; the BAP takes it from the offer it ordered."""
    with session_scope("bap") as s:
        s.add(Transaction(id="tx-lr", request={}, city_code="GB-R13", country_code="GBR"))
        s.flush()
        s.add(
            CatalogOffer(
                transaction_id="tx-lr",
                bpp_id="bpp.lr",
                provider_id="dc-lr",
                item_id="dc-lr-item",
                bpp_uri="http://bpp.lr/p",
                price_gbp_per_mwh=150,
                available_kw=100,
                window_start=T0,
                window_end=T0 + timedelta(hours=1),
                spec={"resource_type": "storage"},
            )
        )
    sent = envelope.dumps({"context": _context("confirm", "m-9"), "message": {"order": {"provider": {"id": "dc-lr"}}}})
    inbox_id, _ = _receive("on_confirm", "m-9", sent=sent)
    processing.process("bap", inbox_id)
    ((_, body),) = ledger_calls
    assert body["resource_type"] == "storage"


def test_an_accepted_update_is_sent_as_the_signed_on_update(ledger_calls: list[Any]) -> None:
    inbox_id, answer = _receive("on_update", "m-2", sent=None)
    processing.process("bap", inbox_id)
    ((url, body),) = ledger_calls
    assert url == "http://ledger.test/api/v1/orders/ord-lr/amend"
    assert body == {"on_update": {"body_base64": _b64(answer), "authorization": ANSWER_AUTH}}


def test_without_the_sent_confirm_nothing_is_registered_and_the_row_is_retried(ledger_calls: list[Any]) -> None:
    inbox_id, _ = _receive("on_confirm", "m-3", sent=None)
    processing.process("bap", inbox_id)
    assert ledger_calls == []
    with session_scope("bap") as s:
        row = raw(s).execute("SELECT status, error FROM inbox WHERE id = %s", (inbox_id,)).fetchone()
    assert row is not None and row[0] == "RECEIVED" and "no signed confirm" in row[1]
