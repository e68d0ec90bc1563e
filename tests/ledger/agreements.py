"""Real signed Beckn messages for the ledger's tests: Ed25519 keys per participant, a confirm signed by
the BAP and the on_confirm (or on_update) the BPP platform answers with, signed over the exact bytes as
BECKN-006 says — and the key directory (`TEST_KEYS`) the ledger checks them against in ledger-only tests
(tests/ledger/conftest.py installs it in place of the registry look-up)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from beckn import envelope, signing
from ledger.agreements import RegisteredKey, SignedMessage, order_agreement
from ledger.db import in_transaction
from ledger.orders import OrderExtras, register_agreed_order
from ledger.settlement import OrderTerms
from schemas.flex import OrderSpec, OrderView, order_spec_to_order, order_view_to_order

Mutate = Callable[[dict[str, Any]], None]


@dataclass
class Party:
    """A network participant with its own Ed25519 key (BAP or BPP platform)."""

    subscriber_id: str
    participant_type: str
    unique_key_id: str = field(default_factory=lambda: f"k-{uuid.uuid4().hex[:8]}")
    private_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    valid_from: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(days=1))
    valid_until: datetime = field(default_factory=lambda: datetime.now(UTC) + timedelta(days=365))

    def registered(self) -> RegisteredKey:
        return RegisteredKey(
            subscriber_id=self.subscriber_id,
            unique_key_id=self.unique_key_id,
            participant_type=self.participant_type,
            public_key=self.private_key.public_key(),
            valid_from=self.valid_from,
            valid_until=self.valid_until,
        )

    def sign(self, body: bytes, created: int | None = None) -> SignedMessage:
        header = signing.authorization_header(
            body, self.private_key, self.subscriber_id, self.unique_key_id, created=created
        )
        return SignedMessage(body=body, authorization=header)


class FixedKeys:
    """A key directory holding exactly the parties added to it."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], RegisteredKey] = {}

    def add(self, party: Party) -> Party:
        self._keys[(party.subscriber_id, party.unique_key_id)] = party.registered()
        return party

    def key(self, subscriber_id: str, unique_key_id: str) -> RegisteredKey | None:
        return self._keys.get((subscriber_id, unique_key_id))


TEST_KEYS = FixedKeys()
_PARTIES: dict[tuple[str, str], Party] = {}


def party(subscriber_id: str, participant_type: str = "BAP") -> Party:
    """The one registered party of this id and type (made on first use)."""
    key = (subscriber_id, participant_type)
    if key not in _PARTIES:
        _PARTIES[key] = TEST_KEYS.add(Party(subscriber_id, participant_type))
    return _PARTIES[key]


PLATFORM = "bpp-platform.test"


@dataclass(frozen=True, kw_only=True)
class Deal:
    """What the two parties agree on."""

    order_id: str
    provider_id: str
    meter_id: str
    window_start: datetime
    window_end: datetime
    power_kw: float
    price_gbp_per_mwh: float
    settlement_method: str = "P415"
    confirmed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    transaction_id: str = field(default_factory=lambda: f"txn-{uuid.uuid4().hex[:10]}")
    message_id: str = field(default_factory=lambda: f"msg-{uuid.uuid4().hex[:10]}")

    @property
    def item_id(self) -> str:
        return f"{self.provider_id}-item"

    def spec(self, *, with_id: bool) -> OrderSpec:
        return OrderSpec(
            provider_id=self.provider_id,
            item_id=self.item_id,
            power_kw=self.power_kw,
            window_start=self.window_start,
            window_end=self.window_end,
            meter_id=self.meter_id.removeprefix("der://"),
            settlement_method=self.settlement_method,
            order_id=self.order_id if with_id else None,
        )


def _context(action: str, deal: Deal, bap: str, bpp: str, message_id: str) -> dict[str, Any]:
    return envelope.context(
        action,
        bap_id=bap,
        bap_uri=f"https://{bap}/beckn",
        transaction_id=deal.transaction_id,
        city_code="GB-R13",
        country_code="GBR",
        bpp_id=bpp,
        bpp_uri=f"https://{bpp}/beckn",
        message_id=message_id,
    )


def _bytes(payload: dict[str, Any], mutate: Mutate | None) -> bytes:
    if mutate is not None:
        mutate(payload)
    return envelope.dumps(payload)


def confirm_message(deal: Deal, bap: Party, *, bpp: str = PLATFORM, mutate: Mutate | None = None) -> SignedMessage:
    """The buyer's confirm, signed by `bap` (`mutate` changes the payload before it is signed)."""
    payload = {
        "context": _context("confirm", deal, bap.subscriber_id, bpp, deal.message_id),
        "message": {"order": order_spec_to_order(deal.spec(with_id=False)).dump()},
    }
    return bap.sign(_bytes(payload, mutate))


