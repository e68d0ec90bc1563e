"""The ledger's signing key, signed checkpoints of the chain head, the chain head itself and inclusion
proofs of entries against a checkpoint (PostgreSQL side; the formats and the offline checks are the
pure ledger/proofs.py and ledger/merkle.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from beckn.keys import KeyPair, load_or_create_keypair
from kernel import clock
from kernel.config import get_settings
from ledger.db import us
from ledger.errors import not_found
from ledger.merkle import leaf_hash, levels, root_from_leaf_hashes
from ledger.proofs import checkpoint_message, entry_proof, sign_checkpoint


def ledger_keypair(keys_dir: Path | None = None) -> KeyPair:
    return load_or_create_keypair((keys_dir or get_settings().keys_dir) / "ledger.json")


def existing_public_key_b64(keys_dir: Path | None = None) -> str | None:
    """The ledger key's public half if the key file exists (verification must not create a key)."""
    path = (keys_dir or get_settings().keys_dir) / "ledger.json"
    if not path.is_file():
        return None
    return str(json.loads(path.read_text())["signing_public_key"])


def public_key_b64(keypair: KeyPair) -> str:
    return keypair.signing_public_key_b64


def link_hashes(conn: psycopg.Connection, upto: int) -> list[bytes]:
    return [
        bytes(r[0])
        for r in conn.execute("SELECT link_hash FROM ledger.links WHERE height <= %s ORDER BY height", (upto,))
    ]


def _checkpoint_doc(row: Sequence[Any]) -> dict[str, Any]:
    message = json.loads(bytes(row[0]))
    return {
        "message": message,
        "signed_bytes_b64": base64.b64encode(bytes(row[0])).decode(),
        "signature_b64": base64.b64encode(bytes(row[1])).decode(),
        "public_key_b64": row[2],
    }


def get_checkpoint(
    conn: psycopg.Connection, height: int | None = None, *, at_least: int | None = None
) -> dict[str, Any] | None:
    if height is not None:
        q, args = "SELECT message, signature, public_key FROM ledger.checkpoints WHERE height = %s", (height,)
    else:
        q = (
            "SELECT message, signature, public_key FROM ledger.checkpoints WHERE height >= %s "
            "ORDER BY height DESC LIMIT 1"
        )
        args = (at_least or 0,)
    row = conn.execute(q, args).fetchone()
    return None if row is None else _checkpoint_doc(row)


def create_checkpoint(
    conn: psycopg.Connection,
    keypair: KeyPair | None = None,
    now: datetime | None = None,
    publish_dir: Path | None = None,
) -> dict[str, Any] | None:
    """Sign the current chain head (idempotent per height) and publish it outside the database."""
    head = conn.execute("SELECT height, link_hash FROM ledger.links ORDER BY height DESC LIMIT 1").fetchone()
    if head is None:
        return None
    height = head[0]
    existing = get_checkpoint(conn, height)
    if existing is not None:
        return existing
    keypair = keypair or ledger_keypair()
    hashes = link_hashes(conn, height)
    links_root = root_from_leaf_hashes([leaf_hash(h) for h in hashes])
    count = conn.execute(
        "SELECT coalesce(sum(entry_count), 0) FROM ledger.links WHERE height <= %s", (height,)
    ).fetchone()
    message = checkpoint_message(
        height=height,
        head_hash=bytes(head[1]),
        links_root=links_root,
        entry_count=int(count[0]) if count else 0,
        time_us=us(now or clock.now()),
        key_id=keypair.unique_key_id,
    )
    doc = sign_checkpoint(keypair.signing_private_key, message)
    conn.execute(
        "INSERT INTO ledger.checkpoints (height, head_hash, links_root, entry_count, time_us, key_id, public_key, "
        "message, signature) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (height) DO NOTHING",
        (
            height,
            bytes(head[1]),
            links_root,
            message["entry_count"],
            message["time_us"],
            keypair.unique_key_id,
            public_key_b64(keypair),
            base64.b64decode(doc["signed_bytes_b64"]),
            base64.b64decode(doc["signature_b64"]),
        ),
    )
    stored = get_checkpoint(conn, height)
    assert stored is not None
    if publish_dir is not None:
        publish_dir.mkdir(parents=True, exist_ok=True)
        (publish_dir / f"checkpoint-{height:012d}.json").write_text(json.dumps(stored, indent=2, sort_keys=True))
    return stored


def default_publish_dir() -> Path:
    return get_settings().home / "ledger" / "checkpoints"


def inclusion_proof(conn: psycopg.Connection, transfer_id: str, keypair: KeyPair | None = None) -> dict[str, Any]:
    row = conn.execute("SELECT height, idx, canonical FROM ledger.entries WHERE id = %s", (transfer_id,)).fetchone()
    if row is None:
        raise not_found(f"transfer {transfer_id!r}")
    cp = get_checkpoint(conn, at_least=row[0]) or create_checkpoint(conn, keypair)
    assert cp is not None
    proofs = entry_proofs(conn, [(row[0], row[1])], cp["message"]["height"])
    return {
        "transfer_id": transfer_id,
        "canonical": bytes(row[2]).decode(),
        "proof": proofs[(row[0], row[1])],
        "checkpoint": cp,
    }


def entry_proofs(
    conn: psycopg.Connection, positions: Sequence[tuple[int, int]], cp_height: int
) -> dict[tuple[int, int], dict[str, Any]]:
    """Inclusion proofs of the entries at (height, idx) `positions` against the checkpoint at `cp_height`."""
    heights = sorted({h for h, _ in positions})
    if not heights:
        return {}
    batch: dict[int, list[bytes]] = {h: [] for h in heights}
    for h, canonical in conn.execute(
        "SELECT height, canonical FROM ledger.entries WHERE height = ANY(%s) ORDER BY height, idx", (heights,)
    ):
        batch[h].append(leaf_hash(bytes(canonical)))
    prev = {
        r[0]: bytes(r[1])
        for r in conn.execute("SELECT height, prev_hash FROM ledger.links WHERE height = ANY(%s)", (heights,))
    }
    link_levels = levels([leaf_hash(h) for h in link_hashes(conn, cp_height)])
    return {(h, i): entry_proof(batch[h], i, h, prev[h], link_levels) for h, i in positions}


def chain_head(conn: psycopg.Connection) -> dict[str, Any]:
    row = conn.execute(
        "SELECT height, link_hash, (SELECT coalesce(sum(entry_count), 0) FROM ledger.links) "
        "FROM ledger.links ORDER BY height DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return {"height": 0, "head_hash": None, "entry_count": 0}
    return {"height": row[0], "head_hash": bytes(row[1]).hex(), "entry_count": int(row[2])}
