"""The BAP client API enforces its one permission table (bap/permissions.py), generated into a matrix:
every /api/v1 route has an entry, and every role × endpoint (and no key) gets the answer the table says —
with real requests that do their real work where allowed (an accepted order to select, cancel, … on), and
an audit row for each state-changing or refused call."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from bap.models import AuditEntry, BapOrder, CatalogOffer, Transaction
from bap.permissions import PERMISSIONS, Role, changes_state
from kernel.db import session_scope
from tests.authz_matrix import NO_KEY, Probe, coverage_problems, run_matrix
from tests.bap.conftest import Keys, bearer

TX = "tx-matrix"
BPP, PROVIDER, ITEM = "bpp.matrix", "dc-matrix", "dc-matrix-evening"


def _window() -> tuple[datetime, datetime]:
    day = (datetime.now(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(hours=16), day + timedelta(hours=18)


@pytest.fixture(scope="module")
def accepted_order(keys: Keys) -> Iterator[None]:
    """A transaction of aggregator agg-a (the matrix's aggregator key) with an offer and an accepted order,
    so that every order action has something real to act on."""
    start, end = _window()
    with session_scope("bap") as s:
        request = {"window_start": start.isoformat(), "window_end": end.isoformat(), "power_kw": 500.0}
        s.add(Transaction(id=TX, request=request, city_code="GB-R13", country_code="GBR", aggregator_id="agg-a"))
        s.add(
            CatalogOffer(
                transaction_id=TX,
                bpp_id=BPP,
                provider_id=PROVIDER,
                item_id=ITEM,
                bpp_uri="http://127.0.0.1:9/p",
                price_gbp_per_mwh=120.0,
                available_kw=500.0,
                window_start=start,
                window_end=end,
                spec={},
            )
        )
        s.add(
            BapOrder(
                transaction_id=TX,
                bpp_id=BPP,
                provider_id=PROVIDER,
                bpp_uri="http://127.0.0.1:9/p",
                item_id=ITEM,
                order_id="ord-matrix",
                power_kw=500.0,
                window_start=start,
                window_end=end,
                settlement_method="P415",
                state="ACCEPTED",
            )
        )
    yield


def _probes() -> dict[tuple[str, str], Probe]:
    start, end = _window()
    order = {"transaction_id": TX, "bpp_id": BPP, "provider_id": PROVIDER, "item_id": ITEM}
    probes = {("POST", f"/api/v1/{a}"): Probe(json=order) for a in ("select", "init", "confirm", "status", "update")}
    probes[("POST", "/api/v1/cancel")] = Probe(json={**order, "reason": "matrix"})
    probes[("POST", "/api/v1/search")] = Probe(
        json={"window_start": start.isoformat(), "window_end": end.isoformat(), "power_kw": 100}
    )
    probes[("POST", "/api/v1/plan")] = Probe(json={"transaction_id": TX, "target_kw": 100})
    probes[("GET", "/api/v1/transactions/{transaction_id}")] = Probe(path_params={"transaction_id": TX})
    probes[("GET", "/api/v1/failures")] = Probe(params={"transaction_id": TX})
    return probes


def _table() -> dict[tuple[str, str], set[str]]:
    return {endpoint: {r.value for r in p.roles} for endpoint, p in PERMISSIONS.items()}


def _audit_rows() -> int:
    with session_scope("bap") as s:
        return int(s.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def test_every_api_route_has_exactly_one_permission_entry(client: TestClient) -> None:
    assert coverage_problems(client.app, "/api/v1", PERMISSIONS) == []  # type: ignore[arg-type]


def test_every_role_gets_what_the_table_says_and_every_audited_call_is_logged(
    client: TestClient, keys: Keys, accepted_order: None
) -> None:
    before = _audit_rows()
    problems = run_matrix(client, _table(), {r.value: bearer(keys.of(r)) for r in Role}, probes=_probes())
    assert problems == [], "\n".join(problems)
    # One row for each call without a key, each refused role, and each allowed state-changing call.
    expected = sum(
        1 + sum(1 for r in Role if r not in p.roles or changes_state(method)) for (method, _), p in PERMISSIONS.items()
    )
    assert _audit_rows() - before == expected


def test_the_matrix_catches_a_table_the_api_does_not_enforce(client: TestClient, keys: Keys) -> None:
    """The machinery can fail: a table granting viewers the audit log, or denying operators search, is caught."""
    lying = _table()
    lying[("GET", "/api/v1/audit")] = {"operator", "viewer"}
    lying[("POST", "/api/v1/search")] = {"aggregator"}
    only = {k: lying[k] for k in (("GET", "/api/v1/audit"), ("POST", "/api/v1/search"))}
    problems = run_matrix(client, only, {r.value: bearer(keys.of(r)) for r in Role}, probes=_probes())
    assert len(problems) == 2
    assert "GET /api/v1/audit as viewer: 403" in problems[0] and "POST /api/v1/search as operator" in problems[1]
    assert not any(NO_KEY in p for p in problems)


def test_a_route_without_an_entry_is_reported_and_refused_to_every_key(client: TestClient, keys: Keys) -> None:
    table = dict(PERMISSIONS)
    del table[("GET", "/api/v1/failures")]
    assert coverage_problems(client.app, "/api/v1", table) == [  # type: ignore[arg-type]
        "route without a permission entry: GET /api/v1/failures"
    ]
    extra = {**PERMISSIONS, ("DELETE", "/api/v1/everything"): PERMISSIONS[("GET", "/api/v1/audit")]}
    assert coverage_problems(client.app, "/api/v1", extra) == [  # type: ignore[arg-type]
        "permission entry without a route: DELETE /api/v1/everything"
    ]
