"""The pipeline's steps (beckn/steps.py): the standard list and its order, one list run by both ways in
(the fast lane and the participants' FastAPI routes), and the refusing step named in the log."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from beckn import pipeline as pipeline_module
from beckn.errors import BecknError, Role
from beckn.identity import Identity
from beckn.keys import KeyPair
from beckn.pipeline import BecknPipeline, FastLane, prefixed_route
from beckn.steps import Draft, Step, standard_steps
from gateway.router import router as gateway_router

ME = Identity("gw.test", Role.BG, "http://127.0.0.1:1", KeyPair.generate())
ACTIONS = ("search", "on_search")

STANDARD = [
    "action_served",
    "read_body",
    "parse_json",
    "verify_sender_signature",
    "verify_gateway_signature",
    "context_schema",
    "context_action",
    "context_version",
    "context_domain",
    "context_required_fields",
    "context_location",
    "not_expired",
    "signer_is_sender",
    "sender_uri_registered",
    "addressed_to_receiver",
    "error_schema",
    "message_present",
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
    p.steps = (*p.steps[:3], RefuseAfterParsing(), *p.steps[3:])
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
