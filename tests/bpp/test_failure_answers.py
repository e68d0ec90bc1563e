"""A request that fails for good at the BPP (every processing attempt raised) is answered with its
on_<action> carrying a Beckn error and the order as it stands — the buyer never hears nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session

from beckn import envelope, processing
from bpp import service
from bpp.models import Order
from kernel.db import raw, session_scope

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)


@pytest.fixture()
def failing_bpp(order_id: str) -> Iterator[str]:

    def broken(session: Session, row: Any) -> list[int]:
        raise RuntimeError("the scheduler is on fire")

    old = processing.PROCESSORS.get("bpp"), processing.ON_FAILURE.get("bpp")
    processing.register("bpp", broken, on_failure=service.processing_failed)
    yield order_id
    if old[0] is not None:
        processing.PROCESSORS["bpp"] = old[0]
    if old[1] is not None:
        processing.ON_FAILURE["bpp"] = old[1]
    else:
        processing.ON_FAILURE.pop("bpp", None)


def _inbox(order_id: str, action: str, message: dict[str, Any]) -> int:
    with session_scope("bpp") as s:
        o = s.get(Order, order_id)
        assert o is not None
        ctx = envelope.context(
            action,
            bap_id="bap.test",
            bap_uri="http://127.0.0.1:9/beckn",
            transaction_id=o.transaction_id,
            bpp_id="bpp.test",
            bpp_uri="http://127.0.0.1:9/p",
            city_code="GB-R13",
            country_code="GBR",
        )
        body = envelope.dumps({"context": ctx, "message": message})
        return int(
            raw(s)
            .execute(
                "INSERT INTO inbox (receiver_id, sender_id, sender_key_id, signature_verified, action, message_id, "
                "transaction_id, body, status) VALUES ('bpp.test', 'bap.test', 'k', true, %s, %s, %s, %s, "
                "'RECEIVED') RETURNING id",
                (action, ctx["message_id"], o.transaction_id, body),
            )
            .fetchone()[0]
        )


def _answers() -> list[dict[str, Any]]:
    with session_scope("bpp") as s:
        return [json.loads(bytes(r[0])) for r in raw(s).execute("SELECT body FROM outbox ORDER BY id")]


def test_a_cancel_that_fails_for_good_is_answered_with_the_error_and_the_unchanged_order(failing_bpp: str) -> None:
    row = _inbox(failing_bpp, "cancel", {"order_id": failing_bpp})
    for _ in range(processing.MAX_ATTEMPTS - 1):
        processing.process("bpp", row)
        assert _answers() == []  # still being retried: no answer yet
    processing.process("bpp", row)
    (answer,) = _answers()
    assert answer["context"]["action"] == "on_cancel"
    assert answer["error"]["code"] == "31001" and "the scheduler is on fire" in answer["error"]["message"]
    order = answer["message"]["order"]
    assert order["id"] == failing_bpp and order["fulfillments"][0]["state"]["descriptor"]["code"] == "ACCEPTED"


def test_a_search_that_fails_for_good_is_answered_with_an_on_search_error(failing_bpp: str) -> None:
    row = _inbox(failing_bpp, "search", {"intent": {}})
    for _ in range(processing.MAX_ATTEMPTS):
        processing.process("bpp", row)
    (answer,) = _answers()
    assert answer["context"]["action"] == "on_search" and answer["error"]["code"] == "31001"
    assert "message" not in answer
