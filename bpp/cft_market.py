"""Compute Flex Tokens in the BPP's market (issue 12): providers' series created and minted on the ledger and
published in the catalog, and token purchases as Beckn orders.

- Publishing (`publish`, Celery `bpp.publish_cft` at start and on beat): each series in the providers file
  (`cft_series`, bpp/catalog.py) is created on the ledger and minted up to its `tokens` with the provider's
  own ledger key (FLEXMARKET_LEDGER_PROVIDER_KEYS_FILE, as bpp/outcomes.py reads it); idempotent: the ledger
  answers an existing series with `exists`, and only what is not yet minted is minted. A minted series is a
  catalog item (schemas/flex.py `series_to_item`) with `tokens_available` = minted − sold.
- A token order is a select / init / confirm whose one item is a published series: select → a quote (tokens ×
  price per token); init → a sale CREATED (`bpp.cft_sales`, its id the order id); confirm → the ledger's
  `/cft/sell` with the buyer's signed confirm exactly as it arrived (the inbox keeps its bytes and its
  Authorization header), and on_confirm only once the ledger has settled it delivery versus payment. A
  ledger refusal is an on_confirm with the error naming why; nothing is sold. The ledger unreachable: the
  processing raises and is retried (beckn/processing.py), and fails visibly after its last attempt.
Everything else goes to bpp/service.py, whose HANDLERS and `process` these wrap (bpp/main.py, bpp/tasks.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import httpx
import structlog
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from beckn.errors import BecknError
from beckn.pipeline import Accepted, Handler, Inbound
from bpp import outcomes, service
from bpp.callbacks import callback
from bpp.catalog import CftSeriesConfig, PlatformConfig, overlaps
from bpp.models import CftSale, CftSeries
from kernel import clock
from kernel.config import get_settings
from schemas.core import Order as BecknOrder
from schemas.flex import (
    FlexFormatError,
    FlexRequest,
    TokenOrderSpec,
    TokenSeriesSpec,
    order_to_token_spec,
    series_to_item,
    token_order_to_order,
)
from schemas.messages import OrderMessage

log = structlog.get_logger(__name__)

TOKEN_ACTIONS = ("select", "init", "confirm")


class LedgerRefusal(RuntimeError):
    """The ledger refused a request (4xx): `code` and `message` are its answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status, self.code, self.message = status, code, message


