"""Proof of what was agreed (pure: plain data in, plain data out; no database, network or clock).

The ledger registers an order only with the two signed Beckn messages that make it: the buyer's
`confirm` (the exact bytes its BAP sent, with the BECKN-006 Authorization header it signed) and the
provider's `on_confirm` (the exact bytes the BAP received, with its header). This module

- checks one signed message (`verify_message`): the header parses, the signer's key is in the key
  directory (the registry), was valid at the signature's `created` time and has the expected participant
  type, and the Ed25519 signature covers the exact bytes;
- derives an order's terms from the signed on_confirm and checks it answers the signed confirm
  (`order_terms`), an amendment's from a signed on_update (`amendment_terms`), and a token sale's consent
  from the buyer's signed confirm (`check_token_consent`);
- hashes what was agreed (`agreement_sha256`) and tags ledger memos with it (`with_agreement`,
  `agreement_in_memo`), so every entry of the order names the messages both parties signed.

Every refusal is a LedgerError whose message names the message and field it is about.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from beckn import signing
from ledger.errors import LedgerError
from schemas.core import Order
from schemas.flex import FlexFormatError, OrderSpec, order_state, order_to_spec
from schemas.limits import check_text

MAX_MESSAGE_BYTES = 256 * 1024  # one Beckn order message; the request carrying two stays under MAX_BODY_BYTES
MAX_AUTHORIZATION_CHARS = 1024
ACCEPTED = "ACCEPTED"
MAX_ID_CHARS = 200  # ids the ledger keeps (its API's Text)
CLOCK_SKEW = timedelta(seconds=5)  # as beckn/signing.py verify()


# -- signed messages and the key directory ---------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SignedMessage:
    """A Beckn message as it travelled: its exact bytes and the BECKN-006 Authorization header."""

    body: bytes
    authorization: str

    @classmethod
    def from_base64(cls, body_base64: str, authorization: str, *, field: str) -> SignedMessage:
        try:
            body = base64.b64decode(body_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise LedgerError("message_invalid", f"{field}.body_base64: is not base64", status=400) from exc
        if not body or len(body) > MAX_MESSAGE_BYTES:
            raise LedgerError("message_invalid", f"{field}.body_base64: 1 to {MAX_MESSAGE_BYTES} bytes", status=400)
        if len(authorization) > MAX_AUTHORIZATION_CHARS:
            raise LedgerError("message_invalid", f"{field}.authorization: too long", status=400)
        return cls(body=body, authorization=authorization)

    def sha256(self) -> bytes:
        return hashlib.sha256(self.body).digest()

    def to_json(self) -> dict[str, str]:
        return {"body_base64": base64.b64encode(self.body).decode("ascii"), "authorization": self.authorization}


@dataclass(frozen=True, kw_only=True)
class RegisteredKey:
    """A participant's signing key as the registry holds it."""

    subscriber_id: str
    unique_key_id: str
    participant_type: str  # BAP | BPP | BG
    public_key: Ed25519PublicKey
    valid_from: datetime | None
    valid_until: datetime | None

    def valid_at(self, instant: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= instant) and (
            self.valid_until is None or instant <= self.valid_until
        )


class KeyDirectory(Protocol):
    """Where signers' keys are looked up: the registry in production (ledger/keydir.py), a fixed set in tests."""

    def key(self, subscriber_id: str, unique_key_id: str) -> RegisteredKey | None: ...


@dataclass(frozen=True, kw_only=True)
class Verified:
    """A signed message whose signature checked out, with who signed it and what it says."""

    message: SignedMessage
    field: str  # the request field it came in (named in refusals)
    signer: str
    key_id: str
    signed_at: datetime
    sha256: bytes
    context: dict[str, Any]
    payload: dict[str, Any]


