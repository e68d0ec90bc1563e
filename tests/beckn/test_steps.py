"""The pipeline's steps (beckn/steps.py): the standard list and its order, one list run by both ways in
(the fast lane and the participants' FastAPI routes), and the refusing step named in the log."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from beckn import pipeline as pipeline_module
from beckn.errors import BecknError, Role
from beckn.identity import Identity
from beckn.keys import KeyPair
from beckn.pipeline import BecknPipeline, FastLane, prefixed_route
from beckn.steps import CleanValues, Draft, JsonDepth, NotExpired, Step, WindowInReach, standard_steps
from gateway.router import router as gateway_router

ME = Identity("gw.test", Role.BG, "http://127.0.0.1:1", KeyPair.generate())
ACTIONS = ("search", "on_search")

STANDARD = [
    "action_served",
    "read_body",
    "json_depth",
    "parse_json",
    "verify_sender_signature",
    "sender_rate_limit",
    "verify_gateway_signature",
    "clean_values",
    "context_schema",
    "context_action",
    "context_version",
    "context_domain",
    "context_required_fields",
    "context_location",
    "not_expired",
    "gateway_report",
    "signer_is_sender",
    "sender_uri_registered",
    "addressed_to_receiver",
    "error_schema",
    "message_present",
    "window_in_reach",
    "message_schema",
]


def names(role: Role, relay_only: bool) -> list[str]:
    steps = standard_steps(
        participant="x",
        role=role,
        actions=ACTIONS,
        registry=None,  # type: ignore[arg-type]  # only stored
        clock_skew_s=5,
        default_ttl_s=30,
        relay_only=relay_only,
    )
    return [s.name for s in steps]


def test_the_standard_list_in_order() -> None:
    assert names(Role.BPP, relay_only=False) == STANDARD
    assert names(Role.BAP, relay_only=False) == STANDARD
    # the gateway relays: messages addressed to others, bodies its receivers validate
    assert names(Role.BG, relay_only=True) == [
        n for n in STANDARD if n not in {"addressed_to_receiver", "message_schema"}
    ]


class RefuseAfterParsing(Step):
    """A check added to the list: one class, one entry."""

    name = "refuse_after_parsing"

    def __call__(self, m: Draft) -> None:
        if m.payload.get("refuse"):
            raise BecknError("invalid_request", f"refused {m.action}", paths="refuse")


class Log:
    def __init__(self) -> None:
        self.nacks: list[dict[str, Any]] = []

    def info(self, event: str, **kw: Any) -> None:
        if event == "nack":
            self.nacks.append(kw)


def test_the_fast_lane_and_the_fastapi_route_run_the_same_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    log = Log()
    monkeypatch.setattr(pipeline_module, "log", log)
    p = BecknPipeline(
        participant="gateway",
        role=Role.BG,
        schema="gateway",
        handlers=dict.fromkeys(ACTIONS, lambda *a: None),  # type: ignore[arg-type]  # refused before dispatch
        registry=None,  # type: ignore[arg-type]  # refused before any lookup
        relay_only=True,
    )
    after = [s.name for s in p.steps].index("parse_json") + 1
    p.steps = (*p.steps[:after], RefuseAfterParsing(), *p.steps[after:])
    app = FastAPI()
    app.state.pipeline, app.state.identity = p, ME
    app.include_router(gateway_router)  # the gateway's real Beckn route

    answers = []
    for served in (FastLane(app, prefixed_route("/", ME, ACTIONS)), app):  # the lane, then the route alone
        with TestClient(served) as client:
            answers.append(
                [
                    (r.status_code, r.json())
                    for r in (
                        client.post("/search", content=b'{"context": {}, "refuse": true}'),
                        client.post("/search", content=b"not json"),
                        client.post("/frobnicate", content=b"{}"),
                    )
                ]
            )
    lane, route = answers
    assert lane == route
    refused, malformed, unknown = lane
    assert refused[0] == 400 and refused[1]["error"]["message"] == "refused search"
    assert malformed[0] == 400 and "malformed JSON" in malformed[1]["error"]["message"]
    assert unknown[0] == 404 and unknown[1]["error"]["message"].startswith("unknown action 'frobnicate'")
    steps = [n["step"] for n in log.nacks]
    assert steps == ["refuse_after_parsing", "parse_json", "action_served"] * 2


# -- the limits on input (schemas/limits.py) -----------------------------------------------------------------
def draft(action: str, payload: Any) -> Draft:
    from types import SimpleNamespace

    m = Draft(SimpleNamespace(headers={}), action, ME)  # type: ignore[arg-type]
    m.raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if not isinstance(payload, bytes):
        m.payload = payload
    return m


def refusal(step: Step, m: Draft) -> BecknError:
    with pytest.raises(BecknError) as err:
        step(m)
    return err.value


def test_json_depth_refuses_deep_nesting_before_parsing() -> None:
    step = JsonDepth()
    step(draft("search", {"context": {"a": [[[[1]]]]}}))
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    assert refusal(step, draft("search", deep)).paths == "body"
    step(draft("search", b'{"a": "' + b"[" * 5000 + b'"}'))  # brackets inside a string are text
    refusal(step, draft("search", b'{"a": "\\"", "b": ' + b"[" * 40 + b"]" * 40 + b"}"))  # after an escaped quote


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        ({"context": {"transaction_id": "t\x00"}}, "context.transaction_id"),
        ({"context": {}, "message": {"order": {"items": [{"id": "i\x1b"}]}}}, "message.order.items.0.id"),
        ({"context": {}, "message": {"n": 2**70}}, "message.n"),
        ({"context": {}, "message": {"n": float("inf")}}, "message.n"),
        ({"context": {}, "message": {"s": "\ud800"}}, "message.s"),
    ],
)
def test_clean_values_names_the_field(payload: dict[str, Any], path: str) -> None:
    raw = json.dumps(payload).encode()
    m = draft("select", payload)
    m.raw = raw
    assert refusal(CleanValues(), m).paths == path


def test_clean_values_lets_text_with_newlines_pass() -> None:
    CleanValues()(draft("select", {"context": {}, "message": {"d": "two\nlines\tand a tab", "kw": 1e3}}))


def test_window_in_reach() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)

    def order(start: datetime, end: datetime) -> dict[str, Any]:
        rng = {"start": start.isoformat(), "end": end.isoformat()}
        return {"context": {}, "message": {"order": {"fulfillments": [{"stops": [{"time": {"range": rng}}]}]}}}

    step = WindowInReach(90)
    step(draft("confirm", order(now + timedelta(days=1), now + timedelta(days=1, hours=2))))
    step(draft("status", order(now - timedelta(days=9), now - timedelta(days=8))))  # not a booking action
    past = refusal(step, draft("init", order(now - timedelta(days=9), now - timedelta(days=8))))
    assert past.paths == "message.order.fulfillments.0.stops.0.time.range.end"
    ahead = refusal(step, draft("select", order(now + timedelta(days=400), now + timedelta(days=401))))
    assert ahead.paths == "message.order.fulfillments.0.stops.0.time.range.start"
    rng = {"start": (now - timedelta(days=3)).isoformat(), "end": (now - timedelta(days=2)).isoformat()}
    search = {"context": {}, "message": {"intent": {"fulfillment": {"stops": [{"time": {"range": rng}}]}}}}
    assert "time.range.end" in refusal(step, draft("search", search)).paths


@pytest.mark.parametrize(
    ("timestamp", "ttl", "path"),
    [
        ("9999-12-31T23:59:59+00:00", "PT30S", "context.timestamp"),  # far future: no overflow, refused
        ("1970-01-01T00:00:00+00:00", "PT30S", None),  # expired
        ("now", "P99999999D", "context.ttl"),  # a ttl beyond the calendar
        ("now", "P2D", "context.ttl"),  # longer than a day
    ],
)
def test_not_expired_refuses_out_of_range_times_without_overflow(timestamp: str, ttl: str, path: str | None) -> None:
    from datetime import UTC, datetime

    from schemas.core import Context

    ts = datetime.now(UTC).isoformat() if timestamp == "now" else timestamp
    m = draft("select", {})
    m.context = Context.model_validate(
        {
            "domain": "d",
            "action": "select",
            "version": "1.1.0",
            "bap_id": "b",
            "bap_uri": "http://b",
            "transaction_id": "t",
            "message_id": "m",
            "timestamp": ts,
            "ttl": ttl,
        }
    )
    err = refusal(NotExpired(30, 5), m)
    assert err.kind in ("stale", "invalid_request") and err.paths == path


def test_not_expired_passes_a_fresh_message() -> None:
    from datetime import UTC, datetime

    from schemas.core import Context

    m = draft("select", {})
    m.context = Context.model_validate(
        {
            "domain": "d",
            "action": "select",
            "version": "1.1.0",
            "bap_id": "b",
            "bap_uri": "http://b",
            "transaction_id": "t",
            "message_id": "m",
            "timestamp": datetime.now(UTC).isoformat(),
            "ttl": "PT30S",
        }
    )
    NotExpired(30, 5)(m)