class CftLedger:
    """The ledger's token routes, each called with the provider's own key."""

    def __init__(self, client: httpx.Client, base_url: str, keys: Mapping[str, str]) -> None:
        self.client, self.api, self.keys = client, f"{base_url.rstrip('/')}/api/v1", keys

    def call(self, method: str, path: str, provider_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        key = self.keys.get(provider_id)
        if key is None:
            raise LedgerRefusal(0, "no_ledger_key", f"the BPP holds no ledger key for provider {provider_id}")
        try:
            r = self.client.request(method, f"{self.api}{path}", json=body, headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:
            raise RuntimeError(f"ledger unreachable: {exc}") from exc
        if r.status_code >= 500:
            raise RuntimeError(f"ledger answered {r.status_code} for {path}: {r.text[:300]}")
        answer: dict[str, Any] = r.json() if r.content else {}
        if r.status_code >= 400:
            found = answer.get("error")
            error: dict[str, Any] = found if isinstance(found, dict) else {}
            raise LedgerRefusal(
                r.status_code, str(error.get("code") or r.status_code), str(error.get("message") or r.text)
            )
        return answer

    def ensure_series(self, provider_id: str, s: CftSeriesConfig) -> int:
        """Create the series (idempotent) and mint it up to `s.tokens`; the tokens minted."""
        self.call(
            "POST",
            "/cft/series",
            provider_id,
            {
                "series_id": s.id,
                "provider_id": provider_id,
                "valid_from": s.valid_from.isoformat(),
                "valid_to": s.valid_to.isoformat(),
                "declared_capacity_kw": str(s.declared_capacity_kw),
            },
        )
        minted = int((self.call("GET", f"/cft/series/{s.id}", provider_id).get("provider_invariant") or {})["minted"])
        if minted < s.tokens:  # the id names the target: a re-run mints nothing more
            self.call(
                "POST",
                "/cft/mint",
                provider_id,
                {"id": f"{s.id}-mint-to-{s.tokens}", "series_id": s.id, "tokens": s.tokens - minted},
            )
            minted = s.tokens
        return minted

    def sell(self, sale: CftSale, confirm_body: bytes, authorization: str) -> dict[str, Any]:
        return self.call(
            "POST",
            "/cft/sell",
            sale.provider_id,
            {
                "id": sale.id,
                "series_id": sale.series_id,
                "buyer_id": sale.bap_id,
                "tokens": sale.tokens,
                "price_gbp": str(sale.price_gbp_per_token * sale.tokens),
                "confirm": {
                    "body_base64": base64.b64encode(confirm_body).decode("ascii"),
                    "authorization": authorization,
                },
            },
        )


@contextmanager
def ledger() -> Iterator[CftLedger | None]:
    """The ledger with the providers' keys; None when this BPP has no ledger."""
    settings = get_settings()
    if not settings.ledger_url:
        yield None
        return
    keys = outcomes.load_provider_keys(settings.ledger_provider_keys_file)
    with httpx.Client(timeout=10.0) as client:
        yield CftLedger(client, str(settings.ledger_url), keys)


# -- publishing --------------------------------------------------------------------------------------
def publish(session: Session, platforms: list[PlatformConfig], source: CftLedger, now: datetime) -> int:
    """Create and mint every series still valid; record each minted one for the catalog. The number published.
    A provider the ledger refuses (no key, a conflicting series) is skipped with a warning."""
    published = 0
    for platform in platforms:
        for provider in platform.providers:
            for s in provider.cft_series:
                if s.valid_to <= now:
                    continue
                try:
                    minted = source.ensure_series(provider.id, s)
                except LedgerRefusal as exc:
                    log.warning("token series not published", series_id=s.id, provider_id=provider.id, error=str(exc))
                    continue
                _record(session, platform.subscriber_id, provider.id, s, minted, now)
                published += 1
    return published


def _record(session: Session, bpp_id: str, provider_id: str, s: CftSeriesConfig, minted: int, now: datetime) -> None:
    values = {
        "valid_from": s.valid_from,
        "valid_to": s.valid_to,
        "declared_capacity_kw": s.declared_capacity_kw,
        "price_gbp_per_token": s.price_gbp_per_token,
        "minted": minted,
        "published_at": now,
    }
    session.execute(
        insert(CftSeries)
        .values(bpp_id=bpp_id, provider_id=provider_id, series_id=s.id, **values)
        .on_conflict_do_update(index_elements=["bpp_id", "provider_id", "series_id"], set_=values)
    )


def sold(session: Session, row: CftSeries) -> int:
    return int(
        session.scalar(
            select(func.coalesce(func.sum(CftSale.tokens), 0)).where(
                CftSale.bpp_id == row.bpp_id,
                CftSale.provider_id == row.provider_id,
                CftSale.series_id == row.series_id,
                CftSale.state == "SOLD",
            )
        )
        or 0
    )


def catalog_items(session: Session, bpp_id: str, req: FlexRequest, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """Provider id → the series items a search sees: valid now, overlapping the searched window, minted."""
    rows = session.scalars(
        select(CftSeries)
        .where(CftSeries.bpp_id == bpp_id, CftSeries.minted > 0, CftSeries.valid_to > now)
        .order_by(CftSeries.provider_id, CftSeries.series_id)
    ).all()
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if not overlaps(row.valid_from, row.valid_to, req.window_start, req.window_end):
            continue
        spec = TokenSeriesSpec(
            row.series_id,
            row.provider_id,
            row.valid_from,
            row.valid_to,
            row.price_gbp_per_token,
            max(0, row.minted - sold(session, row)),
        )
        out.setdefault(row.provider_id, []).append(series_to_item(spec).dump())
    return out


def add_series(
    session: Session, bpp_id: str, req: FlexRequest, providers: list[dict[str, Any]], skeleton_of: Any
) -> None:
    """Add the series items to the on_search providers (a provider with series and no matching offer too).
    `skeleton_of(provider_id)` is the provider's Beckn skeleton (bpp/service.py)."""
    by_provider = catalog_items(session, bpp_id, req, clock.now())
    listed = {p["id"]: p for p in providers}
    for provider_id, items in by_provider.items():
        entry = listed.get(provider_id)
        if entry is None:
            skeleton = skeleton_of(provider_id)
            if skeleton is None:
                continue
            entry = {**skeleton, "items": []}
            providers.append(entry)
        entry["items"] = [*entry["items"], *items]


# -- token orders ---------------------------------------------------------------------------------------
def _series_of(session: Session, bpp_id: str, order: Mapping[str, Any] | None) -> CftSeries | None:
    order = order or {}
    items = order.get("items")
    first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    provider_id, item_id = (order.get("provider") or {}).get("id"), first.get("id")
    if not isinstance(provider_id, str) or not isinstance(item_id, str):
        return None
    return session.get(CftSeries, (bpp_id, provider_id, item_id))


def accept_order(session: Session, msg: Inbound, inbox_id: int) -> Accepted:
    """select / init / confirm: a token order is checked here; any other goes to bpp/service.py."""
    assert isinstance(msg.message, OrderMessage)
    order = msg.message.order
    if _series_of(session, msg.receiver.subscriber_id, order.dump() if order else None) is None:
        return service.accept_order(session, msg, inbox_id)
    try:
        spec = order_to_token_spec(order)
    except FlexFormatError as exc:
        raise BecknError("invalid_request", str(exc), paths=exc.path) from exc
    if msg.action == "confirm" and _sale(session, msg.receiver.subscriber_id, msg.context.bap_id, spec) is None:
        raise BecknError(
            "order_not_found",
            f"no token order {spec.order_id!r} was initialised for series {spec.series_id}; send init first",
            http_status=200,
        )
    return Accepted(process_async=True)


HANDLERS: dict[str, Handler] = {**service.HANDLERS, **{a: accept_order for a in TOKEN_ACTIONS}}


def _sale(
    session: Session, bpp_id: str, bap_id: str | None, spec: TokenOrderSpec, *, lock: bool = False
) -> CftSale | None:
    if not spec.order_id:
        return None
    q = select(CftSale).where(CftSale.id == spec.order_id, CftSale.bpp_id == bpp_id, CftSale.bap_id == bap_id)
    return session.scalars(q.with_for_update() if lock else q).first()


class TokenRefusal(Exception):
    """A token order this BPP does not take (`kind`: a Beckn error kind); `sale_id`: the sale it refuses for good."""

    def __init__(self, kind: str, message: str, sale_id: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.sale_id = kind, sale_id


def process(session: Session, row: Any) -> list[int]:
    """beckn.processing for the BPP: token orders here, everything else in bpp/service.py."""
    if row.action not in TOKEN_ACTIONS:
        return service.process(session, row)
    payload = json.loads(row.body)
    series = _series_of(session, row.receiver_id, (payload.get("message") or {}).get("order"))
    if series is None:
        return service.process(session, row)
    ctx, on = payload["context"], f"on_{row.action}"
    spec = order_to_token_spec(BecknOrder.model_validate(payload["message"]["order"]))
    try:
        with session.begin_nested():
            answer = _answer(session, row, series, spec, ctx)
    except TokenRefusal as exc:  # the savepoint undid any change; a refused sale is recorded as such
        refused = session.get(CftSale, exc.sale_id) if exc.sale_id else None
        if refused is not None and refused.state == "CREATED":
            refused.state, refused.reason, refused.updated_at = "REFUSED", str(exc)[:2000], clock.now()
        echo = {"order": token_order_to_order(spec).dump()}
        return [callback(session, row.receiver_id, ctx, on, error=BecknError(exc.kind, str(exc)), message=echo)]
    return [callback(session, row.receiver_id, ctx, on, message={"order": token_order_to_order(answer).dump()})]


def _available(session: Session, series: CftSeries, tokens: int, now: datetime) -> None:
    if now >= series.valid_to:
        raise TokenRefusal("item_not_found", f"series {series.series_id} expired at {series.valid_to.isoformat()}")
    left = series.minted - sold(session, series)
    if tokens > left:
        raise TokenRefusal(
            "quantity_unavailable", f"series {series.series_id}: {tokens} tokens asked, {left} available"
        )


def _answer(session: Session, row: Any, series: CftSeries, spec: TokenOrderSpec, ctx: dict[str, Any]) -> TokenOrderSpec:
    now = clock.now()
    priced = TokenOrderSpec(
        series.provider_id, series.series_id, spec.tokens, series.price_gbp_per_token, spec.order_id
    )
    if row.action == "select":
        _available(session, series, spec.tokens, now)
        return priced
    if row.action == "init":
        _available(session, series, spec.tokens, now)
        sale = _sale(session, row.receiver_id, ctx["bap_id"], spec, lock=True)
        if sale is None or sale.state != "CREATED":
            sale = CftSale(
                bpp_id=row.receiver_id, bap_id=ctx["bap_id"], transaction_id=ctx["transaction_id"], state="CREATED"
            )
            session.add(sale)
        sale.provider_id, sale.series_id, sale.tokens = series.provider_id, series.series_id, spec.tokens
        sale.price_gbp_per_token, sale.updated_at = series.price_gbp_per_token, now
        session.flush()
        return TokenOrderSpec(**{**priced.__dict__, "order_id": sale.id, "state": "CREATED"})
    sale = _sale(session, row.receiver_id, ctx["bap_id"], spec, lock=True)
    assert sale is not None  # checked at acceptance; sales are never deleted
    done = TokenOrderSpec(sale.provider_id, sale.series_id, sale.tokens, sale.price_gbp_per_token, sale.id, "ACCEPTED")
    if sale.state == "SOLD":
        return done  # a repeated confirm: the same answer
    if sale.state != "CREATED":
        raise TokenRefusal("invalid_order_state", f"token order {sale.id} is {sale.state}: {sale.reason}")
    return _sell(session, row, sale, done)


def _sell(session: Session, row: Any, sale: CftSale, done: TokenOrderSpec) -> TokenOrderSpec:
    if not row.authorization:
        raise TokenRefusal("invalid_request", "the confirm has no Authorization header for the ledger to check")
    with ledger() as source:
        if source is None:
            raise TokenRefusal("action_not_applicable", "this BPP has no ledger to settle a token sale on")
        try:
            result = source.sell(sale, bytes(row.body), row.authorization)
        except LedgerRefusal as exc:
            kind = "quantity_unavailable" if exc.code == "insufficient_tokens" else "business"
            raise TokenRefusal(kind, f"the ledger refused the sale: {exc.code}: {exc.message}", sale.id) from exc
    sale.state, sale.ledger_result, sale.updated_at = "SOLD", _brief(result), clock.now()
    log.info("token sale settled on the ledger", sale_id=sale.id, series_id=sale.series_id, tokens=sale.tokens)
    return done


def _brief(result: Mapping[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("status", "agreement_sha256") if k in result} | {
        "transfers": [t.get("id") for t in result.get("transfers") or [] if isinstance(t, dict)]
    }
