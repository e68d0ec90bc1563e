"""The fast entry encoder must produce exactly RFC 8785 bytes (checked against the rfc8785 package)."""

from __future__ import annotations

import json

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from grid.money import MAX_SAFE_INTEGER
from ledger.canonical import CanonicalError, canonical_json, encode_entry, encode_entry_row, entry_dict

text = st.text(max_size=40)  # any Unicode scalar values, including controls, quotes, backslashes, emoji
safe_int = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)


@given(
    id=text,
    ledger=text,
    debit=text,
    credit=text,
    amount=safe_int,
    kind=text,
    pending_id=st.none() | text,
    timeout_us=st.none() | safe_int,
    time_us=safe_int,
    memo=text,
)
def test_entry_encoder_matches_rfc8785(**fields: object) -> None:
    assert encode_entry(**fields) == rfc8785.dumps(entry_dict(**fields))  # type: ignore[arg-type]


def test_encoding_is_valid_json_with_sorted_keys() -> None:
    raw = encode_entry(
        id="t1",
        ledger="GBP",
        debit="a",
        credit="b",
        amount=5,
        kind="single",
        pending_id=None,
        timeout_us=None,
        time_us=1,
        memo='quote " and \\ and \n and é',
    )
    doc = json.loads(raw)
    assert list(doc) == sorted(doc)
    assert doc["memo"] == 'quote " and \\ and \n and é'
    assert b"\\u" not in raw  # é stays UTF-8, newline uses the short escape


@pytest.mark.parametrize("amount", [MAX_SAFE_INTEGER + 1, -(MAX_SAFE_INTEGER + 1), 2**64])
def test_integers_beyond_2_53_are_refused(amount: int) -> None:
    with pytest.raises(CanonicalError):
        encode_entry(
            id="t",
            ledger="GBP",
            debit="a",
            credit="b",
            amount=amount,
            kind="single",
            pending_id=None,
            timeout_us=None,
            time_us=1,
            memo="",
        )


def test_bool_is_not_an_integer() -> None:
    with pytest.raises(CanonicalError):
        encode_entry(
            id="t",
            ledger="GBP",
            debit="a",
            credit="b",
            amount=True,
            kind="single",  # type: ignore[arg-type]
            pending_id=None,
            timeout_us=None,
            time_us=1,
            memo="",
        )


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(CanonicalError):
        encode_entry(
            id="t",
            ledger="GBP",
            debit="a",
            credit="b",
            amount=1,
            kind="single",
            pending_id=None,
            timeout_us=None,
            time_us=1,
            memo="\ud800",
        )


def test_general_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "x"]}) == b'{"a":[true,null,"x"],"b":1}'


@given(
    id=text,
    ledger=text,
    debit=text,
    credit=text,
    amount=safe_int,
    kind=text,
    pending_id=st.none() | text,
    timeout_us=st.none() | safe_int,
    time_us=safe_int,
    memo=text,
)
def test_verifier_fast_path_encodes_identically(**f: object) -> None:
    row = (
        1,
        0,
        f["id"],
        f["ledger"],
        f["debit"],
        f["credit"],
        f["amount"],
        f["kind"],
        f["pending_id"],
        f["timeout_us"],
        f["time_us"],
        f["memo"],
        b"",
    )
    assert encode_entry_row(row) == encode_entry(**f)  # type: ignore[arg-type]
