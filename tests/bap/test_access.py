"""Keys, ownership and the audit log of the BAP client API, in process (tests/bap/conftest.py):

- `flexmarket bap apikey create | list | revoke`; a revoked or tampered key is refused (401);
- an aggregator's key sees and acts on only the transactions it started, and its lists hold only those;
- GET /api/v1/audit (filters, paging, bad input named);
- the audit log is append-only, and a call whose row cannot be written is refused (503) and changes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from flexmarket.cli import app as cli
from kernel.db import libpq_url
from schemas import limits
from tests.bap.conftest import Keys, bearer
from tests.conftest import ROOT

runner = CliRunner()


def _sql(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return list(cur.fetchall()) if cur.description else []


def _search(client: TestClient, token: str) -> str:
    day = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    body = {
        "window_start": (day + timedelta(hours=16)).isoformat(),
        "window_end": (day + timedelta(hours=18)).isoformat(),
        "power_kw": 250,
    }
    r = client.post("/api/v1/search", json=body, headers=bearer(token))
    assert r.status_code == 202, r.text
    return str(r.json()["transaction_id"])


def _audit(client: TestClient, keys: Keys, **params: Any) -> dict[str, Any]:
    r = client.get("/api/v1/audit", params=params, headers=bearer(keys.operator))
    assert r.status_code == 200, r.text
    return dict(r.json())


# --- keys -----------------------------------------------------------------------------------------------


def test_cli_creates_lists_and_revokes_keys(client: TestClient, bap_db: str) -> None:
    made = runner.invoke(cli, ["bap", "apikey", "create", "--role", "aggregator", "--aggregator", "agg-cli"])
    assert made.exit_code == 0, made.output
    token = made.output.strip()
    key_id = token.split("_")[1]
    assert token.startswith("fmb_") and client.get("/api/v1/failures", headers=bearer(token)).status_code == 200

    listed = runner.invoke(cli, ["bap", "apikey", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    row = next(k for k in json.loads(listed.output) if k["key_id"] == key_id)
    assert row["role"] == "aggregator" and row["aggregator_id"] == "agg-cli" and row["revoked_at"] is None
    assert token.split("_", 2)[2] not in listed.output  # never the secret
    stored = _sql(bap_db, "SELECT secret_sha256 FROM bap.api_keys WHERE key_id = %s", key_id)[0][0]
    assert len(bytes(stored)) == 32 and token.encode() not in bytes(stored)

    revoked = runner.invoke(cli, ["bap", "apikey", "revoke", key_id])
    assert revoked.exit_code == 0, revoked.output
    r = client.get("/api/v1/failures", headers=bearer(token))
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert runner.invoke(cli, ["bap", "apikey", "revoke", key_id]).exit_code == 1  # not active any more


def test_the_key_commands_need_postgresql_only(bap_db: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(DATABASE_URL=bap_db, FLEXMARKET_HOME=str(tmp_path / "home"), FLEXMARKET_LOG_JSON="false")
    argv = [sys.executable, "-m", "flexmarket", "bap", "apikey", "create", "--role", "viewer"]
    made = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and made.stdout.startswith("fmb_"), made.stdout + made.stderr
    assert "redis" not in (made.stdout + made.stderr).lower() and not list((tmp_path / "home").rglob("redis*"))


def test_the_docs_offer_both_ways_to_present_a_key(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(doc["components"]["securitySchemes"])
    assert doc["paths"]["/api/v1/search"]["post"]["security"]
    assert "security" not in doc["paths"]["/beckn/{action}"]["post"]  # the callbacks are signed instead


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--role", "admin"], "--role"),
        (["--role", "aggregator"], "aggregator"),
        (["--role", "viewer", "--aggregator", "agg-x"], "aggregator"),
        (["--role", "aggregator", "--aggregator", "a" * (limits.MAX_ID_CHARS + 1)], "aggregator"),
        (["--role", "operator", "--label", "two\nlines"], "label"),
    ],
)
def test_cli_refuses_a_key_it_cannot_make_naming_the_field(client: TestClient, argv: list[str], named: str) -> None:
    r = runner.invoke(cli, ["bap", "apikey", "create", *argv])
    assert r.exit_code == 2 and named in r.output, r.output


def test_a_tampered_or_foreign_key_is_refused(client: TestClient, keys: Keys) -> None:
    prefix, key_id, secret = keys.operator.split("_", 2)
    for token in (f"{prefix}_{key_id}_{secret[:-1]}x", f"flk_{key_id}_{secret}", "fmb_", keys.operator + "x"):
        r = client.get("/api/v1/failures", headers=bearer(token))
        assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_api_key"), token
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/api/v1/failures", headers={"X-API-Key": keys.viewer}).status_code == 200


# --- ownership ------------------------------------------------------------------------------------------


def test_an_aggregator_sees_and_acts_on_only_its_own_transactions(client: TestClient, keys: Keys, bap_db: str) -> None:
    mine = _search(client, keys.aggregator)
    theirs = _search(client, keys.other_aggregator)
    _sql(bap_db, "UPDATE bap.outbox SET status = 'FAILED' WHERE transaction_id IN (%s, %s)", mine, theirs)

    assert client.get(f"/api/v1/transactions/{mine}", headers=bearer(keys.aggregator)).status_code == 200
    order = {"transaction_id": theirs, "bpp_id": "b", "provider_id": "p"}
    refused = [
        client.get(f"/api/v1/transactions/{theirs}", headers=bearer(keys.aggregator)),
        client.get("/api/v1/failures", params={"transaction_id": theirs}, headers=bearer(keys.aggregator)),
        client.post("/api/v1/cancel", json=order, headers=bearer(keys.aggregator)),
        client.post("/api/v1/plan", json={"transaction_id": theirs, "target_kw": 1}, headers=bearer(keys.aggregator)),
    ]
    assert [(r.status_code, r.json()["error"]["code"]) for r in refused] == [(403, "not_your_transaction")] * 4
    unknown = client.get("/api/v1/transactions/no-such-tx", headers=bearer(keys.aggregator))
    assert unknown.status_code == 404  # an unknown transaction is unknown to everyone

    def listed(token: str, path: str) -> set[str]:
        r = client.get(path, headers=bearer(token))
        assert r.status_code == 200, r.text
        return {row["transaction_id"] for row in r.json()}

    for path in ("/api/v1/failures", "/api/v1/deliveries/failed"):
        assert mine in listed(keys.aggregator, path) and theirs not in listed(keys.aggregator, path), path
        assert {mine, theirs} <= listed(keys.viewer, path) and {mine, theirs} <= listed(keys.operator, path), path
    owners = dict(_sql(bap_db, "SELECT id, aggregator_id FROM bap.transactions WHERE id IN (%s, %s)", mine, theirs))
    assert owners == {mine: "agg-a", theirs: "agg-b"}


# --- the audit log --------------------------------------------------------------------------------------


def test_the_audit_log_records_who_what_when_where_and_the_outcome(client: TestClient, keys: Keys) -> None:
    tx = _search(client, keys.aggregator)
    client.post("/api/v1/cancel", json={"transaction_id": tx, "bpp_id": "b", "provider_id": "p"})  # no key
    bad = client.post(
        "/api/v1/select", content=b"{not json", headers={**bearer(keys.operator), "content-type": "application/json"}
    )
    assert bad.status_code == 400

    entries = _audit(client, keys, limit=3)["entries"]
    select, cancel, search = entries
    assert search["who"]["role"] == "aggregator" and search["who"]["aggregator_id"] == "agg-a"
    assert search["what"] == {
        "method": "POST",
        "path": "/api/v1/search",
        "action": "search",
        "transaction_id": tx,
        "order_id": None,
    }
    assert search["outcome"] == {"status_code": 202, "outcome": "ok", "error_code": None, "error_message": None}
    assert search["from"] == "testclient" and datetime.fromisoformat(search["when"]["wall"]).tzinfo is not None
    assert cancel["who"] == {"key_id": None, "role": None, "aggregator_id": None}
    assert cancel["what"]["transaction_id"] == tx and cancel["outcome"]["error_code"] == "missing_api_key"
    assert select["outcome"]["status_code"] == 400 and select["outcome"]["error_code"] == "invalid_request"


def test_an_attempt_with_invisible_characters_in_its_path_is_recorded_legibly(client: TestClient, keys: Keys) -> None:
    """NUL and control characters never get this far (the body guard answers 400 naming `path`); characters that
    print as nothing (here U+200B, zero width space) are recorded escaped, so the log shows what was sent."""
    r = client.get("/api/v1/transactions/t%E2%80%8Bx")
    assert (r.status_code, r.json()["error"]["code"]) == (401, "missing_api_key")
    newest = _audit(client, keys, limit=1)["entries"][0]["what"]
    assert newest["path"] == "/api/v1/transactions/t\\u200bx" and newest["transaction_id"] == "t\\u200bx"


def test_reads_are_audited_only_when_refused(client: TestClient, keys: Keys) -> None:
    top = _audit(client, keys, limit=1)["entries"][0]["id"]
    assert client.get("/api/v1/failures", headers=bearer(keys.viewer)).status_code == 200
    assert _audit(client, keys, limit=1)["entries"][0]["id"] == top
    assert client.get("/api/v1/audit", headers=bearer(keys.viewer)).status_code == 403
    newest = _audit(client, keys, limit=1)["entries"][0]
    assert newest["what"]["action"] == "read_audit" and newest["outcome"]["outcome"] == "forbidden"


def test_the_audit_endpoint_filters_and_pages(client: TestClient, keys: Keys) -> None:
    before = datetime.now(UTC)
    for _ in range(3):
        client.post(
            "/api/v1/confirm",
            json={"transaction_id": "t", "bpp_id": "b", "provider_id": "p"},
            headers=bearer(keys.viewer),
        )
    viewer_id = keys.viewer.split("_")[1]
    mine = _audit(client, keys, key_id=viewer_id, outcome="forbidden", since=before.isoformat())["entries"]
    assert len(mine) == 3 and {e["who"]["key_id"] for e in mine} == {viewer_id}
    first = _audit(client, keys, key_id=viewer_id, since=before.isoformat(), limit=2)
    second = _audit(
        client, keys, key_id=viewer_id, since=before.isoformat(), limit=2, before_id=first["next_before_id"]
    )
    assert [e["id"] for e in first["entries"] + second["entries"]] == [e["id"] for e in mine]
    assert second["next_before_id"] is None
    assert _audit(client, keys, until=before.isoformat(), since=before.isoformat())["entries"] == []

    for params, field in [
        ({"limit": limits.MAX_PAGE_SIZE + 1}, "limit"),
        ({"limit": 0}, "limit"),
        ({"outcome": "fine"}, "outcome"),
        ({"since": "2026-11-24T17:00:00"}, "since"),
        ({"before_id": -1}, "before_id"),
    ]:
        r = client.get("/api/v1/audit", params=params, headers=bearer(keys.operator))
        assert r.status_code == 400 and field in r.json()["error"]["message"], (params, r.text)


def test_the_audit_log_is_append_only(client: TestClient, bap_db: str) -> None:
    for statement in (
        "UPDATE bap.audit_log SET status_code = 200",
        "DELETE FROM bap.audit_log",
        "TRUNCATE bap.audit_log",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            _sql(bap_db, statement)


@pytest.fixture()
def audit_broken(bap_db: str) -> Iterator[None]:
    """Every new audit row is refused by the database (a real failure, not a stub)."""
    _sql(bap_db, "ALTER TABLE bap.audit_log ADD CONSTRAINT audit_broken CHECK (false) NOT VALID")
    try:
        yield
    finally:
        _sql(bap_db, "ALTER TABLE bap.audit_log DROP CONSTRAINT audit_broken")


def test_a_call_whose_audit_row_cannot_be_written_is_refused_and_changes_nothing(
    client: TestClient, keys: Keys, bap_db: str, audit_broken: None
) -> None:
    counts = (
        "SELECT (SELECT count(*) FROM bap.transactions), (SELECT count(*) FROM bap.outbox), "
        "(SELECT count(*) FROM bap.audit_log)"
    )
    before = _sql(bap_db, counts)
    day = (datetime.now(UTC) + timedelta(days=1)).replace(hour=16, minute=0, second=0, microsecond=0)
    body = {"window_start": day.isoformat(), "window_end": (day + timedelta(hours=1)).isoformat(), "power_kw": 10}
    answers = [
        client.post("/api/v1/search", json=body, headers=bearer(keys.aggregator)),  # would change state
        client.post("/api/v1/cancel", json={"transaction_id": "t", "bpp_id": "b", "provider_id": "p"}),  # 401
        client.get("/api/v1/audit", headers=bearer(keys.viewer)),  # 403
    ]
    for r in answers:
        assert (r.status_code, r.json()["error"]["code"]) == (503, "audit_unavailable"), r.text
        assert r.headers["retry-after"]
    assert _sql(bap_db, counts) == before
    assert client.get("/api/v1/failures", headers=bearer(keys.viewer)).status_code == 200  # reads still work
