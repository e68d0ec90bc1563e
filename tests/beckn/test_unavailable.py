"""A lost or unreachable database answers 503 + Retry-After (beckn/webapp.py add_unavailable_handlers, the
Beckn pipeline's NACK), never a 500: on the client APIs of every participant, the ledger's and Beckn POSTs."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa_exc

from beckn.errors import Role
from beckn.pipeline import BecknPipeline, FastLane
from beckn.steps import Draft, Step
from beckn.webapp import create_base_app
from kernel.db import unavailable
from ledger.main import create_app as ledger_app

LOST = sa_exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("terminating connection"))


@pytest.mark.parametrize("error", [LOST, psycopg.OperationalError("server closed the connection unexpectedly")])
def test_client_api_answers_503_with_retry_after(error: Exception) -> None:
    app = create_base_app("test", "t", "t")

    @app.get("/boom")
    def boom() -> None:
        raise error

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "unavailable"


def test_the_ledger_app_maps_the_same_errors() -> None:
    app = ledger_app()
    assert psycopg.OperationalError in app.exception_handlers
    assert sa_exc.OperationalError in app.exception_handlers


class Sender(Step):
    name = "verify_sender_signature"

    def __call__(self, m: Draft) -> None:
        pass


def test_a_beckn_post_gets_a_503_nack_when_dispatch_cannot_reach_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    p = BecknPipeline(
        participant="bap",
        role=Role.BAP,
        schema="bap",
        handlers={"on_search": lambda *a: None},  # type: ignore[dict-item]
        registry=None,  # type: ignore[arg-type]
    )

    async def lost(_: Any) -> bool:
        raise LOST

    p._group.submit = lost  # type: ignore[method-assign]
    p.steps = [Sender()]
    monkeypatch.setattr(Draft, "inbound", lambda self: None)
    app = FastAPI()
    app.state.pipeline = p
    lane = FastLane(app, lambda path: ("on_search", None))  # type: ignore[arg-type,return-value]
    with TestClient(lane, raise_server_exceptions=False) as client:
        r = client.post("/beckn/on_search", content=b"{}")
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["message"]["ack"]["status"] == "NACK"


def test_unavailable_follows_the_cause_chain() -> None:
    try:
        try:
            raise psycopg.OperationalError("gone")
        except psycopg.OperationalError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert unavailable(outer)
    assert not unavailable(ValueError("bad input"))
