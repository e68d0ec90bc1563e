"""A statement document (ledger/statements.py) as CSV for spreadsheets, and back (no database here).

Rows, under the STATEMENT_CSV_COLUMNS header: a `clock` row (the clock the statement was made under,
as JSON in `memo`; absent from statements made before it was recorded), an `opening` row, one `entry`
row per entry (with its canonical bytes and proof as JSON), a `closing` row, a `checkpoint` row
(JSON) and a `key_handover` row (JSON) per rotation of the ledger's key, if any. The last column,
`agreement_sha256`, names the signed agreement an entry of an order or token sale carries (ledger/agreements.py);
`reading_kind`, the kind of meter reading a settlement entry rests on (meter_operator, self_reported,
estimated or missing: ledger/allocation.py), empty for entries that rest on none.
`statement_from_csv` rebuilds the JSON document so that the CSV verifies offline too
(ledger/proofs.py `verify_statement`).
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from ledger.proofs import STATEMENT_FORMAT

STATEMENT_CSV_COLUMNS = (
    "record",
    "time",
    "time_us",
    "id",
    "kind",
    "debit_account",
    "credit_account",
    "amount",
    "posted_delta",
    "running_balance",
    "pending_id",
    "memo",
    "canonical",
    "proof",
    "agreement_sha256",
    "reading_kind",
)


def statement_csv(doc: dict[str, Any]) -> str:
    """The statement as CSV for spreadsheets: a `clock` row (if the document records one), an `opening`
    row, one `entry` row per entry (with its canonical bytes and proof as JSON), a `closing` row and a
    `checkpoint` row (JSON)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(STATEMENT_CSV_COLUMNS)
    if doc.get("clock") is not None:
        w.writerow(["clock", "", "", "", "", "", "", "", "", "", "", _json(doc["clock"]), "", "", "", ""])
    w.writerow(
        [
            "opening",
            doc["from"],
            doc["from_us"],
            "",
            "",
            "",
            doc["account"],
            "",
            "",
            doc["opening_balance"],
            "",
            f"{doc['ledger']} {doc['unit']}",
            "",
            "",
            "",
            "",
        ]
    )
    for e in doc["entries"]:
        w.writerow(
            [
                "entry",
                e["time"],
                e["time_us"],
                e["id"],
                e["kind"],
                e["debit_account"],
                e["credit_account"],
                e["amount"],
                e["posted_delta"],
                e["running_balance"],
                e["pending_id"] or "",
                e["memo"],
                e["canonical"],
                json.dumps(e["proof"], separators=(",", ":")),
                e.get("agreement_sha256") or "",
                e.get("reading_kind") or "",
            ]
        )
    w.writerow(
        [
            "closing",
            doc["to"],
            doc["to_us"],
            "",
            "",
            "",
            doc["account"],
            "",
            "",
            doc["closing_balance"],
            "",
            "",
            "",
            "",
            "",
            "",
        ]
    )
    w.writerow(
        [
            "checkpoint",
            "",
            doc["checkpoint"]["message"]["time_us"],
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            json.dumps(doc["checkpoint"], separators=(",", ":"), sort_keys=True),
            "",
            "",
        ]
    )
    for h in doc.get("key_handovers") or []:  # the ledger's key rotations (ledger/proofs.py)
        w.writerow(["key_handover", "", h["message"]["time_us"], *[""] * 10, _json(h), "", ""])
    return buf.getvalue()


def statement_from_csv(text: str) -> dict[str, Any]:
    """Rebuild the JSON statement from its CSV form (so the CSV verifies offline too)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    opening = next(r for r in rows if r["record"] == "opening")
    closing = next(r for r in rows if r["record"] == "closing")
    cp = next(r for r in rows if r["record"] == "checkpoint")
    made_under = next((r for r in rows if r["record"] == "clock"), None)
    ledger, _, unit = opening["memo"].partition(" ")
    entries = [
        {
            "id": r["id"],
            "time": r["time"],
            "time_us": int(r["time_us"]),
            "kind": r["kind"],
            "debit_account": r["debit_account"],
            "credit_account": r["credit_account"],
            "amount": int(r["amount"]),
            "posted_delta": int(r["posted_delta"]),
            "running_balance": int(r["running_balance"]),
            "pending_id": r["pending_id"] or None,
            "memo": r["memo"],
            "canonical": r["canonical"],
            "proof": json.loads(r["proof"]),
            "agreement_sha256": r.get("agreement_sha256") or None,
            "reading_kind": r.get("reading_kind") or None,
        }
        for r in rows
        if r["record"] == "entry"
    ]
    doc: dict[str, Any] = {
        "format": STATEMENT_FORMAT,
        "account": opening["credit_account"],
        "ledger": ledger,
        "unit": unit,
        "from": opening["time"],
        "to": closing["time"],
        "from_us": int(opening["time_us"]),
        "to_us": int(closing["time_us"]),
        "opening_balance": int(opening["running_balance"]),
        "closing_balance": int(closing["running_balance"]),
        "entry_count": len(entries),
        "entries": entries,
        "checkpoint": json.loads(cp["proof"]),
    }
    if made_under is not None:
        doc["clock"] = json.loads(made_under["memo"])
    handovers = [json.loads(r["proof"]) for r in rows if r["record"] == "key_handover"]
    if handovers:
        doc["key_handovers"] = handovers
    return doc


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
