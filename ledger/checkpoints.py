"""The ledger's signing key, signed checkpoints of the chain head, the chain head itself and inclusion
proofs of entries against a checkpoint (PostgreSQL side; the formats and the offline checks are the
pure ledger/proofs.py and ledger/merkle.py).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from beckn.keys import KeyPair, load_or_create_keypair
from kernel import clock
from kernel.config import get_settings
from ledger.db import connection, us
from ledger.errors import LedgerError, not_found
from ledger.merkle import leaf_hash, levels, root_from_leaf_hashes
from ledger.proofs import checkpoint_message, entry_proof, handover_message, sign_checkpoint, sign_handover

T = TypeVar("T")

KEY_FILE = "ledger.json"
STALE_NEXT_KEY_S = 600.0  # a rotation's new key file older than this that never came into force is dropped
# Checkpoint creation and key rotation take this transaction-level advisory lock, so no checkpoint is signed
# with a key that a concurrent rotation is retiring.
_CHECKPOINT_LOCK = 0x666C6B6370  # "flkcp"


class LedgerKeyError(LedgerError):
    """The ledger's signing key cannot be used: missing where checkpoints exist, or not the key in force."""

    def __init__(self, message: str) -> None:
        super().__init__("ledger_key", message, status=503)

    def __str__(self) -> str:
        return self.message


def key_path(keys_dir: Path | None = None) -> Path:
    return (keys_dir or get_settings().keys_dir) / KEY_FILE


def _next_key_path(path: Path) -> Path:
    return path.with_name(path.name + ".next")  # a rotation's new key until its hand-over is committed


def _with_conn(conn: psycopg.Connection | None, fn: Callable[[psycopg.Connection], T]) -> T:
    if conn is not None:
        return fn(conn)
    with connection() as own:
        return fn(own)


def _checkpoint_count(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT CASE WHEN to_regclass('ledger.checkpoints') IS NULL THEN 0 "
        "ELSE (SELECT count(*) FROM ledger.checkpoints) END"
    ).fetchone()
    return int(row[0]) if row else 0


def key_in_force(conn: psycopg.Connection) -> tuple[str, int] | None:
    """The public key that signs the next checkpoint, and the height above which it is in force (None: no
    checkpoint yet, any key may start): the last hand-over's next key, else the first checkpoint's key."""
    row = conn.execute(
        "SELECT next_public_key, height FROM ledger.key_handovers ORDER BY height DESC LIMIT 1"
    ).fetchone()
    if row is None:
        row = conn.execute("SELECT public_key, 0 FROM ledger.checkpoints ORDER BY height LIMIT 1").fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def ledger_keypair(keys_dir: Path | None = None, *, conn: psycopg.Connection | None = None) -> KeyPair:
    """The ledger's signing key from $FLEXMARKET_HOME/keys/ledger.json. A new key is made only for a ledger
    that has no checkpoint yet: with checkpoints and no key file, LedgerKeyError names the missing file (a new
    key would sign checkpoints nobody can tie to the earlier ones; rotate with `flexmarket ledger rotate-key`).
    Asks the database (`conn`, else DATABASE_URL) only when the file is missing or a rotation was cut short."""
    path = key_path(keys_dir)
    if _next_key_path(path).is_file():
        _with_conn(conn, lambda c: _finish_rotation(c, path))
    if not path.is_file():
        count = _with_conn(conn, _checkpoint_count)
        if count:
            raise LedgerKeyError(
                f"the ledger's signing key file {path} is missing, and {count} checkpoints were signed with it: "
                "restore that file (a new key would not be the one in force); no new key was made"
            )
    return load_or_create_keypair(path)


def _finish_rotation(conn: psycopg.Connection, path: Path) -> None:
    """A rotation stopped between its commit and the key files' swap: finish it. A new key that never came
    into force is dropped only when it is stale (a rotation in progress writes it before it commits)."""
    nxt = _next_key_path(path)
    try:
        new = KeyPair.from_json(json.loads(nxt.read_text()))
    except FileNotFoundError:
        return
    in_force = key_in_force(conn)
    if in_force is not None and in_force[0] == new.signing_public_key_b64:
        _swap_in(path, new)
    elif time.time() - nxt.stat().st_mtime > STALE_NEXT_KEY_S:
        nxt.unlink(missing_ok=True)


def _swap_in(path: Path, new: KeyPair) -> None:
    """ledger.json → ledger-retired-<key id>.json, ledger.json.next → ledger.json."""
    try:
        if path.is_file():
            old = json.loads(path.read_text())
            if old.get("signing_public_key") != new.signing_public_key_b64:
                path.replace(path.with_name(f"ledger-retired-{old['unique_key_id']}.json"))
        _next_key_path(path).replace(path)
    except FileNotFoundError:  # another process finished the same swap
        pass


def existing_public_key_b64(keys_dir: Path | None = None) -> str | None:
    """The ledger key's public half if the key file exists (verification must not create a key)."""
    path = key_path(keys_dir)
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


def checkpoint_doc(message: bytes, signature: bytes, public_key: str) -> dict[str, Any]:
    """A stored checkpoint as its exportable document."""
    return {
        "message": json.loads(message),
        "signed_bytes_b64": base64.b64encode(message).decode(),
        "signature_b64": base64.b64encode(signature).decode(),
        "public_key_b64": public_key,
    }


