"""Signed checkpoints, inclusion proofs and offline statement verification (no database here).

A checkpoint is a signed chain head, like a Certificate Transparency signed tree head
(../shared/reference/ledger-design.md "Tamper evidence"). The ledger's Ed25519 key signs the RFC 8785
bytes of

    {"entry_count": N, "head_hash": hex, "height": H, "key_id": uuid, "links_root": hex,
     "log": "flexmarket-ledger", "time_us": t, "v": 1}

where links_root is the RFC 6962 root over the link hashes of heights 1..H (leaf data = the 32-byte
link hash). An entry's inclusion proof against a checkpoint is:

    leaf = SHA-256(0x00 ‖ canonical entry bytes)
      --entry_path (RFC 6962 audit path, leaf_index of batch_size)--> the link's merkle_root
    link_hash = SHA-256(prev_hash ‖ height (8 bytes BE) ‖ merkle_root)
      --link_path (audit path, index height−1 of tree size H)--> links_root, signed.

So anyone holding the ledger's public key can check a statement offline: every entry is in the
chain that the ledger signed, its fields are what was hashed, and the running balances add up.
What a proof cannot show is that no entry was left out of a statement; the closing balance of one
statement and the opening balance of the next, and `ledger verify` on the database, cover that.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.canonical import canonical_json
from ledger.chain import link_hash
from ledger.merkle import audit_path_from_levels, leaf_hash, levels, root_from_audit_path

LOG_NAME = "flexmarket-ledger"
STATEMENT_FORMAT = "flexmarket-ledger-statement/1"


def checkpoint_message(
    *, height: int, head_hash: bytes, links_root: bytes, entry_count: int, time_us: int, key_id: str
) -> dict[str, Any]:
    return {
        "entry_count": entry_count,
        "head_hash": head_hash.hex(),
        "height": height,
        "key_id": key_id,
        "links_root": links_root.hex(),
        "log": LOG_NAME,
        "time_us": time_us,
        "v": 1,
    }


def sign_checkpoint(private_key: Ed25519PrivateKey, message: dict[str, Any]) -> dict[str, Any]:
    """The exportable checkpoint document: message, its exact signed bytes and the signature."""
    data = canonical_json(message)
    return {
        "message": message,
        "signed_bytes_b64": base64.b64encode(data).decode(),
        "signature_b64": base64.b64encode(private_key.sign(data)).decode(),
    }


def _public_key(public_key_b64: str) -> Ed25519PublicKey:
    raw = base64.b64decode(public_key_b64, validate=True)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_checkpoint(doc: dict[str, Any], public_key_b64: str) -> tuple[bool, str]:
    """The signature covers exactly canonical_json(message) under the given key."""
    try:
        message = doc["message"]
        data = canonical_json(message)
        if doc.get("signed_bytes_b64") and base64.b64decode(doc["signed_bytes_b64"]) != data:
            return False, "signed bytes are not the canonical form of the message"
        _public_key(public_key_b64).verify(base64.b64decode(doc["signature_b64"], validate=True), data)
    except InvalidSignature:
        return False, "checkpoint signature does not verify under the given public key"
    except (KeyError, TypeError, ValueError) as exc:
        return False, f"malformed checkpoint: {exc}"
    return True, "ok"


# --- key rotation ------------------------------------------------------------------------------------
# A key hand-over (`flexmarket ledger rotate-key`) is a checkpoint message of the chain head at height H
# that also names the key in force and the key that signs every checkpoint above H:
#     {…checkpoint fields…, "public_key": old b64, "next_key_id": uuid, "next_public_key": new b64}
# signed by the old key and countersigned by the new one (`next_key_signature_b64`), so either key vouches
# for the other: a verifier holding any one of the ledger's keys can follow the hand-overs to all of them.
# A checkpoint is valid when it is signed by the key in force at its height: the first key up to and
# including the first hand-over's height, then each hand-over's next key above its height.


def handover_message(
    base: dict[str, Any], *, public_key_b64: str, next_key_id: str, next_public_key_b64: str
) -> dict[str, Any]:
    return {**base, "public_key": public_key_b64, "next_key_id": next_key_id, "next_public_key": next_public_key_b64}


def sign_handover(old: Ed25519PrivateKey, new: Ed25519PrivateKey, message: dict[str, Any]) -> dict[str, Any]:
    doc = sign_checkpoint(old, message)
    doc["next_key_signature_b64"] = base64.b64encode(new.sign(canonical_json(message))).decode()
    return doc


def verify_handover(doc: dict[str, Any]) -> tuple[bool, str]:
    """Signed by the key it hands over from, countersigned by the key it hands over to."""
    try:
        message = doc["message"]
        ok, why = verify_checkpoint(doc, message["public_key"])
        if not ok:
            return False, f"not signed by the key it hands over from: {why}"
        _public_key(message["next_public_key"]).verify(
            base64.b64decode(doc["next_key_signature_b64"], validate=True), canonical_json(message)
        )
    except InvalidSignature:
        return False, "not countersigned by the key it hands over to"
    except (KeyError, TypeError, ValueError) as exc:
        return False, f"malformed hand-over: {exc}"
    return True, "ok"


def _short(key: str | None) -> str:
    return "none" if key is None else f"{key[:12]}…"


def key_eras(handovers: Sequence[dict[str, Any]]) -> tuple[list[tuple[int, str]], list[str]]:
    """[(h, key)]: `key` is in force above height h (the first from 0), by the valid hand-overs that follow
    one another; and the problems with the others."""
    eras: list[tuple[int, str]] = []
    problems: list[str] = []
    for doc in sorted(handovers, key=lambda d: int((d.get("message") or {}).get("height", 0))):
        height = (doc.get("message") or {}).get("height")
        ok, why = verify_handover(doc)
        if not ok:
            problems.append(f"key hand-over at height {height}: {why}")
            continue
        message = doc["message"]
        if eras and message["public_key"] != eras[-1][1]:
            problems.append(
                f"key hand-over at height {height}: from key {_short(message['public_key'])}, which is not the key "
                f"in force ({_short(eras[-1][1])})"
            )
            continue
        if not eras:
            eras.append((0, str(message["public_key"])))
        eras.append((int(message["height"]), str(message["next_public_key"])))
    return eras, problems


def key_at(eras: Sequence[tuple[int, str]], height: int) -> str:
    return [key for after, key in eras if after < height][-1]


def verify_checkpoint_chain(
    docs: Sequence[dict[str, Any]], handovers: Sequence[dict[str, Any]], trusted_key_b64: str | None
) -> list[str]:
    """`ledger verify`: every checkpoint (`public_key_b64` = the key stored with it) is signed by the key in
    force at its height — the first key, then the hand-overs' — and the trusted key, if given, is one of them."""
    eras, problems = key_eras(handovers)
    if not eras and docs:
        eras = [(0, str(docs[0].get("public_key_b64")))]
    for doc in docs:
        height = int((doc.get("message") or {}).get("height", 0))
        key, stored = key_at(eras, height), doc.get("public_key_b64")
        if stored != key:
            problems.append(
                f"checkpoint at height {height}: signed by key {_short(stored)}, which no hand-over put in force "
                f"(the key in force at this height is {_short(key)})"
            )
            continue
        ok, why = verify_checkpoint(doc, key)
        if not ok:
            problems.append(f"checkpoint at height {height}: {why}")
    keys = [key for _, key in eras]
    if trusted_key_b64 is not None and keys and trusted_key_b64 not in keys:
        problems.append(
            f"checkpoints: the given public key {_short(trusted_key_b64)} was never the ledger's key (keys in force: "
            + ", ".join(_short(k) for k in keys)
            + ")"
        )
    return problems


