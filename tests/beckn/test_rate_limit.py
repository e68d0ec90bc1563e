"""Per-sender rate limits on Beckn endpoints (beckn/steps.py SenderRateLimit, in standard_steps after the
sender's signature is verified): 429 + Retry-After for a sender beyond its budget, others unaffected, and a
gateway relaying fifty providers' answers to one search never throttled at the default settings."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from beckn.errors import Role
from beckn.identity import Identity
from beckn.keys import KeyPair
from beckn.pipeline import BecknPipeline, FastLane, prefixed_route
from beckn.registry_client import KeyRecord
from beckn.steps import Draft, Step, TokenBuckets, standard_steps
from kernel.config import get_settings

ME = Identity("bap.test", Role.BAP, "http://127.0.0.1:1", KeyPair.generate())
ACTIONS = ("on_search",)


class HeaderSender(Step):
    """Stands in for verify_sender_signature: the sender is whoever the X-Sender header names."""

    name = "verify_sender_signature"

    def __call__(self, m: Draft) -> None:
        sid = m.headers["x-sender"]
        m.sender = KeyRecord(
            subscriber_id=sid,
            unique_key_id="k",
            type="BPP",
            url="http://x",
            public_key=ME.keys.signing_private_key.public_key(),
            valid_from=None,
            valid_until=None,
        )


def lane(monkeypatch: pytest.MonkeyPatch, **limits: Any) -> FastLane:
    """The standard list up to the rate limit (the signature check replaced), each message ACKed after it."""
    p = BecknPipeline(
        participant="bap",
        role=Role.BAP,
        schema="bap",
        handlers=dict.fromkeys(ACTIONS, lambda *a: None),  # type: ignore[arg-type]  # never dispatched
        registry=None,  # type: ignore[arg-type]
    )
    standard = standard_steps(
        participant="bap",
        role=Role.BAP,
        actions=ACTIONS,
        registry=None,  # type: ignore[arg-type]
        clock_skew_s=5,
        default_ttl_s=30,
        relay_only=False,
        **limits,
    )
    names = [s.name for s in standard]
    upto = names.index("verify_sender_signature") + 2  # … and the step after it
    p.steps = [HeaderSender() if s.name == "verify_sender_signature" else s for s in standard[:upto]]

    async def accepted(_: Any) -> bool:
        return False

    p._group.submit = accepted  # type: ignore[method-assign]
    monkeypatch.setattr(Draft, "inbound", lambda self: None)  # nothing after the limit is needed
    app = FastAPI()
    app.state.pipeline = p
    return FastLane(app, prefixed_route("/beckn/", ME, ACTIONS))


def post(client: TestClient, sender: str) -> Any:
    return client.post("/beckn/on_search", content=b'{"context": {}}', headers={"X-Sender": sender})


def test_a_burst_beyond_the_limit_is_throttled_and_other_senders_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(lane(monkeypatch, rate_limit_per_s=1, rate_limit_burst=5)) as client:
        codes = [post(client, "noisy.bpp").status_code for _ in range(8)]
        assert codes[:5] == [200] * 5
        assert codes[5:] == [429] * 3
        r = post(client, "noisy.bpp")
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["message"]["ack"]["status"] == "NACK"
        assert "rate limit" in r.json()["error"]["message"]
        # another sender has a bucket of its own
        assert [post(client, "quiet.bpp").status_code for _ in range(5)] == [200] * 5


def test_a_gateway_relaying_fifty_answers_is_never_throttled_at_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(lane(monkeypatch)) as client:  # FLEXMARKET_RATE_LIMIT_PER_S / _BURST defaults
        # fifty platforms' on_search answers to one search, relayed together
        assert {post(client, f"dc-{i}.bpp").status_code for i in range(50)} == {200}
        # and fifty answers from one sender (a platform answering per provider), twice in a row
        assert {post(client, "one-platform.bpp").status_code for _ in range(100)} == {200}
    assert get_settings().rate_limit_burst >= 100


def test_the_bucket_refills_at_the_rate() -> None:
    t = [0.0]
    b = TokenBuckets(rate_per_s=10, burst=2, now=lambda: t[0])
    assert [b.take("a"), b.take("a")] == [0, 0]
    assert abs(b.take("a") - 0.1) < 1e-9  # one token in 0.1 s
    t[0] = 0.1
    assert b.take("a") == 0
