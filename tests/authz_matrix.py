"""An authorization matrix, generated from an API's one permission table: reusable for any FastAPI app
whose routes are gated by role (the BAP client API today; the ledger API can use it the same way).

- `coverage_problems` walks every route of the app under a prefix and names each route without a table entry
  (and each entry without a route: a stale line in the table is a lie too).
- `run_matrix` sends, for every endpoint, one real request with no key and one with each role's key, and
  names every answer that contradicts the table: no key → 401; a role not allowed → 403 with a permission
  table's code (GATE_CODES); a role allowed → neither 401 nor such a 403 (a 403 with another code is the
  endpoint's finer rule, e.g. not this key's account) nor 500 (a request that got through must be handled;
  502/503/504 are accepted, for endpoints whose dependency the test's app cannot reach).

An endpoint's request is its `Probe` (path parameters filled, a JSON body, a query); by default path
parameters are filled with `PLACEHOLDER` and a body-taking method sends `{}` — an allowed call then meets
validation (400), which still shows the gate let it through. Give probes with valid bodies where the
endpoint should do its real work.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

PLACEHOLDER = "matrix-probe"
NO_KEY = "(no key)"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # the template, as the route declares it

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class Probe:
    """The request sent to an endpoint: path parameters, JSON body (None: none sent), query."""

    path_params: Mapping[str, str] = field(default_factory=dict)
    json: Any = None
    params: Mapping[str, str] = field(default_factory=dict)


def _routes(app: FastAPI) -> Iterator[tuple[str, Collection[str]]]:
    """(path template, methods) of every route, including those of included routers (which recent FastAPI
    versions keep as one lazily expanded entry of `app.routes`)."""
    for route in app.routes:
        expand = getattr(route, "effective_route_contexts", None)
        for r in expand() if callable(expand) else [route]:
            path, methods = getattr(r, "path_format", None), getattr(r, "methods", None)
            if path and methods:
                yield path, methods


def api_endpoints(app: FastAPI, prefix: str) -> set[Endpoint]:
    """Every (method, path template) the app routes under `prefix` (HEAD/OPTIONS aside): the routes walked,
    and the OpenAPI document's paths (the two must not disagree on what exists)."""
    walked = {Endpoint(m, path) for path, methods in _routes(app) for m in methods if m not in ("HEAD", "OPTIONS")}
    documented = {Endpoint(m.upper(), path) for path, item in app.openapi().get("paths", {}).items() for m in item}
    return {e for e in walked | documented if e.path.startswith(prefix)}


def coverage_problems(app: FastAPI, prefix: str, table: Collection[tuple[str, str]]) -> list[str]:
    routed = api_endpoints(app, prefix)
    listed = {Endpoint(m, p) for m, p in table}
    return [f"route without a permission entry: {e}" for e in sorted(routed - listed, key=str)] + [
        f"permission entry without a route: {e}" for e in sorted(listed - routed, key=str)
    ]


def _request(endpoint: Endpoint, probe: Probe, headers: Mapping[str, str]) -> httpx.Request:
    params = dict(probe.path_params)
    for name in _path_params(endpoint.path):
        params.setdefault(name, PLACEHOLDER)
    body = probe.json if probe.json is not None else ({} if endpoint.method in BODY_METHODS else None)
    return httpx.Request(
        endpoint.method,
        "http://testserver" + endpoint.path.format(**params),
        json=body,
        params=dict(probe.params),
        headers=dict(headers),
    )


def _path_params(template: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in template.split("/") if part.startswith("{") and part.endswith("}")]


# The error codes of a refusal by the permission table itself; a 403 with another code is a finer rule of the
# endpoint (not this key's transaction, account or meter), met only after the table let the key through.
GATE_CODES = frozenset({"role_forbidden", "no_permission_entry"})


def _error_code(r: httpx.Response) -> str | None:
    try:
        return str(r.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def _verdict(r: httpx.Response, allowed: bool | None) -> str | None:
    """Why the answer contradicts the table (None: it agrees). `allowed` None: no key was sent."""
    status = r.status_code
    if allowed is None:
        return None if status == 401 else "expected 401"
    gate_refused = status == 403 and _error_code(r) in GATE_CODES
    if not allowed:
        return None if gate_refused else "expected 403 from the permission table"
    if status == 401 or gate_refused:
        return "allowed by the table, refused"
    # 500 is an unhandled error; 502/503/504 name a dependency this in-process app cannot reach (the ledger)
    return "allowed, but answered 500" if status == 500 else None


def run_matrix(
    client: TestClient,
    table: Mapping[tuple[str, str], Collection[str]],
    keys: Mapping[str, Mapping[str, str]],
    *,
    probes: Mapping[tuple[str, str], Probe] | None = None,
) -> list[str]:
    """For each endpoint of `table` (method, path → roles allowed) and each role of `keys` (role → the headers
    presenting its key), plus no key: one request. Returns every contradiction (empty: the API enforces the
    table)."""
    problems: list[str] = []
    for (method, path), allowed in table.items():
        endpoint = Endpoint(method, path)
        probe = (probes or {}).get((method, path), Probe())
        cases: list[tuple[str, Mapping[str, str], bool | None]] = [(NO_KEY, {}, None)]
        cases += [(role, headers, role in allowed) for role, headers in keys.items()]
        for who, headers, ok in cases:
            r = client.send(_request(endpoint, probe, headers))
            why = _verdict(r, ok)
            if why:
                problems.append(f"{endpoint} as {who}: {r.status_code} ({why}) {r.text[:200]}")
    return problems