def key_in_force_for(handovers: Sequence[dict[str, Any]], trusted_key_b64: str, height: int) -> tuple[str | None, str]:
    """Offline: the key in force at `height` by a statement's hand-overs, if they are all valid, follow one
    another and include the trusted key (otherwise None and why)."""
    eras, problems = key_eras(handovers)
    if problems:
        return None, problems[0]
    if trusted_key_b64 not in {key for _, key in eras}:
        return None, "the given public key is none of the ledger's keys named by the statement's key hand-overs"
    return key_at(eras, height), "ok"


def entry_proof(
    batch_leaf_hashes: Sequence[bytes], leaf_index: int, height: int, prev_hash: bytes, link_levels: list[list[bytes]]
) -> dict[str, Any]:
    """Inclusion proof of one entry; `link_levels` = merkle.levels over link leaf hashes 1..H."""
    return {
        "height": height,
        "leaf_index": leaf_index,
        "batch_size": len(batch_leaf_hashes),
        "entry_path": [h.hex() for h in audit_path_from_levels(levels(batch_leaf_hashes), leaf_index)],
        "prev_hash": prev_hash.hex(),
        "link_path": [h.hex() for h in audit_path_from_levels(link_levels, height - 1)],
    }


def verify_entry_proof(
    canonical: bytes, proof: dict[str, Any], checkpoint_message_: dict[str, Any]
) -> tuple[bool, str]:
    try:
        height, size = int(proof["height"]), int(checkpoint_message_["height"])
        if not 1 <= height <= size:
            return False, f"entry's link {height} is beyond the checkpoint height {size}"
        root = root_from_audit_path(
            leaf_hash(canonical),
            int(proof["leaf_index"]),
            int(proof["batch_size"]),
            [bytes.fromhex(h) for h in proof["entry_path"]],
        )
        lh = link_hash(bytes.fromhex(proof["prev_hash"]), height, root)
        links_root = root_from_audit_path(
            leaf_hash(lh), height - 1, size, [bytes.fromhex(h) for h in proof["link_path"]]
        )
    except (KeyError, TypeError, ValueError) as exc:
        return False, f"malformed proof: {exc}"
    if links_root.hex() != checkpoint_message_["links_root"]:
        return False, "proof does not lead to the checkpoint's signed links_root"
    return True, "ok"


