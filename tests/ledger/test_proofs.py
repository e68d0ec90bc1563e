"""Signed checkpoints and inclusion proofs, verifiable with nothing but the public key."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.chain import link_hash
from ledger.merkle import leaf_hash, levels, root
from ledger.proofs import (
    checkpoint_message,
    entry_proof,
    sign_checkpoint,
    verify_checkpoint,
    verify_entry_proof,
)


def pub(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def test_checkpoint_signature() -> None:
    key = Ed25519PrivateKey.generate()
    msg = checkpoint_message(
        height=3, head_hash=b"\x01" * 32, links_root=b"\x02" * 32, entry_count=9, time_us=123, key_id="k"
    )
    doc = sign_checkpoint(key, msg)
    assert verify_checkpoint(doc, pub(key))[0]
    assert not verify_checkpoint(doc, pub(Ed25519PrivateKey.generate()))[0]
    forged = {**doc, "message": {**msg, "height": 4}}
    assert not verify_checkpoint(forged, pub(key))[0]


def test_entry_proof_through_batch_link_and_links_tree() -> None:
    # three links; prove every entry of every link against the head
    batches = [[b"a", b"b", b"c"], [b"d"], [b"e", b"f"]]
    prev = bytes(32)
    link_hashes, prevs = [], []
    for h, batch in enumerate(batches, start=1):
        prevs.append(prev)
        prev = link_hash(prev, h, root(batch))
        link_hashes.append(prev)
    lv = levels([leaf_hash(x) for x in link_hashes])
    cp = {"height": 3, "links_root": lv[-1][0].hex()}
    for h, batch in enumerate(batches, start=1):
        for i, data in enumerate(batch):
            proof = entry_proof([leaf_hash(x) for x in batch], i, h, prevs[h - 1], lv)
            assert verify_entry_proof(data, proof, cp) == (True, "ok")
            assert not verify_entry_proof(data + b"!", proof, cp)[0]
            assert not verify_entry_proof(data, {**proof, "prev_hash": "00" * 32}, cp)[0] or h == 1
            assert not verify_entry_proof(data, proof, {**cp, "links_root": "11" * 32})[0]
    assert not verify_entry_proof(b"a", {"garbage": 1}, cp)[0]
