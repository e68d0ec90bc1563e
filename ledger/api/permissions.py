"""Who may call which endpoint of the ledger API: the one table (method, path under /api/v1 → the roles whose
keys may call it, or PUBLIC: no key needed). `ledger/api/deps.py` `get_principal` enforces it for every route
that takes a key, before the route runs: a key whose role is not listed gets 403 naming the roles that may;
a route missing from the table is refused to every key (403 `no_permission_entry`), so a new endpoint
cannot be reached before someone decides who may call it. `tests/ledger/test_authorization_matrix.py`
walks every route, role and no key against this table.

This is the coarse gate. The routes then apply the finer rules of the role's participant: a provider's or
BAP's key reads only its own accounts, orders and transfers, posts and reads metering only for its own meters, mints
and sells only its own series; a holder alone transfers or redeems its tokens (ledger/api/deps.py
`require_read`, `require_order_reader`; `Principal.require_participant`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.api_keys import ROLES

API_PREFIX = "/api/v1"


@dataclass(frozen=True)
class Public:
    """An endpoint anyone may call without a key (health, the chain head and signed checkpoints)."""


PUBLIC = Public()
Access = frozenset[str] | Public

EVERY_ROLE = frozenset(ROLES)
ADMIN = frozenset({"admin"})
FINANCE = frozenset({"admin", "finance"})
ORDER_PARTIES = frozenset({"admin", "finance", "bap", "provider"})  # then: only the order's own BAP and provider
BUYER = frozenset({"admin", "bap"})  # then: only the order's own BAP
PROVIDER = frozenset({"admin", "provider"})  # then: only for its own meters and series
METER_OPERATOR = frozenset({"admin", "meter_operator"})
HOLDER = frozenset({"bap", "provider"})  # then: only the holder itself (not even an admin moves its tokens)
BAP_ONLY = frozenset({"bap"})  # a buyer's own key: it pays from its cash, with its signed consent

PERMISSIONS: dict[tuple[str, str], Access] = {
    ("POST", "/accounts"): ADMIN,
    ("GET", "/accounts"): EVERY_ROLE,  # filtered to the accounts the key may read
    ("GET", "/accounts/{name}"): EVERY_ROLE,
    ("GET", "/balances/{name}"): EVERY_ROLE,
    ("POST", "/apikeys"): ADMIN,
    ("GET", "/checkpoints/public-key"): PUBLIC,
    ("GET", "/checkpoints/latest"): PUBLIC,
    ("GET", "/checkpoints/{height}"): PUBLIC,
    ("POST", "/checkpoints"): FINANCE,
    ("GET", "/chain/head"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("POST", "/metering"): PROVIDER,
    ("POST", "/metering/signed"): METER_OPERATOR,
    ("GET", "/metering/{meter_id}"): PROVIDER | {"finance"},  # then: a provider only its own meters
    ("POST", "/meter-data-keys"): METER_OPERATOR,
    ("GET", "/meter-data-keys"): METER_OPERATOR | {"finance"},
    ("POST", "/meter-data-keys/{key_id}/revoke"): METER_OPERATOR,
    ("POST", "/orders"): BUYER,
    ("GET", "/orders"): ORDER_PARTIES,  # filtered to the orders the key may read
    ("GET", "/orders/{order_id}"): ORDER_PARTIES,
    ("GET", "/orders/{order_id}/agreement"): ORDER_PARTIES,
    ("GET", "/orders/{order_id}/delivery"): ORDER_PARTIES,  # what its BAP watches during the window
    ("POST", "/orders/{order_id}/cancel"): BUYER,
    ("POST", "/orders/{order_id}/amend"): BUYER,
    ("POST", "/policies"): ADMIN,
    ("GET", "/policies/{version}"): EVERY_ROLE,
    ("POST", "/prices"): FINANCE,
    ("POST", "/settlement/run"): FINANCE,
    ("GET", "/settlement/{order_id}/{run}"): ORDER_PARTIES,
    ("GET", "/statements/{account}"): EVERY_ROLE,  # then: only an account the key may read
    ("POST", "/cft/series"): PROVIDER,
    ("GET", "/cft/series/{series_id}"): EVERY_ROLE,
    ("POST", "/cft/mint"): PROVIDER,
    ("POST", "/cft/sell"): PROVIDER,  # and the buyer's signed confirm
    ("POST", "/cft/transfer"): HOLDER,
    ("POST", "/cft/redeem"): HOLDER | ADMIN,
    ("POST", "/cft/listings"): HOLDER,  # the key's participant is the seller; its tokens go into escrow
    ("GET", "/cft/listings"): EVERY_ROLE,
    ("GET", "/cft/listings/{listing_id}"): EVERY_ROLE,
    ("POST", "/cft/listings/{listing_id}/buy"): BAP_ONLY,  # and the buyer's signed confirm
    ("POST", "/cft/listings/{listing_id}/cancel"): HOLDER,  # then: only the listing's seller
    ("POST", "/transfers"): FINANCE,
    ("POST", "/transfers/batch"): FINANCE,
    ("GET", "/transfers/{transfer_id}"): EVERY_ROLE,  # then: only a transfer touching the key's accounts
    ("GET", "/transfers/{transfer_id}/proof"): EVERY_ROLE,
    ("GET", "/verify"): frozenset({"admin", "finance", "bap"}),  # a buyer may check the chain it pays through
}


# What a refused role should do instead, where the answer is not obvious (appended to the refusal).
HINTS: dict[tuple[str, str], dict[str, str]] = {
    ("POST", "/metering"): {"meter_operator": "a meter operator posts signed readings to POST /api/v1/metering/signed"},
}


def table_path(route_path: str) -> str:
    """A route's path as the table names it: what follows /api/v1 (wherever the router is mounted)."""
    _, sep, tail = route_path.rpartition(API_PREFIX)
    return tail if sep else route_path


def access_for(method: str, route_path: str) -> Access | None:
    """The table's entry for a route (None: the route is not in the table)."""
    return PERMISSIONS.get((method, table_path(route_path)))


def refusal(role: str, access: Access | None, hint: str | None = None) -> str | None:
    """Why a key of `role` may not call a route with this entry (None: it may)."""
    if access is None:
        return "this endpoint has no entry in the permission table (ledger/api/permissions.py)"
    if isinstance(access, Public) or role in access:
        return None
    why = f"this needs a {' or '.join(sorted(access))} key; yours is a {role} key"
    return f"{why}: {hint}" if hint else why


def hint_for(method: str, route_path: str, role: str) -> str | None:
    return HINTS.get((method, table_path(route_path)), {}).get(role)


def markdown_table() -> str:
    """The permission table as the README shows it (a test checks the README holds exactly this)."""
    roles = list(ROLES)
    lines = ["| endpoint | " + " | ".join(roles) + " |", "|---|" + "---|" * len(roles)]
    for (method, path), access in PERMISSIONS.items():
        if isinstance(access, Public):
            marks = " | ".join("public" for _ in roles)
        else:
            marks = " | ".join("yes" if r in access else "–" for r in roles)
        lines.append(f"| `{method} {API_PREFIX}{path}` | {marks} |")
    return "\n".join(lines)
