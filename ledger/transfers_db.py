"""Client transfers: the ids reserved for the ledger's own operations, a transfer read back with how
its pending reservation was resolved, and the JSON answer for an append.

The rules are the pure ledger/transfers.py; the append path is ledger/store.py (through the group
committer for HTTP clients, ledger/group_commit.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from ledger.errors import not_found
from ledger.store import RequestResult
from ledger.transfers import TransferError, TransferSpec

# Transfer ids under these prefixes are written only by settlement, orders, CFT operations and expiry.
RESERVED_PREFIXES = ("settle:", "order:", "cft:", "sys:")


def check_client_transfer_ids(specs: Sequence[TransferSpec]) -> None:
    """Ids under the system's prefixes are reserved for settlement, orders and CFT operations."""
    for s in specs:
        if isinstance(s.id, str) and s.id.startswith(RESERVED_PREFIXES):
            raise TransferError(
                "id_reserved",
                f"transfer ids starting with {', '.join(RESERVED_PREFIXES)} are "
                "reserved for the ledger's own operations",
                transfer_id=s.id,
            )


def transfer_result_json(res: RequestResult) -> dict[str, Any]:
    return {"status": res.status, "height": res.height, "transfers": [e.as_json() for e in res.entries]}


def get_transfer(conn: psycopg.Connection, transfer_id: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT id, ledger, debit_account, credit_account, amount, kind, pending_id, timeout_us, time_us, memo, "
        "height, idx FROM ledger.entries WHERE id = %s",
        (transfer_id,),
    ).fetchone()
    if row is None:
        raise not_found(f"transfer {transfer_id!r}")
    out = dict(
        zip(
            (
                "id",
                "ledger",
                "debit_account",
                "credit_account",
                "amount",
                "kind",
                "pending_id",
                "timeout_us",
                "time_us",
                "memo",
                "height",
                "idx",
            ),
            row,
            strict=True,
        )
    )
    if out["kind"] == "pending":
        res = conn.execute("SELECT id, kind FROM ledger.entries WHERE pending_id = %s", (transfer_id,)).fetchone()
        out["resolved_by"] = None if res is None else {"id": res[0], "kind": res[1]}
    return out