@dataclass
class StatementCheck:
    ok: bool
    entries_checked: int
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            return f"OK: statement verified offline ({self.entries_checked} entries, signed checkpoint valid)"
        return "INVALID: " + "; ".join(self.problems[:5]) + (" …" if len(self.problems) > 5 else "")


def posted_delta(account: str | None, kind: str, debit: str, credit: str, amount: int) -> int:
    """Effect of an entry on `account`'s posted balance (credits − debits)."""
    if kind not in ("single", "post"):
        return 0
    return amount if credit == account else -amount if debit == account else 0


def verify_statement(doc: dict[str, Any], public_key_b64: str) -> StatementCheck:
    """Verify a JSON statement with nothing but the ledger's public key."""
    problems: list[str] = []
    if doc.get("format") != STATEMENT_FORMAT:
        return StatementCheck(False, 0, [f"not a {STATEMENT_FORMAT} document"])
    checkpoint = doc.get("checkpoint") or {}
    key = public_key_b64
    if doc.get("key_handovers"):  # the ledger's key was rotated: the key in force at the checkpoint's height
        try:
            height = int(checkpoint["message"]["height"])
        except (KeyError, TypeError, ValueError):
            return StatementCheck(False, 0, ["malformed checkpoint: no height"])
        in_force, why = key_in_force_for(doc["key_handovers"], public_key_b64, height)
        if in_force is None:
            return StatementCheck(False, 0, [why])
        key = in_force
    ok, why = verify_checkpoint(checkpoint, key)
    if not ok:
        return StatementCheck(False, 0, [why])
    message = checkpoint["message"]
    account = doc.get("account")
    try:
        balance = int(doc["opening_balance"])
        from_us, to_us = int(doc["from_us"]), int(doc["to_us"])
    except (KeyError, TypeError, ValueError):
        return StatementCheck(False, 0, ["statement lacks opening_balance / from_us / to_us"])
    checked = 0
    last_key: tuple[int, int, int] | None = None
    for row in doc.get("entries", []):
        rid = row.get("id")
        try:
            canonical = row["canonical"].encode("utf-8")
            hashed = json.loads(canonical)
        except (KeyError, AttributeError, ValueError):
            problems.append(f"entry {rid}: missing or unreadable canonical bytes")
            continue
        for name, key in (
            ("id", "id"),
            ("amount", "amount"),
            ("kind", "kind"),
            ("debit", "debit_account"),
            ("credit", "credit_account"),
            ("time_us", "time_us"),
            ("memo", "memo"),
            ("pending_id", "pending_id"),
        ):
            if hashed.get(name) != row.get(key):
                problems.append(f"entry {rid}: {key} {row.get(key)!r} differs from the hashed {hashed.get(name)!r}")
        if account not in (hashed.get("debit"), hashed.get("credit")):
            problems.append(f"entry {rid} does not touch account {account}")
        t = hashed.get("time_us", -1)
        if not from_us <= t < to_us:
            problems.append(f"entry {rid}: time {t} outside the statement period")
        if t > message["time_us"]:
            problems.append(f"entry {rid}: later than the checkpoint")
        ok, why = verify_entry_proof(canonical, row.get("proof") or {}, message)
        if not ok:
            problems.append(f"entry {rid}: {why}")
        order_key = (t, int(row.get("proof", {}).get("height", 0)), int(row.get("proof", {}).get("leaf_index", 0)))
        if last_key is not None and order_key <= last_key:
            problems.append(f"entry {rid}: out of order")
        last_key = order_key
        delta = posted_delta(
            account, hashed.get("kind"), hashed.get("debit"), hashed.get("credit"), int(hashed.get("amount", 0))
        )
        balance += delta
        if row.get("posted_delta") != delta or row.get("running_balance") != balance:
            problems.append(f"entry {rid}: running balance {row.get('running_balance')} should be {balance}")
        checked += 1
    if doc.get("closing_balance") != balance:
        problems.append(f"closing balance {doc.get('closing_balance')} should be {balance}")
    return StatementCheck(not problems, checked, problems)


def leaf_hashes_for(canonicals: Sequence[bytes]) -> list[bytes]:
    return [sha256(b"\x00" + c).digest() for c in canonicals]