def answer_message(
    deal: Deal,
    bpp: Party,
    *,
    action: str = "on_confirm",
    bap: str,
    message_id: str | None = None,
    state: str = "ACCEPTED",
    mutate: Mutate | None = None,
) -> SignedMessage:
    """The platform's signed on_confirm (or on_update) accepting `deal`."""
    hours = (deal.window_end - deal.window_start).total_seconds() / 3600
    view = OrderView(
        spec=deal.spec(with_id=True),
        state=state,
        price_gbp_per_mwh=deal.price_gbp_per_mwh,
        quote_gbp=deal.power_kw * hours / 1000 * deal.price_gbp_per_mwh,
        updated_at=deal.confirmed_at,
    )
    payload = {
        "context": _context(action, deal, bap, bpp.subscriber_id, message_id or deal.message_id),
        "message": {"order": order_view_to_order(view).dump()},
    }
    return bpp.sign(_bytes(payload, mutate))


def signed_pair(
    deal: Deal,
    bap: Party,
    bpp: Party | None = None,
    *,
    mutate_confirm: Mutate | None = None,
    mutate_on_confirm: Mutate | None = None,
) -> tuple[SignedMessage, SignedMessage]:
    """The confirm `bap` signed and the on_confirm `bpp` (default: the test platform) answered."""
    bpp = bpp or party(PLATFORM, "BPP")
    confirm = confirm_message(deal, bap, bpp=bpp.subscriber_id, mutate=mutate_confirm)
    on_confirm = answer_message(deal, bpp, bap=bap.subscriber_id, mutate=mutate_on_confirm)
    return confirm, on_confirm


def wire(message: SignedMessage) -> dict[str, str]:
    """A signed message as the ledger's API takes it."""
    return {"body_base64": base64.b64encode(message.body).decode("ascii"), "authorization": message.authorization}


def order_request(
    confirm: SignedMessage, on_confirm: SignedMessage, *, supplier_id: str, **extra: Any
) -> dict[str, Any]:
    """The body of POST /api/v1/orders."""
    return {"confirm": wire(confirm), "on_confirm": wire(on_confirm), "supplier_id": supplier_id, **extra}


def token_confirm(
    bap: Party, *, provider_id: str, series_id: str, tokens: int, price_gbp: str, mutate: Mutate | None = None
) -> SignedMessage:
    """The buyer's signed confirm for a token purchase: one item (the series), its count and the price."""
    payload = {
        "context": envelope.context(
            "confirm",
            bap_id=bap.subscriber_id,
            bap_uri=f"https://{bap.subscriber_id}/beckn",
            transaction_id=f"txn-{uuid.uuid4().hex[:10]}",
            city_code="GB-R13",
            country_code="GBR",
            bpp_id=PLATFORM,
            bpp_uri=f"https://{PLATFORM}/beckn",
        ),
        "message": {
            "order": {
                "provider": {"id": provider_id},
                "items": [{"id": series_id, "quantity": {"selected": {"count": tokens}}}],
                "quote": {"price": {"currency": "GBP", "value": price_gbp}},
            }
        },
    }
    return bap.sign(_bytes(payload, mutate))


# -- registering test orders as the BAP does: with both signed messages -----------------------------

_SIGNED: dict[tuple[OrderTerms, str], tuple[SignedMessage, SignedMessage]] = {}


def deal_for(terms: OrderTerms, transaction_id: str) -> Deal:
    return Deal(
        order_id=terms.order_id,
        provider_id=terms.provider_id,
        meter_id=terms.meter_id,
        window_start=terms.window_start,
        window_end=terms.window_end,
        power_kw=terms.contracted_w / 1000,
        price_gbp_per_mwh=terms.price_millipence_per_mwh / 100_000,
        settlement_method=terms.settlement_method,
        confirmed_at=terms.confirmed_at,
        transaction_id=transaction_id,
    )


def signed_for(terms: OrderTerms, transaction_id: str | None = None) -> tuple[SignedMessage, SignedMessage]:
    """The messages that make the order of `terms` — the same bytes on every call, as a BAP re-sends them."""
    txn = transaction_id or f"txn-{terms.order_id}"
    key = (terms, txn)
    if key not in _SIGNED:
        _SIGNED[key] = signed_pair(deal_for(terms, txn), party(terms.bap_id))
    return _SIGNED[key]


def extras_for(terms: OrderTerms) -> OrderExtras:
    return OrderExtras(
        supplier_id=terms.supplier_id,
        availability_price_millipence_per_mw_h=terms.availability_price_millipence_per_mw_h,
        resource_type=terms.resource_type,
        policy_version=terms.policy_version,
    )


def register_signed(
    conn: psycopg.Connection, terms: OrderTerms, now: datetime, transaction_id: str | None = None
) -> dict[str, Any]:
    """Register the order of `terms` through the ledger's use case, with real signed messages."""
    agreement = order_agreement(
        *signed_for(terms, transaction_id), TEST_KEYS, bap_id=terms.bap_id, now=datetime.now(UTC)
    )
    return cast(
        dict[str, Any],
        in_transaction(conn, lambda c: register_agreed_order(c, agreement, extras_for(terms), now)),
    )


def signed_request(terms: OrderTerms, transaction_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """The body of POST /api/v1/orders for the order of `terms` (extras from the terms unless given)."""
    avail = terms.availability_price_millipence_per_mw_h
    fields: dict[str, Any] = {
        "resource_type": terms.resource_type,
        "policy_version": terms.policy_version,
        **({"availability_price_gbp_per_mw_h": str(avail / 100_000)} if avail is not None else {}),
        **extra,
    }
    return order_request(*signed_for(terms, transaction_id), supplier_id=terms.supplier_id, **fields)
