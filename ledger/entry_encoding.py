"""How new entries are encoded for the append (ledger/store.py): canonical bytes (RFC 8785), RFC 6962
leaf hashes and the binary array elements of APPEND_SQL's columns (ledger/pgarray.py) — computed once per
request, before the chain lock, and by the group committer even before the batch's transaction starts
(`encode_ahead`).

Invariant: what is stored and hashed is always the encoding of the entries the rules accepted. An
encoding made ahead is only a cache, used when it encodes entries EQUAL (every field) to those
(`encoding_for`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.canonical import CanonicalError
from ledger.merkle import leaf_hash
from ledger.pgarray import BinaryArray, ByteaArray, Int8Array, TextArray, bytea_elements, int8_elements, text_elements
from ledger.transfers import Entry, TransferSpec


@dataclass(frozen=True, slots=True)
class EncodedEntries:
    """One request's entries encoded once, for everything the append sends or hashes.

    `leaves` are the RFC 6962 leaf hashes of the canonical bytes; `columns` the binary array elements
    (ledger/pgarray.py) of APPEND_SQL's arrays in its order: id, ledger, debit, credit, amount, kind,
    pending, timeout, time, memo, canonical. `nulls` says whether the pending and timeout elements
    include a NULL (no other column can).
    """

    entries: tuple[Entry, ...]
    leaves: tuple[bytes, ...]
    columns: tuple[bytes, ...]
    nulls: tuple[bool, bool]


def encode_entries(entries: Sequence[Entry]) -> EncodedEntries:
    canon = [e.canonical() for e in entries]
    return EncodedEntries(
        tuple(entries),
        tuple(leaf_hash(c) for c in canon),
        (
            text_elements([e.id for e in entries]),
            text_elements([e.ledger for e in entries]),
            text_elements([e.debit_account for e in entries]),
            text_elements([e.credit_account for e in entries]),
            int8_elements([e.amount for e in entries]),
            text_elements([e.kind for e in entries]),
            text_elements([e.pending_id for e in entries]),
            int8_elements([e.timeout_us for e in entries]),
            int8_elements([e.time_us for e in entries]),
            text_elements([e.memo for e in entries]),
            bytea_elements(canon),
        ),
        (any(e.pending_id is None for e in entries), any(e.timeout_us is None for e in entries)),
    )


def encode_ahead(specs: Sequence[TransferSpec], stamp_us: int) -> EncodedEntries | None:
    """Encode the entries that a request would create if the rules accept it, or None.

    A single or pending transfer's entry is fixed by its spec and the batch's time stamp (the rules only
    judge it against the accounts and balances), so everything sent or hashed for it can be computed
    before the balance rows are locked — the group committer does it while the previous batch's COMMIT
    is in flight. This is only a cache: `append` uses it only if the request was accepted and the rules
    created entries EQUAL (every field) to these, so what is stored and hashed is always the accepted
    entries' own encoding. Requests with post, void or expire transfers (their entries depend on the
    pending transfer) or with values the rules will refuse are encoded after the rules, if at all.
    """
    entries = []
    for s in specs:
        if not (
            (s.kind == "single" or s.kind == "pending")
            and type(s.id) is str
            and type(s.ledger) is str
            and type(s.debit_account) is str
            and type(s.credit_account) is str
            and type(s.amount) is int
            and type(s.memo) is str
        ):
            return None
        entries.append(
            Entry(
                s.id,
                s.ledger,
                s.debit_account,
                s.credit_account,
                s.amount,
                s.kind,
                None,
                s.timeout_us,
                stamp_us,
                s.memo,
            )
        )
    try:
        return encode_entries(entries)
    except (CanonicalError, UnicodeEncodeError, struct.error, TypeError):
        return None  # the rules refuse such a request (or encoding it there raises the same error)


def entry_arrays(parts: Sequence[EncodedEntries]) -> dict[str, BinaryArray]:
    """APPEND_SQL's array parameters for the concatenation of `parts`, in order."""
    n = sum(len(p.entries) for p in parts)

    def col(j: int) -> bytes:
        return b"".join([p.columns[j] for p in parts])

    return {
        "id": TextArray(n, False, col(0)),
        "ledger": TextArray(n, False, col(1)),
        "debit": TextArray(n, False, col(2)),
        "credit": TextArray(n, False, col(3)),
        "amount": Int8Array(n, False, col(4)),
        "kind": TextArray(n, False, col(5)),
        "pending": TextArray(n, any(p.nulls[0] for p in parts), col(6)),
        "timeout": Int8Array(n, any(p.nulls[1] for p in parts), col(7)),
        "time": Int8Array(n, False, col(8)),
        "memo": TextArray(n, False, col(9)),
        "canonical": ByteaArray(n, col(10)),
    }


def encoding_for(entries: list[Entry], ahead: EncodedEntries | None) -> EncodedEntries:
    """Step 5 for one created request: the encoding made ahead if it encodes exactly these entries."""
    if ahead is not None and ahead.entries == tuple(entries):
        return ahead
    return encode_entries(entries)
