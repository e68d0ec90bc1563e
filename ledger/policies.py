"""Settlement policies in PostgreSQL: append-only versions; the built-in ones are stored on first use.

The policy parameters and their validation are the pure ledger/settlement.py (`Policy`).
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from ledger import accounts as acct
from ledger.errors import LedgerError
from ledger.settlement import BUILTIN_POLICIES, Policy, PolicyError


def get_policy(conn: psycopg.Connection, version: str) -> Policy:
    """A stored policy; the built-in ones are stored on first use (policies are append-only)."""
    row = conn.execute("SELECT params FROM ledger.policies WHERE version = %s", (version,)).fetchone()
    if row is None:
        builtin = BUILTIN_POLICIES.get(version)
        if builtin is None:
            raise LedgerError(
                "unknown_policy",
                f"settlement policy {version!r} does not exist (built in: {', '.join(BUILTIN_POLICIES)})",
            )
        conn.execute(
            "INSERT INTO ledger.policies (version, params) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (version, json.dumps(builtin.to_json())),
        )
        row = conn.execute("SELECT params FROM ledger.policies WHERE version = %s", (version,)).fetchone()
        assert row is not None
    return Policy.from_json(version, row[0])


def create_policy(conn: psycopg.Connection, version: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        acct.check_id(version, "policy version")
        policy = Policy.from_json(version, params)
    except (PolicyError, acct.AccountNameError, TypeError) as exc:
        raise LedgerError("policy_invalid", str(exc)) from exc
    stored = policy.to_json()
    row = conn.execute("SELECT params FROM ledger.policies WHERE version = %s", (version,)).fetchone()
    if row is not None:
        if row[0] != stored:
            raise LedgerError(
                "policy_conflict",
                f"policy {version} already exists with other parameters; "
                "policies are immutable — publish a new version",
                status=409,
            )
        return {"status": "exists", "version": version, "params": stored}
    if version in BUILTIN_POLICIES and BUILTIN_POLICIES[version].to_json() != stored:
        raise LedgerError("policy_conflict", f"{version} is a built-in policy name", status=409)
    conn.execute("INSERT INTO ledger.policies (version, params) VALUES (%s, %s)", (version, json.dumps(stored)))
    return {"status": "created", "version": version, "params": stored}