def verify_message(
    message: SignedMessage, keys: KeyDirectory, *, field: str, action: str, participant_type: str, now: datetime
) -> Verified:
    """The message's signature, checked against the signer's registered key valid at `created`, which may
    not be later than `now` (transport time) beyond the clock skew BECKN-006 allows."""
    try:
        params = signing.parse_authorization(message.authorization)
    except signing.SignatureError as exc:
        raise LedgerError("signature_invalid", f"{field}.authorization: {exc}") from exc
    key = keys.key(params.subscriber_id, params.unique_key_id)
    if key is None:
        raise LedgerError(
            "key_unknown",
            f"{field}.authorization: the registry holds no key {params.unique_key_id!r} for {params.subscriber_id!r}",
        )
    try:
        signed_at = datetime.fromtimestamp(params.created, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise LedgerError("signature_invalid", f"{field}.authorization: created is not a time") from exc
    if signed_at > now + CLOCK_SKEW:
        raise LedgerError(
            "signature_invalid", f"{field}.authorization: created {signed_at.isoformat()} is in the future"
        )
    if not key.valid_at(signed_at):
        raise LedgerError(
            "key_not_valid",
            f"{field}.authorization: key {params.unique_key_id!r} of {params.subscriber_id!r} "
            f"was not valid at the signature's created time {signed_at.isoformat()}",
        )
    if key.participant_type != participant_type:
        raise LedgerError(
            "signer_mismatch",
            f"{field}.authorization: {params.subscriber_id!r} is a {key.participant_type or 'unknown'} "
            f"participant; a {action} must be signed by a {participant_type}",
        )
    try:  # the signature as of its own created time: the ledger checks it long after it expired
        signing.verify(params, message.body, key.public_key, now=params.created)
    except signing.SignatureError as exc:
        raise LedgerError("signature_invalid", f"{field}: {exc}") from exc
    payload = _json_object(message.body, field)
    context = payload.get("context")
    if not isinstance(context, dict) or not isinstance(payload.get("message"), dict):
        raise LedgerError("message_invalid", f"{field}: a Beckn message needs a context and a message", status=400)
    if context.get("action") != action:
        raise LedgerError("message_invalid", f"{field}.context.action: must be {action!r}", status=400)
    return Verified(
        message=message,
        field=field,
        signer=params.subscriber_id,
        key_id=params.unique_key_id,
        signed_at=signed_at,
        sha256=message.sha256(),
        context=context,
        payload=payload,
    )


def _json_object(body: bytes, field: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LedgerError("message_invalid", f"{field}: the signed bytes are not JSON", status=400) from exc
    if not isinstance(data, dict):
        raise LedgerError("message_invalid", f"{field}: the signed bytes are not a JSON object", status=400)
    return data


def _order(v: Verified) -> Order:
    try:
        return Order.model_validate(v.payload["message"].get("order"))
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else ""
        raise LedgerError(
            "message_invalid", f"{v.field}.message.order.{where}: {exc.errors()[0]['msg']}", status=400
        ) from exc


def _spec(v: Verified, order: Order) -> OrderSpec:
    try:
        return order_to_spec(order, f"{v.field}.message.order")
    except FlexFormatError as exc:
        raise LedgerError("message_invalid", str(exc), status=400) from exc  # "<path>: <reason>"


def _require_signer(v: Verified, context_key: str, expected: str | None = None) -> str:
    """The signer is the participant the message's context names (and `expected`, when given)."""
    named = v.context.get(context_key)
    if v.signer != named:
        raise LedgerError(
            "signer_mismatch", f"{v.field}: signed by {v.signer!r}, but context.{context_key} is {named!r}"
        )
    if expected is not None and v.signer != expected:
        raise LedgerError("signer_mismatch", f"{v.field}: signed by {v.signer!r}, not by {expected!r}")
    return v.signer


def _same(what: str, a: object, b: object) -> None:
    if a != b:
        raise LedgerError("terms_mismatch", f"{what}: {a!r} in the confirm, {b!r} in the answer")


# -- orders ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AgreedTerms:
    """An order's terms exactly as the provider's signed on_confirm states them."""

    order_id: str
    transaction_id: str
    provider_id: str
    bap_id: str
    bpp_id: str
    item_id: str
    meter_id: str
    window_start: datetime
    window_end: datetime
    contracted_w: int
    price_millipence_per_mwh: int
    settlement_method: str
    confirmed_at: datetime


@dataclass(frozen=True, kw_only=True)
class OrderAgreement:
    """Both signed messages of an order and the terms derived from them."""

    confirm: Verified
    on_confirm: Verified
    terms: AgreedTerms

    @property
    def sha256(self) -> bytes:
        return agreement_sha256(self.confirm.sha256, self.on_confirm.sha256)


def order_agreement(
    confirm: SignedMessage, on_confirm: SignedMessage, keys: KeyDirectory, *, bap_id: str | None, now: datetime
) -> OrderAgreement:
    """Verify the buyer's confirm and the provider's on_confirm and derive the order they agree on;
    `bap_id` is the BAP the caller's ledger key belongs to (None: an admin key, any BAP)."""
    c = verify_message(confirm, keys, field="confirm", action="confirm", participant_type="BAP", now=now)
    oc = verify_message(on_confirm, keys, field="on_confirm", action="on_confirm", participant_type="BPP", now=now)
    return OrderAgreement(confirm=c, on_confirm=oc, terms=order_terms(c, oc, bap_id=bap_id))


def order_terms(confirm: Verified, on_confirm: Verified, *, bap_id: str | None) -> AgreedTerms:
    """The terms the provider accepted in `on_confirm`, answering the buyer's `confirm` signed by `bap_id`.

    The confirm's signer is the BAP (`bap_id`, the ledger key's participant); the on_confirm's signer is
    the BPP platform the confirm was addressed to (context.bpp_id). Both share the transaction, the
    message id (a Beckn callback answers its request under the same id), the provider and the item, and
    the order id when the confirm names one."""
    buyer = _require_signer(confirm, "bap_id", bap_id)
    platform = _require_signer(on_confirm, "bpp_id", confirm.context.get("bpp_id"))
    _same("context.bap_id", buyer, on_confirm.context.get("bap_id"))
    for key in ("transaction_id", "message_id"):
        _same(f"context.{key}", confirm.context.get(key), on_confirm.context.get(key))
    if on_confirm.payload.get("error"):
        raise LedgerError("terms_mismatch", "on_confirm.error: the provider's answer is an error, not an acceptance")
    asked, accepted = _order(confirm), _order(on_confirm)
    if order_state(accepted) != ACCEPTED:
        raise LedgerError("terms_mismatch", f"on_confirm.message.order: state {order_state(accepted)!r}, not ACCEPTED")
    if not accepted.id:
        raise LedgerError("message_invalid", "on_confirm.message.order.id: the accepted order has no id", status=400)
    if asked.id is not None:
        _same("message.order.id", asked.id, accepted.id)
    _same("message.order.provider.id", _provider_id(asked), _provider_id(accepted))
    _same("message.order.items[0].id", _item_id(asked), _item_id(accepted))
    spec = _spec(on_confirm, accepted)
    order_path = "on_confirm.message.order"
    for value, path in (
        (accepted.id, f"{order_path}.id"),
        (spec.meter_id, f"{order_path}.fulfillments[0].stops[0].location.address"),
        (on_confirm.context.get("transaction_id"), "on_confirm.context.transaction_id"),
    ):
        _one_line(value, path)
    if not spec.meter_id:
        raise LedgerError(
            "message_invalid", "on_confirm.message.order.fulfillments[0].stops[0].location: no meter", status=400
        )
    return AgreedTerms(
        order_id=accepted.id,
        transaction_id=str(on_confirm.context.get("transaction_id")),
        provider_id=spec.provider_id,
        bap_id=buyer,
        bpp_id=platform,
        item_id=spec.item_id,
        meter_id=spec.meter_id,
        window_start=spec.window_start.astimezone(UTC),
        window_end=spec.window_end.astimezone(UTC),
        contracted_w=_contracted_w(accepted, on_confirm.field),
        price_millipence_per_mwh=_price_millipence(accepted, on_confirm.field),
        settlement_method=spec.settlement_method,
        confirmed_at=_accepted_at(accepted, on_confirm),
    )


def _one_line(value: object, path: str) -> str:
    """A signed id the ledger keeps: text of 1-200 characters, no NUL or control character."""
    try:
        if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
            raise ValueError(f"must be text of 1 to {MAX_ID_CHARS} characters")
        return check_text(value, "it", one_line=True)
    except ValueError as exc:
        raise LedgerError("message_invalid", f"{path}: {exc}", status=400) from exc


def _provider_id(order: Order) -> str | None:
    return order.provider.id if order.provider else None


def _item_id(order: Order) -> str | None:
    return order.items[0].id if order.items else None


def _decimal(text: str | None, path: str) -> Decimal:
    try:
        value = Decimal(text or "")
    except InvalidOperation as exc:
        raise LedgerError("message_invalid", f"{path}: is not a decimal", status=400) from exc
    if not value.is_finite():
        raise LedgerError("message_invalid", f"{path}: is not a decimal", status=400)
    return value


def _contracted_w(order: Order, field: str) -> int:
    """kW as signed (a decimal string), to whole W; finer than a watt is refused, not rounded."""
    path = f"{field}.message.order.items[0].quantity.selected.measure.value"
    sel = order.items[0].quantity.selected if order.items and order.items[0].quantity else None
    kw = _decimal(sel.measure.value if sel and sel.measure else None, path)
    watts = kw * 1000
    if watts != watts.to_integral_value() or watts <= 0:
        raise LedgerError("quantity_invalid", f"{path}: must be a positive number of whole watts")
    return int(watts)


def _price_millipence(order: Order, field: str) -> int:
    """£/MWh as signed, to milli-pence; finer than a milli-penny is refused, not rounded."""
    path = f"{field}.message.order.items[0].price.value"
    price = order.items[0].price if order.items else None
    if price is None or (price.currency or "GBP") != "GBP":
        raise LedgerError("price_invalid", f"{path}: a GBP price is required")
    millipence = _decimal(price.value, path) * 100_000
    if millipence != millipence.to_integral_value() or millipence < 0:
        raise LedgerError("price_invalid", f"{path}: must be a non-negative price in whole milli-pence")
    return int(millipence)


def _accepted_at(order: Order, v: Verified) -> datetime:
    """When the provider accepted: the order's updated_at, else the on_confirm's timestamp."""
    if order.updated_at is not None:
        return order.updated_at.astimezone(UTC)
    stamp = v.context.get("timestamp")
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError as exc:
        raise LedgerError("message_invalid", f"{v.field}.context.timestamp: is not a time", status=400) from exc


# -- amendments ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AmendedTerms:
    """An accepted change of kW and window, as the provider's signed on_update states it."""

    reference: str  # the on_update's message id: a re-send is the same amendment
    window_start: datetime
    window_end: datetime
    contracted_w: int
    amended_at: datetime


@dataclass(frozen=True, kw_only=True)
class AgreedOrder:
    """Who agreed on a registered order, as its stored agreement says (what an amendment must match)."""

    order_id: str
    transaction_id: str
    bap_id: str
    bpp_id: str
    provider_id: str
    item_id: str | None


def agreed_item_id(on_confirm_body: bytes) -> str | None:
    """The item of a stored (already verified) on_confirm."""
    items = _json_object(on_confirm_body, "on_confirm").get("message", {}).get("order", {}).get("items") or [{}]
    item = items[0].get("id") if isinstance(items[0], dict) else None
    return item if isinstance(item, str) else None


def amendment_terms(on_update: Verified, *, order: AgreedOrder) -> AmendedTerms:
    """The amended terms of `order`, signed by the same platform that accepted it, in its transaction."""
    _require_signer(on_update, "bpp_id", order.bpp_id)
    _same("context.bap_id", order.bap_id, on_update.context.get("bap_id"))
    _same("context.transaction_id", order.transaction_id, on_update.context.get("transaction_id"))
    if on_update.payload.get("error"):
        raise LedgerError("terms_mismatch", "on_update.error: the provider's answer is an error, not an acceptance")
    accepted = _order(on_update)
    if order_state(accepted) != ACCEPTED:
        raise LedgerError("terms_mismatch", f"on_update.message.order: state {order_state(accepted)!r}, not ACCEPTED")
    _same("message.order.id", order.order_id, accepted.id)
    _same("message.order.provider.id", order.provider_id, _provider_id(accepted))
    _same("message.order.items[0].id", order.item_id, _item_id(accepted))
    spec = _spec(on_update, accepted)
    message_id = _one_line(on_update.context.get("message_id"), "on_update.context.message_id")
    return AmendedTerms(
        reference=message_id,
        window_start=spec.window_start.astimezone(UTC),
        window_end=spec.window_end.astimezone(UTC),
        contracted_w=_contracted_w(accepted, on_update.field),
        amended_at=_accepted_at(accepted, on_update),
    )


# -- token sales -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TokenSale:
    """What a token sale moves: `tokens` of `series_id` from `seller_id` (the series' provider in a primary
    sale, the holder on the secondary market) to `buyer_id`, for `price_pence` of the buyer's cash."""

    series_id: str
    seller_id: str
    buyer_id: str
    tokens: int
    price_pence: int


def check_token_consent(confirm: Verified, sale: TokenSale) -> None:
    """The buyer signed a confirm for exactly this sale: signed by the buyer (context.bap_id), for an
    order from the seller (provider.id) whose one item is the series, its count the tokens and its quoted
    price the sale's price."""
    _require_signer(confirm, "bap_id", sale.buyer_id)
    _one_line(confirm.context.get("transaction_id"), "confirm.context.transaction_id")
    order = _order(confirm)
    path = "confirm.message.order"
    _consent("provider.id", path, _provider_id(order), sale.seller_id)
    if not order.items or len(order.items) != 1:
        raise LedgerError("terms_mismatch", f"{path}.items: exactly one item, the token series")
    item = order.items[0]
    _consent("items[0].id", path, item.id, sale.series_id)
    count = item.quantity.selected.count if item.quantity and item.quantity.selected else None
    _consent("items[0].quantity.selected.count", path, count, sale.tokens)
    quoted = order.quote.price if order.quote else None
    if quoted is None or (quoted.currency or "GBP") != "GBP":
        raise LedgerError("terms_mismatch", f"{path}.quote.price: a GBP price is required")
    pence = _decimal(quoted.value, f"{path}.quote.price.value") * 100
    _consent("quote.price.value (pence)", path, pence, Decimal(sale.price_pence))


def _consent(what: str, path: str, signed: object, asked: object) -> None:
    if signed != asked:
        raise LedgerError("terms_mismatch", f"{path}.{what}: the buyer signed {signed!r}, the sale asks {asked!r}")


# -- the agreement hash and the memo tag -----------------------------------------------------------


def agreement_sha256(*message_sha256: bytes | None) -> bytes:
    """SHA-256 over the SHA-256 of each signed message present, buyer's first (32 raw bytes each)."""
    present = [h for h in message_sha256 if h is not None]
    if not present or any(len(h) != 32 for h in present):
        raise ValueError("an agreement needs at least one 32-byte message hash")
    return hashlib.sha256(b"".join(present)).digest()


_TAG = re.compile(r" \[agreement ([0-9a-f]{64})\]\Z")


def with_agreement(memo: str, agreement: bytes | None) -> str:
    """`memo` tagged with the agreement hash (hex) it carries into the chain; unchanged without one."""
    return memo if agreement is None else f"{memo} [agreement {agreement.hex()}]"


def agreement_in_memo(memo: str) -> str | None:
    """The agreement hash (hex) a memo carries, if any."""
    m = _TAG.search(memo)
    return m.group(1) if m else None
