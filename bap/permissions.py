"""Who may call what on the BAP's client API (/api/v1): the one permission table, and the rules around it.

Pure: plain data in, plain data out (no web framework, no database). The route class in bap/auth_route.py
enforces this table on every request, tests/bap/test_authorization_matrix.py walks every route against it,
and the README's "BAP client API: roles and keys" table is `markdown_table()`'s output.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    OPERATOR = "operator"  # everything, including approvals and the kill switch
    AGGREGATOR = "aggregator"  # search, orders and reads, on its own transactions only (bound to an aggregator id)
    VIEWER = "viewer"  # read-only: GETs


ROLE_SUMMARIES: dict[Role, str] = {
    Role.OPERATOR: "everything, on every transaction (and the audit log)",
    Role.AGGREGATOR: "search, orders and reads, on the transactions its own key started (bound to an aggregator id)",
    Role.VIEWER: "read-only (GET), on every transaction",
}

ALL = frozenset(Role)
TRADERS = frozenset({Role.OPERATOR, Role.AGGREGATOR})
OPERATORS = frozenset({Role.OPERATOR})


@dataclass(frozen=True)
class Permission:
    """What one endpoint is called in the audit log, and the roles that may call it."""

    action: str
    roles: frozenset[Role]


# EVERY /api/v1 ROUTE NEEDS AN ENTRY HERE: (HTTP method, path template exactly as the route declares it).
# A route without one is refused to every key (403 `no_permission_entry`), and
# tests/bap/test_authorization_matrix.py fails until the entry exists. Add yours when you add a route, then
# paste `python -c "from bap.permissions import markdown_table; print(markdown_table())"` over the table in
# README.md "BAP client API: roles and keys" (tests/bap/test_permissions.py checks they agree).
PERMISSIONS: dict[tuple[str, str], Permission] = {
    ("POST", "/api/v1/search"): Permission("search", TRADERS),
    ("POST", "/api/v1/select"): Permission("select", TRADERS),
    ("POST", "/api/v1/init"): Permission("init", TRADERS),
    ("POST", "/api/v1/confirm"): Permission("confirm", TRADERS),
    ("POST", "/api/v1/status"): Permission("status", TRADERS),
    ("POST", "/api/v1/cancel"): Permission("cancel", TRADERS),
    ("POST", "/api/v1/update"): Permission("update", TRADERS),
    ("POST", "/api/v1/plan"): Permission("plan", TRADERS),
    ("GET", "/api/v1/transactions/{transaction_id}"): Permission("read_transaction", ALL),
    ("GET", "/api/v1/failures"): Permission("read_failures", ALL),
    ("GET", "/api/v1/deliveries/failed"): Permission("read_failed_deliveries", ALL),
    ("GET", "/api/v1/audit"): Permission("read_audit", OPERATORS),
    ("POST", "/api/v1/reconciliation/run"): Permission("run_reconciliation", OPERATORS),
    ("GET", "/api/v1/reconciliation/alerts"): Permission("read_reconciliation_alerts", OPERATORS | {Role.VIEWER}),
    # Compute Flex Tokens (bap/tokens.py)
    ("POST", "/api/v1/tokens/buy"): Permission("buy_tokens", TRADERS),
    ("GET", "/api/v1/tokens"): Permission("read_tokens", ALL),
    # their secondary market on the ledger (bap/token_market.py): this BAP's tokens and cash, not one
    # aggregator's transaction, so only operators trade there
    ("GET", "/api/v1/tokens/listings"): Permission("read_token_listings", ALL),
    ("POST", "/api/v1/tokens/listings"): Permission("list_tokens", OPERATORS),
    ("POST", "/api/v1/tokens/listings/{listing_id}/buy"): Permission("buy_listed_tokens", OPERATORS),
    ("POST", "/api/v1/tokens/listings/{listing_id}/cancel"): Permission("cancel_token_listing", OPERATORS),
    ("POST", "/api/v1/tokens/transfer"): Permission("transfer_tokens", OPERATORS),
    # the grid orchestrator (bap/orchestrator_router.py)
    ("POST", "/api/v1/procurements"): Permission("create_procurement", TRADERS),
    ("GET", "/api/v1/procurements"): Permission("list_procurements", ALL),
    ("GET", "/api/v1/procurements/{procurement_id}"): Permission("read_procurement", ALL),
    ("POST", "/api/v1/procurements/{procurement_id}/approve"): Permission("approve_procurement", OPERATORS),
    ("POST", "/api/v1/procurements/{procurement_id}/reject"): Permission("reject_procurement", OPERATORS),
    ("POST", "/api/v1/grid-events"): Permission("grid_event", OPERATORS),
    ("POST", "/api/v1/grid-events/{event_id}/cancel"): Permission("cancel_grid_event", OPERATORS),
    ("GET", "/api/v1/halt"): Permission("read_halt", ALL),
    ("POST", "/api/v1/halt"): Permission("halt", OPERATORS),
    ("POST", "/api/v1/resume"): Permission("resume", OPERATORS),
    ("GET", "/api/v1/policies"): Permission("list_policies", ALL),
    ("GET", "/api/v1/policies/active"): Permission("read_active_policy", ALL),
    ("POST", "/api/v1/policies"): Permission("create_policy", OPERATORS),
    ("POST", "/api/v1/policies/{version}/activate"): Permission("activate_policy", OPERATORS),
    ("POST", "/api/v1/policies/shadow/end"): Permission("end_shadow_policy", OPERATORS),
    ("GET", "/api/v1/signals"): Permission("read_signals", ALL),
    ("GET", "/api/v1/market-log"): Permission("read_market_log", ALL),
    ("GET", "/api/v1/carbon-log"): Permission("read_carbon_log", ALL),
}

# Calls that cannot change state. Every other method is audited whatever its outcome; these only when refused.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Refusal(StrEnum):
    """Why a request was refused before its endpoint ran (the `error.code` of the 401/403 body)."""

    MISSING_KEY = "missing_api_key"
    INVALID_KEY = "invalid_api_key"
    ROLE_FORBIDDEN = "role_forbidden"
    NO_PERMISSION_ENTRY = "no_permission_entry"

    @property
    def status(self) -> int:
        return 401 if self in (Refusal.MISSING_KEY, Refusal.INVALID_KEY) else 403


def refusal_message(refusal: Refusal, *, role: Role | None = None, allowed: frozenset[Role] = frozenset()) -> str:
    if refusal is Refusal.MISSING_KEY:
        return "an API key is required: Authorization: Bearer fmb_… (or X-API-Key)"
    if refusal is Refusal.INVALID_KEY:
        return "the API key is unknown, malformed or revoked"
    if refusal is Refusal.NO_PERMISSION_ENTRY:
        return "this endpoint has no entry in the permission table (bap/permissions.py), so no key may call it"
    names = " or ".join(sorted(allowed)) or "no"
    return f"this needs an {names} key; yours is a {role} key"


def check(method: str, path_template: str, role: Role) -> Refusal | None:
    """None when `role` may call the endpoint; otherwise why not."""
    permission = PERMISSIONS.get((method, path_template))
    if permission is None:
        return Refusal.NO_PERMISSION_ENTRY
    return None if role in permission.roles else Refusal.ROLE_FORBIDDEN


def changes_state(method: str) -> bool:
    return method not in READ_METHODS


# --- keys: `fmb_<key id>_<secret>` -----------------------------------------------------------------------

KEY_PREFIX = "fmb"
KEY_ID_HEX_CHARS = 16  # 8 random bytes
MAX_TOKEN_CHARS = 200


@dataclass(frozen=True)
class TokenParts:
    key_id: str
    secret: str


def format_token(key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}_{key_id}_{secret}"


def parse_token(token: str) -> TokenParts | None:
    """The key id and secret of a well-formed `fmb_<16 hex>_<secret>`; None for anything else."""
    if len(token) > MAX_TOKEN_CHARS:
        return None
    prefix, sep, rest = token.partition("_")
    key_id, sep2, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not sep or not sep2 or not secret:
        return None
    if len(key_id) != KEY_ID_HEX_CHARS or any(c not in "0123456789abcdef" for c in key_id):
        return None
    return TokenParts(key_id, secret)


def presented_token(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a request presents: `Authorization: Bearer …` first, else `X-API-Key`."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


# --- the README's table ---------------------------------------------------------------------------------


def markdown_table() -> str:
    """The permission table as the README shows it (a test checks the README holds exactly this)."""
    roles = list(Role)
    lines = [
        "| endpoint | audit action | " + " | ".join(r.value for r in roles) + " |",
        "|---|---|" + "---|" * len(roles),
    ]
    for (method, path), permission in PERMISSIONS.items():
        marks = " | ".join("yes" if r in permission.roles else "–" for r in roles)
        lines.append(f"| `{method} {path}` | `{permission.action}` | {marks} |")
    return "\n".join(lines)
