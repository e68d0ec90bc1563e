"""Property-based fuzzing of the running network: not one 5xx.

- the BAP client API from its OpenAPI document (schemathesis: requests that fit the schema and requests that
  do not);
- hostile but correctly signed Beckn bodies (hypothesis): a valid message of each action with one value
  somewhere in it replaced by something hostile (NUL and control characters, huge or non-finite numbers,
  overlong strings, deep nesting, wrong types, past and far-future instants), posted to every Beckn endpoint
  of the BPP, the BAP and the gateway, and the registry's /lookup; every request a receiver ACKed is
  followed by its answer (an ACK is never followed by nothing).

Bounded: max_examples per target below, no deadline, generation phase only (the set runs in ~30-60 s on 2
loaded cores)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from beckn import envelope
from flexmarket.runner import Network
from tests.e2e.conftest import Signer
from tests.e2e.helpers import bap_headers, eventually, scalar
from tests.e2e.test_hostile_input import beckn, order_msg, search_msg

pytestmark = pytest.mark.e2e
schemathesis = pytest.importorskip("schemathesis")
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

BAP_API_EXAMPLES = 15  # per client-API operation (a valid /search really fans out to the BPPs)
BECKN_EXAMPLES = 80  # per receiver
# In CI (CI set) the examples are a fixed sequence, so a landing is reproducible; elsewhere every run explores
# new inputs (a failure prints the request to replay).
FUZZ = settings(
    deadline=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=bool(os.environ.get("CI")),
)


def test_bap_client_api_never_answers_5xx(network: Network) -> None:
    config = SchemathesisConfig.from_dict(
        {"phases": {"coverage": {"enabled": False}, "examples": {"enabled": False}, "stateful": {"enabled": False}}}
    )
    schema = schemathesis.openapi.from_url(network.url("bap") + "/openapi.json", config=config)
    operations = [op for op in (r.ok() for r in schema.get_all_operations()) if op.path.startswith("/api/")]
    assert len(operations) >= 8
    failures: list[str] = []
    for op in operations:
        strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

        @given(case=strategy)
        @settings(FUZZ, max_examples=BAP_API_EXAMPLES)
        def probe(case: Any) -> None:
            response = case.call(base_url=network.url("bap"), headers=bap_headers(network, "operator"), timeout=10)
            if response.status_code >= 500:
                failures.append(f"{case.operation.label}: {response.status_code} for {case.as_curl_command()}")

        probe()
    assert not failures, "\n".join(failures[:10])


# -- hostile Beckn bodies ----------------------------------------------------------------------------------
def _deep(n: int) -> Any:
    v: Any = 1
    for _ in range(n):
        v = {"a": v}
    return v


_NOW = datetime.now(UTC)
HOSTILE = st.one_of(
    st.sampled_from(
        [
            "\x00",
            "a\x00b",
            "\x1b[2J",
            "\x7f",
            "x" * 300,
            "x" * 70_000,
            "",
            " ",
            2**70,
            -(2**70),
            2**63,
            1e308,
            -1e308,
            0,
            -1,
            True,
            None,
            [],
            {},
            _deep(40),
            [_deep(40)],
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            (_NOW - timedelta(days=3)).isoformat(),
            (_NOW + timedelta(days=365 * 300)).isoformat(),
            "NaN",
            "1e308",
            "-0",
            "1" * 400,
            "GB-R13\x00",
            "\ud800",
        ]
    ),
    st.text(min_size=0, max_size=50),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(_paths(v, (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.extend(_paths(v, (*path, i)))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


def _dumps(payload: Any) -> bytes:
    # Python's encoder writes 1e308 * 10 as Infinity and lone surrogates as escapes: both are hostile input
    return json.dumps(payload, separators=(",", ":"), allow_nan=True).encode()


def _fresh(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A fresh message each time: new ids (no inbox de-duplication), current timestamp."""
    if "context" not in payload:
        return payload
    ctx = {**payload["context"], "message_id": envelope.new_id(), "timestamp": envelope.iso(envelope.utc_now())}
    if not action.startswith("on_"):
        ctx["transaction_id"] = envelope.new_id()
    return {**payload, "context": ctx}


@st.composite
def hostile_message(draw: st.DrawFn, templates: list[tuple[str, dict[str, Any]]]) -> tuple[str, bytes]:
    action, payload = draw(st.sampled_from(templates))
    payload = _fresh(action, payload)
    paths = _paths(payload)[1:]  # not the whole body
    path = draw(st.sampled_from(paths))
    mutated = _replace(payload, path, draw(HOSTILE))
    if draw(st.booleans()):  # sometimes a second value too
        mutated = _replace(mutated, draw(st.sampled_from(_paths(mutated)[1:])), draw(HOSTILE))
    return action, _dumps(mutated)


