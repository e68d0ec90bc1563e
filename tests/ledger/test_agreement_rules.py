"""ledger/agreements.py (pure): what an attacker can and cannot make the ledger believe was agreed."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.agreements import (
    SignedMessage,
    TokenSale,
    agreement_in_memo,
    agreement_sha256,
    check_token_consent,
    order_agreement,
    verify_message,
    with_agreement,
)
from ledger.errors import LedgerError
from tests.ledger.agreements import (
    PLATFORM,
    Deal,
    FixedKeys,
    Party,
    answer_message,
    confirm_message,
    signed_pair,
    token_confirm,
)

KEYS = FixedKeys()
NOW = datetime.now(UTC) + timedelta(days=1)  # the ledger's clock: after every signature the tests make
BAP = KEYS.add(Party("bap.rules.test", "BAP"))
OTHER_BAP = KEYS.add(Party("other-bap.rules.test", "BAP"))
BPP = KEYS.add(Party(PLATFORM, "BPP"))
ROGUE = KEYS.add(Party("rogue-platform.test", "BPP"))


def deal(**over: Any) -> Deal:
    start = (datetime.now(UTC) + timedelta(days=1)).replace(hour=17, minute=0, second=0, microsecond=0)
    base = Deal(
        order_id=f"o-{uuid.uuid4().hex[:8]}",
        provider_id="dc-rules",
        meter_id="MTR-RULES",
        window_start=start,
        window_end=start + timedelta(hours=1),
        power_kw=250.5,
        price_gbp_per_mwh=312.25,
    )
    return replace(base, **over)


def refused(
    code: str, confirm: SignedMessage, on_confirm: SignedMessage, bap_id: str | None = BAP.subscriber_id
) -> str:
    with pytest.raises(LedgerError) as exc:
        order_agreement(confirm, on_confirm, KEYS, bap_id=bap_id, now=NOW)
    assert exc.value.code == code, exc.value.message
    return exc.value.message


def flipped(m: SignedMessage, index: int, xor: int = 0x01) -> SignedMessage:
    body = bytearray(m.body)
    body[index % len(body)] ^= xor
    return replace(m, body=bytes(body))


def test_terms_are_those_of_the_signed_on_confirm() -> None:
    d = deal()
    agreement = order_agreement(*signed_pair(d, BAP, BPP), KEYS, bap_id=BAP.subscriber_id, now=NOW)
    t = agreement.terms
    assert (t.order_id, t.provider_id, t.bap_id, t.bpp_id, t.meter_id) == (
        d.order_id,
        "dc-rules",
        BAP.subscriber_id,
        PLATFORM,
        "MTR-RULES",
    )
    assert (t.window_start, t.window_end, t.contracted_w) == (d.window_start, d.window_end, 250_500)
    assert t.price_millipence_per_mwh == 31_225_000 and t.settlement_method == "P415"
    assert t.transaction_id == d.transaction_id and t.confirmed_at == d.confirmed_at.astimezone(UTC)
    assert agreement.sha256 == agreement_sha256(agreement.confirm.sha256, agreement.on_confirm.sha256)


def test_an_altered_byte_is_refused() -> None:
    confirm, on_confirm = signed_pair(deal(), BAP, BPP)
    altered = SignedMessage(
        body=on_confirm.body.replace(b'"value":"250.5"', b'"value":"950.5"'), authorization=on_confirm.authorization
    )
    assert altered.body != on_confirm.body
    assert "on_confirm" in refused("signature_invalid", confirm, altered)
    assert "confirm" in refused("signature_invalid", flipped(confirm, 40), on_confirm)


@settings(max_examples=60, deadline=None)
@given(index=st.integers(min_value=0), xor=st.integers(min_value=1, max_value=255), which=st.booleans())
def test_no_single_byte_change_anywhere_is_accepted(index: int, xor: int, which: bool) -> None:
    confirm, on_confirm = PAIR
    if which:
        on_confirm = flipped(on_confirm, index, xor)
    else:
        confirm = flipped(confirm, index, xor)
    with pytest.raises(LedgerError):
        order_agreement(confirm, on_confirm, KEYS, bap_id=BAP.subscriber_id, now=NOW)


PAIR = signed_pair(deal(), BAP, BPP)


def test_a_signature_by_another_key_under_the_registered_key_id_is_refused() -> None:
    d = deal()
    confirm, _ = signed_pair(d, BAP, BPP)
    impostor = Party(PLATFORM, "BPP", unique_key_id=BPP.unique_key_id)  # same ids, its own private key
    forged = answer_message(d, impostor, bap=BAP.subscriber_id)
    assert "does not match" in refused("signature_invalid", confirm, forged)


def test_an_unregistered_key_and_a_key_outside_its_validity_are_refused() -> None:
    d = deal()
    confirm, _ = signed_pair(d, BAP, BPP)
    unknown = Party(PLATFORM, "BPP")  # a key the registry never held
    refused("key_unknown", confirm, answer_message(d, unknown, bap=BAP.subscriber_id))
    created = int((BPP.valid_from - timedelta(hours=1)).timestamp())
    early = answer_message(d, BPP, bap=BAP.subscriber_id)
    early = BPP.sign(early.body, created=created)
    assert "was not valid" in refused("key_not_valid", confirm, early)
    future = BPP.sign(early.body, created=int((NOW + timedelta(minutes=1)).timestamp()))
    assert "in the future" in refused("signature_invalid", confirm, future)
    absurd = replace(future, authorization=future.authorization.replace('created="', 'created="' + "9" * 20, 1))
    assert "created" in refused("signature_invalid", confirm, absurd)


def test_the_on_confirm_must_be_signed_by_the_platform_the_confirm_went_to() -> None:
    d = deal()
    confirm = confirm_message(d, BAP, bpp=PLATFORM)
    rogue = answer_message(d, ROGUE, bap=BAP.subscriber_id)  # a BPP the buyer never addressed
    refused("signer_mismatch", confirm, rogue)
    # nor may a BAP sign the provider's side
    as_bap = answer_message(d, OTHER_BAP, bap=BAP.subscriber_id)
    refused("signer_mismatch", confirm, as_bap)


def test_a_confirm_signed_by_another_bap_is_refused() -> None:
    confirm, on_confirm = signed_pair(deal(), OTHER_BAP, BPP)
    assert "not by" in refused("signer_mismatch", confirm, on_confirm)  # the caller's key is BAP's
    order_agreement(confirm, on_confirm, KEYS, bap_id=None, now=NOW)  # an admin key: whoever signed


def test_confirm_and_on_confirm_must_be_one_exchange() -> None:
    d = deal()
    confirm = confirm_message(d, BAP)
    other = replace(d, transaction_id="txn-other")
    refused("terms_mismatch", confirm, answer_message(other, BPP, bap=BAP.subscriber_id))
    refused("terms_mismatch", confirm, answer_message(d, BPP, bap=BAP.subscriber_id, message_id="msg-other"))
    moved = replace(d, provider_id="dc-elsewhere")
    refused("terms_mismatch", confirm, answer_message(moved, BPP, bap=BAP.subscriber_id))
    refused("terms_mismatch", confirm, answer_message(d, BPP, bap=BAP.subscriber_id, state="CREATED"))


def test_terms_finer_than_the_ledger_keeps_are_refused_not_rounded() -> None:
    d = deal()
    confirm = confirm_message(d, BAP)

    def kw(payload: dict[str, Any]) -> None:
        payload["message"]["order"]["items"][0]["quantity"]["selected"]["measure"]["value"] = "1.2345"

    message = refused("quantity_invalid", confirm, answer_message(d, BPP, bap=BAP.subscriber_id, mutate=kw))
    assert "quantity.selected.measure.value" in message


def test_a_signed_message_of_the_wrong_action_is_refused() -> None:
    d = deal()
    confirm = confirm_message(d, BAP)
    with pytest.raises(LedgerError) as exc:
        verify_message(confirm, KEYS, field="on_confirm", action="on_confirm", participant_type="BAP", now=NOW)
    assert exc.value.code == "message_invalid" and "context.action" in exc.value.message
    with pytest.raises(LedgerError) as exc:
        verify_message(
            SignedMessage(body=confirm.body, authorization="Bearer x"),
            KEYS,
            field="confirm",
            action="confirm",
            participant_type="BAP",
            now=NOW,
        )
    assert exc.value.code == "signature_invalid"


SALE = TokenSale(
    series_id="dc-rules-w49", seller_id="dc-rules", buyer_id=BAP.subscriber_id, tokens=4, price_pence=120_000
)


def consent(**over: Any) -> Any:
    args = {"provider_id": "dc-rules", "series_id": "dc-rules-w49", "tokens": 4, "price_gbp": "1200.00", **over}
    m = token_confirm(BAP, **args)
    return verify_message(m, KEYS, field="confirm", action="confirm", participant_type="BAP", now=NOW)


def test_token_consent_covers_exactly_the_sale() -> None:
    check_token_consent(consent(), SALE)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tokens": 5}, "count"),
        ({"price_gbp": "1199.99"}, "price"),
        ({"series_id": "dc-rules-w50"}, "items[0].id"),
        ({"provider_id": "dc-other"}, "provider.id"),
    ]
    for over, wrong in cases:
        with pytest.raises(LedgerError) as exc:
            check_token_consent(consent(**over), SALE)
        assert exc.value.code == "terms_mismatch" and wrong in exc.value.message
    with pytest.raises(LedgerError) as exc:
        check_token_consent(consent(), replace(SALE, buyer_id=OTHER_BAP.subscriber_id))
    assert exc.value.code == "signer_mismatch"


@given(memo=st.text(max_size=200), digest=st.binary(min_size=32, max_size=32))
def test_the_memo_tag_round_trips(memo: str, digest: bytes) -> None:
    assert agreement_in_memo(with_agreement(memo, digest)) == digest.hex()
    assert with_agreement(memo, None) == memo


def test_agreement_hash_is_over_the_message_hashes() -> None:
    a, b = bytes(32), bytes([1]) * 32
    assert agreement_sha256(a, b) != agreement_sha256(b, a)
    assert agreement_sha256(None, b) == agreement_sha256(b)
    with pytest.raises(ValueError):
        agreement_sha256(None, None)
