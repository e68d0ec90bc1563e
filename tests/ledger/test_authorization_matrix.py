"""The ledger API enforces its one permission table (ledger/api/permissions.py), generated into a matrix:
every /api/v1 route has an entry (and every entry a route), and every role × endpoint, plus no key, gets the
answer the table says — 401 without a key, 403 `role_forbidden` for a role the table does not list, and for a
listed role anything but those (a finer rule of the endpoint may still refuse: not this key's account).
Public endpoints answer without a key. A new endpoint without an entry fails the coverage test, and is
refused to every key until it has one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.testclient import TestClient

from ledger.api import permissions
from ledger.api.deps import LedgerRoute, Who
from ledger.api.permissions import API_PREFIX, PERMISSIONS, PUBLIC, Public
from ledger.api_keys import ROLES
from ledger.main import create_app
from tests.authz_matrix import coverage_problems, run_matrix
from tests.ledger.helpers import bearer_keys


def _keys(ledger_url: str) -> dict[str, dict[str, str]]:
    """One key for every role (participant roles bound to a participant of their own)."""
    bound = {"admin": None, "finance": None}
    who = {role: (role, bound.get(role, f"matrix-{role}")) for role in ROLES}
    return bearer_keys(ledger_url, **who)


def test_every_route_has_an_entry_and_every_entry_a_route(client: TestClient) -> None:
    table = [(method, API_PREFIX + path) for method, path in PERMISSIONS]
    assert coverage_problems(client.app, API_PREFIX, table) == []  # type: ignore[arg-type]


def test_every_role_gets_what_the_table_says(client: TestClient, ledger_url: str) -> None:
    keys = _keys(ledger_url)
    assert set(keys) == set(ROLES)
    gated = {(m, API_PREFIX + p): access for (m, p), access in PERMISSIONS.items() if not isinstance(access, Public)}
    problems = run_matrix(client, gated, keys)
    assert problems == [], "\n".join(problems)


def test_public_endpoints_answer_without_a_key(client: TestClient) -> None:
    public = [(m, p) for (m, p), access in PERMISSIONS.items() if access == PUBLIC and "{" not in p]
    assert public
    for method, path in public:
        r = client.request(method, API_PREFIX + path)
        assert r.status_code not in (401, 403), (method, path, r.status_code)


def test_a_route_missing_from_the_table_is_refused_to_every_key(ledger_url: str) -> None:
    app = create_app()
    extra = APIRouter(prefix=API_PREFIX, route_class=LedgerRoute)

    @extra.get("/not-in-the-table")
    def unlisted(who: Who) -> dict[str, Any]:
        return {"reached": True}

    app.include_router(extra)
    with TestClient(app) as c:
        table = [(m, API_PREFIX + p) for m, p in PERMISSIONS]
        assert coverage_problems(app, API_PREFIX, table) == [
            f"route without a permission entry: GET {API_PREFIX}/not-in-the-table"
        ]
        for role, headers in _keys(ledger_url).items():
            r = c.get(API_PREFIX + "/not-in-the-table", headers=headers)
            assert r.status_code == 403 and r.json()["error"]["code"] == "no_permission_entry", (role, r.text)


def test_the_refusal_names_the_roles_that_may() -> None:
    assert permissions.refusal("bap", PERMISSIONS[("POST", "/transfers")]) == (
        "this needs a admin or finance key; yours is a bap key"
    )
    assert permissions.refusal("finance", PERMISSIONS[("POST", "/transfers")]) is None
    assert permissions.table_path("/mounted/api/v1/orders/{order_id}") == "/orders/{order_id}"


def test_the_readme_shows_the_permission_table_of_the_code() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert permissions.markdown_table() in readme, "README.md's ledger role table differs from markdown_table()"
