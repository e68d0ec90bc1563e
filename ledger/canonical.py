"""Canonical entry encoding: RFC 8785 (JSON Canonicalization Scheme) bytes of a journal entry.

The hash chain commits to these exact bytes (../shared/reference/ledger-design.md "Hash chain":
RFC 8785 JSON, integer amounts, integer-microsecond UTC times). The general encoder is the `rfc8785`
package; entries — millions of them, re-encoded by every `ledger verify` — use a specialised encoder
for their fixed shape (ASCII keys in sorted order, integers below 2**53, strings, nulls) that yields
the same bytes and is property-tested against `rfc8785.dumps` in tests/ledger/test_canonical.py.

Entry form (format version 1), keys in RFC 8785 order:
    {"amount":int, "credit":str, "debit":str, "id":str, "kind":str, "ledger":str, "memo":str,
     "pending_id":str|null, "time_us":int, "timeout_us":int|null, "v":1}
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from grid.money import MAX_SAFE_INTEGER

ENTRY_FORMAT_VERSION = 1


class CanonicalError(ValueError):
    """A value the canonical form cannot carry exactly (huge integer, lone surrogate, …)."""


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of any JSON value (checkpoints, statements, policies)."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, ValueError, TypeError) as exc:
        raise CanonicalError(str(exc)) from exc


def _int(value: int) -> str:
    if type(value) is not int or not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise CanonicalError(f"integer {value!r} is outside the exactly representable range (±2**53-1)")
    return str(value)


def encode_entry(
    *,
    id: str,
    ledger: str,
    debit: str,
    credit: str,
    amount: int,
    kind: str,
    pending_id: str | None,
    timeout_us: int | None,
    time_us: int,
    memo: str,
) -> bytes:
    """The exact bytes hashed into the Merkle tree for one entry (the append path encodes every new
    entry through here, `Entry.canonical`).

    Strict, unlike the verifier's fast path below: integers are range- and type-checked and a lone
    surrogate raises CanonicalError. Account names, ledgers and kinds repeat from entry to entry (a few
    thousand distinct values), so their quoted forms come from the bounded cache the verifier uses; ids,
    pending ids and memos are mostly unique and are quoted afresh rather than filling the cache.
    """
    get = _QUOTED.get
    text = (
        f'{{"amount":{_int(amount)},"credit":{get(credit) or _quote(credit)},"debit":{get(debit) or _quote(debit)},'
        f'"id":{_quote_uncached(id)},"kind":{get(kind) or _quote(kind)},"ledger":{get(ledger) or _quote(ledger)},'
        f'"memo":{_quote_uncached(memo)},'
        f'"pending_id":{"null" if pending_id is None else _quote_uncached(pending_id)},"time_us":{_int(time_us)},'
        f'"timeout_us":{"null" if timeout_us is None else _int(timeout_us)},"v":{ENTRY_FORMAT_VERSION}}}'
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates cannot be encoded canonically
        raise CanonicalError(f"string is not valid Unicode: {exc}") from exc


def entry_dict(
    *,
    id: str,
    ledger: str,
    debit: str,
    credit: str,
    amount: int,
    kind: str,
    pending_id: str | None,
    timeout_us: int | None,
    time_us: int,
    memo: str,
) -> dict[str, Any]:
    """The same entry as a dict (what `canonical_json` would encode to `encode_entry`'s bytes)."""
    return {
        "amount": amount,
        "credit": credit,
        "debit": debit,
        "id": id,
        "kind": kind,
        "ledger": ledger,
        "memo": memo,
        "pending_id": pending_id,
        "time_us": time_us,
        "timeout_us": timeout_us,
        "v": ENTRY_FORMAT_VERSION,
    }


# --- quoting, and the verifier's hot path ------------------------------------------------------
# A string without '"' or '\\' whose characters are all printable needs no escaping under RFC 8785
# (printable excludes every C0 control); anything else goes through json.dumps, which escapes exactly
# as RFC 8785 §3.2.2.2 does: \" \\ \b \f \n \r \t, other C0 controls as lower-case \u00xx, everything
# else verbatim (ensure_ascii=False). Both paths give the same bytes for the strings they share; the
# first is only faster. Repeating strings (account names, ledgers, kinds, memos) are quoted once and
# cached, up to a bound.
#
# `ledger verify` re-encodes millions of stored rows. Values read back from PostgreSQL are already
# valid Unicode and integers, so the re-encoding can skip validation: a tampered value that the strict
# encoder would refuse (an amount above 2**53) simply produces bytes that differ from the stored ones,
# which is exactly what verification reports. Property-tested equal to encode_entry
# (tests/ledger/test_canonical.py).
_QUOTED: dict[str, str] = {}
_QUOTED_MAX = 200_000


def _quote_uncached(value: str) -> str:
    if '"' not in value and "\\" not in value and value.isprintable():
        return f'"{value}"'
    return json.dumps(value, ensure_ascii=False)


def _quote(value: str) -> str:
    q = _QUOTED.get(value)
    if q is None:
        q = _quote_uncached(value)
        if len(_QUOTED) < _QUOTED_MAX:
            _QUOTED[value] = q
    return q


def encode_entry_row(row: tuple[Any, ...]) -> bytes:
    """encode_entry for a stored row (height, idx, id, ledger, debit, credit, amount, kind, pending_id,
    timeout_us, time_us, memo, canonical) — the verifier's fast path."""
    get = _QUOTED.get
    pending, timeout = row[8], row[9]
    return (
        f'{{"amount":{row[6]},"credit":{get(row[5]) or _quote(row[5])},"debit":{get(row[4]) or _quote(row[4])},'
        f'"id":{_quote_uncached(row[2])},"kind":{get(row[7]) or _quote(row[7])},'
        f'"ledger":{get(row[3]) or _quote(row[3])},"memo":{get(row[11]) or _quote(row[11])},'
        f'"pending_id":{"null" if pending is None else _quote_uncached(pending)},"time_us":{row[10]},'
        f'"timeout_us":{"null" if timeout is None else timeout},"v":1}}'
    ).encode("utf-8", "surrogatepass")
