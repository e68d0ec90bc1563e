"""A callback that fails for good at the BAP — registering the accepted order with the ledger — shows on the
order (`last_error`, its state unchanged) and in the failures list (GET /api/v1/failures)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import bap.tasks  # noqa: F401  (registers the BAP's processor and failure handlers)
from bap import failures, orders
from bap.models import BapOrder, Transaction
from beckn import envelope, processing
from kernel.config import reset_settings
from kernel.db import raw, session_scope
from schemas.flex import OrderSpec, OrderView, order_view_to_order

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)


@pytest.fixture()
def unreachable_ledger(isolated_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("FLEXMARKET_HOME", str(tmp_path))
    monkeypatch.setenv("FLEXMARKET_LEDGER_URL", "http://127.0.0.1:9")  # nothing listens there
    reset_settings()
    yield
    reset_settings()


def test_a_ledger_registration_that_fails_for_good_shows_on_the_order(unreachable_ledger: None) -> None:
    spec = OrderSpec("dc-01", "dc-01-evening-peak", 100, T0, T0 + timedelta(hours=1), "MTR-1", order_id="ord-1")
    order = order_view_to_order(OrderView(spec, "ACCEPTED", 150, 15, T0 - timedelta(days=1)))
    ctx = envelope.context(
        "on_confirm",
        bap_id="bap.test",
        bap_uri="http://127.0.0.1:9/beckn",
        transaction_id="tx-1",
        bpp_id="bpp.test",
        bpp_uri="http://127.0.0.1:9/p",
        city_code="GB-R13",
        country_code="GBR",
    )
    with session_scope("bap") as s:
        s.add(Transaction(id="tx-1", request={}, city_code="GB-R13", country_code="GBR"))
        s.add(
            BapOrder(
                transaction_id="tx-1",
                bpp_id="bpp.test",
                provider_id="dc-01",
                bpp_uri="http://127.0.0.1:9/p",
                item_id=spec.item_id,
                order_id="ord-1",
                power_kw=100,
                window_start=spec.window_start,
                window_end=spec.window_end,
                state="ACCEPTED",
            )
        )
        # the confirm the BAP sent (the ledger needs it beside the on_confirm) and the on_confirm it received
        raw(s).execute(
            "INSERT INTO outbox (sender_id, receiver_url, action, message_id, transaction_id, body, status, "
            "expires_at, last_authorization) VALUES ('bap.test', 'http://127.0.0.1:9/p/confirm', 'confirm', %s, "
            "'tx-1', %s, 'DELIVERED', now(), 'Signature keyId=\"bap.test|k|ed25519\"')",
            (ctx["message_id"], envelope.dumps({"context": {**ctx, "action": "confirm"}, "message": {}})),
        )
        inbox_id = (
            raw(s)
            .execute(
                "INSERT INTO inbox (receiver_id, sender_id, sender_key_id, signature_verified, action, message_id, "
                "transaction_id, body, \"authorization\", status) VALUES ('bap.test', 'bpp.test', 'k', true, "
                "'on_confirm', %s, 'tx-1', %s, 'Signature keyId=\"bpp.test|k|ed25519\"', 'RECEIVED') RETURNING id",
                (ctx["message_id"], envelope.dumps({"context": ctx, "message": {"order": order.dump()}})),
            )
            .fetchone()[0]
        )
    for _ in range(processing.MAX_ATTEMPTS - 1):
        processing.process("bap", inbox_id)
    with session_scope("bap") as s:
        o = orders.open_order(s, "tx-1", "bpp.test", "dc-01")
        assert o is not None and o.last_error is None  # still being retried
    processing.process("bap", inbox_id)
    with session_scope("bap") as s:
        o = orders.open_order(s, "tx-1", "bpp.test", "dc-01")
        assert o is not None and o.state == "ACCEPTED"
        assert o.last_error and "ledger step of on_confirm failed" in o.last_error and "unreachable" in o.last_error
        (failure,) = failures.failures(s, "tx-1")
        assert failure["kind"] == "processing_failed" and failure["action"] == "on_confirm"
        ref = {"bpp_id": "bpp.test", "provider_id": "dc-01", "order_id": "ord-1", "state": "ACCEPTED"}
        assert failure["order"] == ref
