"""Signed agreements in PostgreSQL (`ledger.agreements`, append-only): recorded beside the order, the
amendment or the token sale they back, refused when replayed, read back for offline re-verification.

The rules (signatures, signers, terms) are the pure ledger/agreements.py; this module holds what needs
the database: a signed message backs one agreement only, and a provider is hosted by the platform that
signed its first agreement.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Literal

import psycopg

from ledger.agreements import AgreedOrder, Verified, agreed_item_id, agreement_sha256
from ledger.db import iso
from ledger.errors import LedgerError, not_found

Kind = Literal["order", "amendment", "token_sale"]

_SIDES = ("body", "authorization", "signer", "key_id", "sha256")
_COLUMNS = (
    "agreement_sha256, kind, subject, reference, transaction_id, bap_id, provider_id, "
    + ", ".join(f"buyer_{c}" for c in _SIDES)
    + ", "
    + ", ".join(f"provider_{c}" for c in _SIDES)
    + ", recorded_at"
)


def check_hosting_platform(conn: psycopg.Connection, provider_id: str, signer: str) -> None:
    """A provider's orders are accepted by one BPP platform: the one that signed its first agreement."""
    row = conn.execute(
        "SELECT provider_signer FROM ledger.agreements WHERE provider_id = %s AND kind = 'order' "
        "ORDER BY recorded_at, agreement_sha256 LIMIT 1",
        (provider_id,),
    ).fetchone()
    if row is not None and row[0] != signer:
        raise LedgerError(
            "signer_mismatch",
            f"on_confirm.authorization: provider {provider_id!r} is hosted by {row[0]!r}; {signer!r} cannot accept "
            "its orders",
        )


def existing_hash(conn: psycopg.Connection, kind: Kind, subject: str, reference: str = "") -> bytes | None:
    row = conn.execute(
        "SELECT agreement_sha256 FROM ledger.agreements WHERE kind = %s AND subject = %s AND reference = %s",
        (kind, subject, reference),
    ).fetchone()
    return None if row is None else bytes(row[0])


def check_not_replayed(conn: psycopg.Connection, *messages: Verified | None) -> None:
    """Refuse (409) a signed message that already backs another agreement."""
    for m in messages:
        if m is None:
            continue
        row = conn.execute(
            "SELECT kind, subject FROM ledger.agreements WHERE buyer_sha256 = %s OR provider_sha256 = %s LIMIT 1",
            (m.sha256, m.sha256),
        ).fetchone()
        if row is not None:
            raise LedgerError(
                "agreement_replayed",
                f"{m.field}: this signed message already backs {row[0]} {row[1]!r}; it cannot back another",
                status=409,
            )


def record(
    conn: psycopg.Connection,
    *,
    kind: Kind,
    subject: str,
    reference: str = "",
    transaction_id: str,
    bap_id: str,
    provider_id: str,
    buyer: Verified | None,
    provider: Verified | None,
    now: datetime,
) -> bytes:
    """Store one agreement (append-only) and return its hash."""
    digest = agreement_sha256(buyer.sha256 if buyer else None, provider.sha256 if provider else None)
    conn.execute(
        f"INSERT INTO ledger.agreements ({_COLUMNS}) VALUES ({', '.join(['%s'] * 18)})",
        (digest, kind, subject, reference, transaction_id, bap_id, provider_id, *_side(buyer), *_side(provider), now),
    )
    return digest


def _side(v: Verified | None) -> tuple[Any, ...]:
    if v is None:
        return (None,) * len(_SIDES)
    return (v.message.body, v.message.authorization, v.signer, v.key_id, v.sha256)


def agreed_order(conn: psycopg.Connection, order_id: str) -> AgreedOrder:
    """Who agreed on a registered order (what its amendments must match)."""
    row = conn.execute(
        "SELECT transaction_id, bap_id, provider_signer, provider_id, provider_body FROM ledger.agreements "
        "WHERE kind = 'order' AND subject = %s",
        (order_id,),
    ).fetchone()
    if row is None:
        raise LedgerError("agreement_missing", f"order {order_id!r} was registered without signed messages")
    return AgreedOrder(
        order_id=order_id,
        transaction_id=row[0],
        bap_id=row[1],
        bpp_id=row[2],
        provider_id=row[3],
        item_id=agreed_item_id(bytes(row[4])),
    )


def order_agreement_hash(conn: psycopg.Connection, order_id: str) -> bytes | None:
    return existing_hash(conn, "order", order_id)


def known_hashes(conn: psycopg.Connection, hashes: list[str]) -> set[str]:
    """Which of these agreement hashes (hex) the ledger holds."""
    if not hashes:
        return set()
    rows = conn.execute(
        "SELECT agreement_sha256 FROM ledger.agreements WHERE agreement_sha256 = ANY(%s)",
        ([bytes.fromhex(h) for h in hashes],),
    ).fetchall()
    return {bytes(r[0]).hex() for r in rows}


def order_agreements(conn: psycopg.Connection, order_id: str) -> dict[str, Any]:
    """The order's signed messages (base64 bytes + headers) and its amendments', for offline re-verification."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM ledger.agreements WHERE subject = %s AND kind IN ('order', 'amendment') "
        "ORDER BY kind = 'amendment', recorded_at, reference",
        (order_id,),
    ).fetchall()
    if not rows or rows[0][1] != "order":
        raise not_found(f"the signed agreement of order {order_id!r}")
    first = rows[0]
    return {
        "order_id": order_id,
        "transaction_id": first[4],
        "agreement_sha256": bytes(first[0]).hex(),
        "hash_rule": "sha256(sha256(confirm bytes) || sha256(on_confirm bytes)); amendments: the messages present",
        "confirm": _message_json(first[7:12]),
        "on_confirm": _message_json(first[12:17]),
        "recorded_at": iso(first[17]),
        "amendments": [
            {
                "reference": r[3],
                "agreement_sha256": bytes(r[0]).hex(),
                "update": _message_json(r[7:12]),
                "on_update": _message_json(r[12:17]),
                "recorded_at": iso(r[17]),
            }
            for r in rows[1:]
        ],
    }


def _message_json(side: tuple[Any, ...]) -> dict[str, Any] | None:
    body, authorization, signer, key_id, digest = side
    if body is None:
        return None
    return {
        "body_base64": base64.b64encode(bytes(body)).decode("ascii"),
        "authorization": authorization,
        "signer": signer,
        "key_id": key_id,
        "sha256": bytes(digest).hex(),
    }