def _checkpoint_doc(row: Sequence[Any]) -> dict[str, Any]:
    return checkpoint_doc(bytes(row[0]), bytes(row[1]), row[2])


def key_handovers(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every key hand-over (`rotate_key`), lowest first: `ledger verify` follows them, statements carry them."""
    rows = conn.execute(
        "SELECT message, signature, public_key, next_key_signature FROM ledger.key_handovers ORDER BY height"
    ).fetchall()
    return [
        {**checkpoint_doc(bytes(r[0]), bytes(r[1]), r[2]), "next_key_signature_b64": base64.b64encode(r[3]).decode()}
        for r in rows
    ]


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
    keypair = keypair or ledger_keypair(conn=conn)
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHECKPOINT_LOCK,))
    existing = get_checkpoint(conn, height)
    if existing is not None:
        return existing
    _require_in_force(conn, keypair)
    message = _head_message(conn, height, bytes(head[1]), us(now or clock.now()), keypair.unique_key_id)
    doc = sign_checkpoint(keypair.signing_private_key, message)
    conn.execute(
        "INSERT INTO ledger.checkpoints (height, head_hash, links_root, entry_count, time_us, key_id, public_key, "
        "message, signature) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (height) DO NOTHING",
        (
            height,
            bytes(head[1]),
            bytes.fromhex(message["links_root"]),
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


def _head_message(conn: psycopg.Connection, height: int, head_hash: bytes, time_us: int, key_id: str) -> dict[str, Any]:
    links_root = root_from_leaf_hashes([leaf_hash(h) for h in link_hashes(conn, height)])
    count = conn.execute(
        "SELECT coalesce(sum(entry_count), 0) FROM ledger.links WHERE height <= %s", (height,)
    ).fetchone()
    return checkpoint_message(
        height=height,
        head_hash=head_hash,
        links_root=links_root,
        entry_count=int(count[0]) if count else 0,
        time_us=time_us,
        key_id=key_id,
    )


def _require_in_force(conn: psycopg.Connection, keypair: KeyPair) -> None:
    in_force = key_in_force(conn)
    if in_force is not None and in_force[0] != keypair.signing_public_key_b64:
        raise LedgerKeyError(
            f"the signing key in {key_path()} ({keypair.signing_public_key_b64[:12]}…) is not the ledger's key in "
            f"force since height {in_force[1]} ({in_force[0][:12]}…): restore the key file; no checkpoint was signed"
        )


def rotate_key(
    conn: psycopg.Connection,
    *,
    keys_dir: Path | None = None,
    now: datetime | None = None,
    publish_dir: Path | None = None,
) -> dict[str, Any]:
    """`flexmarket ledger rotate-key`: a new signing key. The key in force signs the chain head's checkpoint
    (if it has none yet) and a hand-over of the head naming the new key, which countersigns it; the new key
    signs every checkpoint above that height. The old key file is kept as ledger-retired-<key id>.json.
    Commits its own transaction."""
    path = key_path(keys_dir)
    old = ledger_keypair(keys_dir, conn=conn)
    new = KeyPair.generate()
    nxt = _next_key_path(path)
    fd = os.open(nxt, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(new.to_json(), fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    handover = None
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHECKPOINT_LOCK,))
            _require_in_force(conn, old)
            at = now or clock.now()
            cp = create_checkpoint(conn, old, at, publish_dir) if _checkpoint_count(conn) else None
            if cp is not None:
                height = int(cp["message"]["height"])
                if conn.execute("SELECT 1 FROM ledger.key_handovers WHERE height = %s", (height,)).fetchone():
                    raise LedgerKeyError(
                        f"the key was handed over at height {height} already and the chain has not grown since: "
                        "append to the ledger before rotating again"
                    )
                base = _head_message(conn, height, bytes.fromhex(cp["message"]["head_hash"]), us(at), old.unique_key_id)
                message = handover_message(
                    base,
                    public_key_b64=old.signing_public_key_b64,
                    next_key_id=new.unique_key_id,
                    next_public_key_b64=new.signing_public_key_b64,
                )
                handover = sign_handover(old.signing_private_key, new.signing_private_key, message)
                conn.execute(
                    "INSERT INTO ledger.key_handovers (height, key_id, public_key, next_key_id, next_public_key, "
                    "message, signature, next_key_signature) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        height,
                        old.unique_key_id,
                        old.signing_public_key_b64,
                        new.unique_key_id,
                        new.signing_public_key_b64,
                        base64.b64decode(handover["signed_bytes_b64"]),
                        base64.b64decode(handover["signature_b64"]),
                        base64.b64decode(handover["next_key_signature_b64"]),
                    ),
                )
                handover["public_key_b64"] = old.signing_public_key_b64
    except BaseException:
        nxt.unlink(missing_ok=True)
        raise
    _swap_in(path, new)
    if handover is not None and publish_dir is not None:
        publish_dir.mkdir(parents=True, exist_ok=True)
        name = f"key-handover-{handover['message']['height']:012d}.json"
        (publish_dir / name).write_text(json.dumps(handover, indent=2, sort_keys=True))
    return {
        "old_key_id": old.unique_key_id,
        "old_public_key_b64": old.signing_public_key_b64,
        "new_key_id": new.unique_key_id,
        "new_public_key_b64": new.signing_public_key_b64,
        "handover": handover,
    }


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