def _fuzz_receiver(signer: Signer, url: str, templates: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Posts the hostile messages; answers the contexts of those the receiver ACKed."""
    failures: list[str] = []
    acked: list[dict[str, Any]] = []

    @given(message=hostile_message(templates))
    @settings(FUZZ, max_examples=BECKN_EXAMPLES)
    def probe(message: tuple[str, bytes]) -> None:
        action, body = message
        r = signer.post(f"{url}/{action}", body)
        if r.status_code >= 500 and r.status_code != 503:  # 503: registry unreachable, a declared retry
            failures.append(f"/{action}: {r.status_code} {r.text[:200]} for {body[:300]!r}")
        elif r.status_code != 200 or r.json()["message"]["ack"]["status"] != "ACK":
            assert r.json()["error"]["message"], r.text  # every refusal says why
        else:
            acked.append(json.loads(body)["context"])

    probe()
    assert not failures, "\n".join(failures[:10])
    for action, payload in templates:  # and each template as it is (a search is ACKed; others may be refused)
        fresh = _fresh(action, payload)
        r = signer.post(f"{url}/{action}", _dumps(fresh))
        if r.status_code == 200 and r.json()["message"]["ack"]["status"] == "ACK":
            acked.append(fresh["context"])
    assert any(c["action"] == "search" for c in acked) or templates[0][0] != "search", "a plain search was refused"
    return acked


def _answered(
    db_url: str, schema: str, acked: list[dict[str, Any]], answer: Callable[[dict[str, Any]], tuple[str, ...]]
) -> None:
    """Every ACKed request is followed by the receiver's answer in its outbox (sent, or visibly failed):
    an ACK is never followed by nothing."""

    def unanswered() -> list[str]:
        return [
            f"{c['action']} {c['message_id']}"
            for c in acked
            if not scalar(
                db_url,
                f"SELECT count(*) FROM {schema}.outbox WHERE transaction_id = %s AND action = ANY(%s)",
                c["transaction_id"],
                list(answer(c)),
            )
        ]

    eventually(lambda: not unanswered(), timeout=60, interval=0.5)


def test_bpp_never_answers_5xx_to_hostile_signed_messages(bap_signer: Signer, bpp_platform: dict, db_url: str) -> None:
    templates = [("search", beckn(bap_signer, "search", search_msg(), bpp_platform))] + [
        (a, beckn(bap_signer, a, order_msg(), bpp_platform)) for a in ("select", "init", "confirm", "update")
    ]
    templates += [(a, beckn(bap_signer, a, {"order_id": "o-1"}, bpp_platform)) for a in ("status", "cancel")]
    acked = _fuzz_receiver(bap_signer, bpp_platform["url"], templates)
    _answered(db_url, "bpp", acked, lambda c: (f"on_{c['action']}",))


def test_bap_never_answers_5xx_to_hostile_signed_callbacks(network: Network, bpp_signer: Signer) -> None:
    bap = network.manifest["participants"]["bap"]
    templates = [
        (a, beckn(bpp_signer, a, order_msg(), bap)) for a in ("on_select", "on_init", "on_confirm", "on_status")
    ]
    templates.append(("on_search", beckn(bpp_signer, "on_search", {"catalog": {"providers": []}}, bap)))
    _fuzz_receiver(bpp_signer, bap["url"], templates)


def test_gateway_never_answers_5xx_to_hostile_signed_searches(
    network: Network, bap_signer: Signer, db_url: str
) -> None:
    template = [("search", beckn(bap_signer, "search", search_msg(), None))]
    acked = _fuzz_receiver(bap_signer, network.url("gateway"), template)
    # relayed to the BPPs (rows "search"), or its failure reported to the BAP (an "on_search" of the gateway's)
    _answered(db_url, "gateway", [c for c in acked if c.get("bpp_id") is None], lambda c: ("search", "on_search"))


def test_registry_lookup_never_answers_5xx(network: Network) -> None:
    template = {"subscriber_id": "x", "type": "BPP", "domain": "deg:flexibility", "location": {"city": {"code": "c"}}}
    failures: list[str] = []

    @given(message=hostile_message([("lookup", template)]))
    @settings(FUZZ, max_examples=BECKN_EXAMPLES)
    def probe(message: tuple[str, bytes]) -> None:
        _, body = message
        r = httpx.post(network.url("registry") + "/lookup", content=body, timeout=10)
        if r.status_code >= 500:
            failures.append(f"/lookup: {r.status_code} {r.text[:200]} for {body[:300]!r}")

    probe()
    assert not failures, "\n".join(failures[:10])
