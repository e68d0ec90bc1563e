"""Reconciliation: every order as the BAP, the BPP and the ledger each hold it, compared; each difference is an
alert — logged, counted in /metrics, listed by `GET /api/v1/reconciliation/alerts` and kept in table
bap.reconciliation_alerts (open while the difference stands, resolved when a later run no longer finds it).

Runs daily (Celery beat `bap.reconcile`, market time), on demand (`POST /api/v1/reconciliation/run`) and from
the command line (`flexmarket reconcile`). The comparison itself is the pure bap/differences.py.

Where each book comes from:
- the BAP's: its own orders table (every order the BPP has assigned an id);
- the ledger's: its API with the BAP's ledger key (FLEXMARKET_LEDGER_API_KEY, role bap, which reads exactly
  the orders this BAP registered): the list, then each order's current terms and runs, and its latest run;
- the BPP's: `POST <BPP URL>/reconciliation/orders` on each BPP the BAP has orders with (bpp/book.py), signed
  with the BAP's Beckn key (BECKN-006, verified against the registry like every Beckn message). A signed read
  rather than a Beckn `status`: an `on_status` answer is applied to the BAP's own copy (that is what it is
  for), so it would overwrite the very book being compared, and it arrives later on another request, where a
  reconciliation run wants every book read at one moment.

A book that cannot be read is reported (`unreadable`) and its orders are left out of the run, rather than
reported missing: a BPP that is down is not a difference between the books. An order in flight (its ledger
registration a few seconds behind its confirmation, an outcome not yet sent back) may show as a difference
for one run; its alert resolves on the next run that finds the books agreeing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import structlog
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bap.differences import Difference, Kind, LedgerOrder, PartyOrder, compare_books
from bap.models import BapOrder, ReconciliationAlert
from beckn import envelope, signing
from beckn.identity import Identity, load_identity
from kernel import clock
from kernel.config import get_settings
from kernel.db import session_scope
from schemas import limits
from schemas.outcome import CFT_OBLIGATION_PREFIX, OutcomeFormatError, ledger_order_id, outcome_from_ledger

log = structlog.get_logger(__name__)

MILLIPENCE_PER_GBP = 100_000
W_PER_KW = 1000
HTTP_TIMEOUT_S = 15.0


class ReconcileError(RuntimeError):
    """Reconciliation cannot run at all: no BAP named to run it for."""


class BookUnreadable(RuntimeError):
    """One book (a BPP's, or the ledger's) could not be read."""


# `record`'s `skipped` when the run compared nothing (the ledger could not be read): no alert is resolved.
EVERYTHING = None


@dataclass(frozen=True)
class OrderPlace:
    """Where an order lives: its transaction and BPP (None when only the ledger knows it)."""

    transaction_id: str | None
    bpp_id: str | None
    bpp_uri: str | None = None


@dataclass
class Report:
    checked_orders: int
    differences: list[Difference]
    unreadable: list[str] = field(default_factory=list)
    places: dict[str, OrderPlace] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.differences and not self.unreadable

    def as_json(self) -> dict[str, Any]:
        return {
            "checked_orders": self.checked_orders,
            "differences": [difference_json(d, self.places.get(d.order_id)) for d in self.differences],
            "unreadable": self.unreadable,
        }


def difference_json(d: Difference, place: OrderPlace | None) -> dict[str, Any]:
    return {
        "order_id": d.order_id,
        "transaction_id": place.transaction_id if place else None,
        "bpp_id": place.bpp_id if place else None,
        "kind": d.kind.value,
        "bap": d.bap,
        "bpp": d.bpp,
        "ledger": d.ledger,
    }


# -- the three books -----------------------------------------------------------------------------------------
def bap_book(session: Session, transaction_id: str | None) -> tuple[dict[str, PartyOrder], dict[str, OrderPlace]]:
    q = select(BapOrder).where(BapOrder.order_id.is_not(None))
    if transaction_id is not None:
        q = q.where(BapOrder.transaction_id == transaction_id)
    book: dict[str, PartyOrder] = {}
    places: dict[str, OrderPlace] = {}
    for o in session.scalars(q):
        assert o.order_id is not None
        book[o.order_id] = PartyOrder(
            o.state,
            o.power_kw,
            o.window_start,
            o.window_end,
            o.price_gbp_per_mwh,
            o.delivered_energy_kwh,
            o.settled_amount_pence,
        )
        places[o.order_id] = OrderPlace(o.transaction_id, o.bpp_id, o.bpp_uri)
    return book, places


def _party_order(e: Mapping[str, Any]) -> PartyOrder:
    return PartyOrder(
        str(e["state"]),
        float(e["power_kw"]),
        datetime.fromisoformat(e["window_start"]),
        datetime.fromisoformat(e["window_end"]),
        None if e.get("price_gbp_per_mwh") is None else float(e["price_gbp_per_mwh"]),
        None if e.get("delivered_energy_kwh") is None else float(e["delivered_energy_kwh"]),
        None if e.get("settled_amount_pence") is None else int(e["settled_amount_pence"]),
    )


class BppBooks:
    """Reads each BPP's copy of this BAP's orders with a signed request (bpp/book.py)."""

    def __init__(self, client: httpx.Client, me: Identity) -> None:
        self.client, self.me = client, me

    def _page(self, bpp_uri: str, body: dict[str, Any]) -> dict[str, Any]:
        raw = envelope.dumps(body)
        auth = signing.authorization_header(
            raw,
            self.me.keys.signing_private_key,
            self.me.subscriber_id,
            self.me.unique_key_id,
            validity_s=get_settings().signature_validity_s,
        )
        url = f"{bpp_uri.rstrip('/')}/reconciliation/orders"
        try:
            r = self.client.post(url, content=raw, headers={"Authorization": auth, "Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise BookUnreadable(f"{url}: {exc}") from exc
        if r.status_code != 200:
            raise BookUnreadable(f"{url} answered {r.status_code}: {r.text[:200]}")
        page: dict[str, Any] = r.json()
        return page

    def book(self, bpp_uri: str, transaction_id: str | None) -> dict[str, tuple[PartyOrder, str]]:
        """The BPP's copy of each of this BAP's orders there, with its transaction id."""
        found: dict[str, tuple[PartyOrder, str]] = {}
        after: str | None = None
        while True:
            body = {"bap_id": self.me.subscriber_id, "transaction_id": transaction_id, "after": after}
            page = self._page(bpp_uri, body)
            try:
                found.update({str(e["order_id"]): (_party_order(e), str(e["transaction_id"])) for e in page["orders"]})
            except (KeyError, TypeError, ValueError) as exc:
                raise BookUnreadable(f"{bpp_uri}: malformed book: {exc}") from exc
            after = page.get("next_after")
            if not after:
                return found


class LedgerBook:
    """Reads the ledger's copy of this BAP's orders with its ledger key."""

    def __init__(self, client: httpx.Client, base_url: str, api_key: str) -> None:
        self.client = client
        self.api = f"{base_url.rstrip('/')}/api/v1"
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def exists(self, order_id: str) -> bool:
        """Whether the ledger holds the order (404: it does not; anything else unexpected: unreadable)."""
        try:
            r = self.client.get(f"{self.api}/orders/{order_id}", headers=self.headers)
        except httpx.HTTPError as exc:
            raise BookUnreadable(f"{self.api}: {exc}") from exc
        if r.status_code not in (200, 404):
            raise BookUnreadable(f"{self.api} answered {r.status_code} for /orders/{order_id}: {r.text[:200]}")
        return r.status_code == 200

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        try:
            r = self.client.get(f"{self.api}{path}", params=params, headers=self.headers)
        except httpx.HTTPError as exc:
            raise BookUnreadable(f"{self.api}: {exc}") from exc
        if r.status_code != 200:
            raise BookUnreadable(f"{self.api} answered {r.status_code} for {path}: {r.text[:200]}")
        body: dict[str, Any] = r.json()
        return body

    def order_ids(self, bap_id: str, transaction_id: str | None) -> list[str]:
        ids: list[str] = []
        params = {"bap_id": bap_id, "limit": str(limits.MAX_PAGE_SIZE)}
        if transaction_id is not None:
            params["transaction_id"] = transaction_id
        while True:
            page = self._get("/orders", params)
            ids += [str(o["order_id"]) for o in page["orders"]]
            if not page.get("next_after"):
                return ids
            params["after"] = str(page["next_after"])

    def order(self, order_id: str) -> tuple[LedgerOrder, str]:
        """The ledger's copy of one order and its transaction id."""
        s = self._get(f"/orders/{order_id}")
        stored = self._get(f"/settlement/{order_id}/{s['runs'][-1]['run']}") if s.get("runs") else None
        try:
            outcome = outcome_from_ledger(s, stored)
        except OutcomeFormatError as exc:
            raise BookUnreadable(f"order {order_id}: {exc}") from exc
        ledger_order = LedgerOrder(
            float(Decimal(s["contracted_w"]) / W_PER_KW),
            datetime.fromisoformat(s["window_start"]),
            datetime.fromisoformat(s["window_end"]),
            float(Decimal(s["price_millipence_per_mwh"]) / MILLIPENCE_PER_GBP),
            s.get("cancelled_at") is not None,
            outcome,
            paid_with_tokens=s.get("settlement_method") == "CFT",
        )
        return ledger_order, str(s["transaction_id"])


# -- a run ---------------------------------------------------------------------------------------------------
def _ledger_book(
    ledger: LedgerBook,
    me: Identity,
    transaction_id: str | None,
    places: dict[str, OrderPlace],
    token_paid: set[str],
) -> dict[str, LedgerOrder]:
    """The ledger's copy of this BAP's orders (of one transaction, when given). A token-paid order is the
    ledger's redemption obligation `cft-<order id>`, registered under a transaction of its own: within one
    transaction it is read by id for each of the BAP's token-paid orders."""
    book: dict[str, LedgerOrder] = {}
    ids = ledger.order_ids(me.subscriber_id, transaction_id)
    if transaction_id is not None:
        listed = set(ids)
        ids += [
            ledger_order_id(oid, "CFT")
            for oid in sorted(token_paid)
            if ledger_order_id(oid, "CFT") not in listed and ledger.exists(ledger_order_id(oid, "CFT"))
        ]
    for ledger_id in ids:
        order, tx = ledger.order(ledger_id)
        # a token-paid order is the ledger's redemption obligation `cft-<Beckn order id>` (ledger/tokens.py)
        order_id = ledger_id.removeprefix(CFT_OBLIGATION_PREFIX) if order.paid_with_tokens else ledger_id
        book[order_id] = order
        places.setdefault(order_id, OrderPlace(tx, None))
    return book


def reconcile(
    me: Identity, ledger: LedgerBook | None, bpps: BppBooks, *, transaction_id: str | None = None
) -> tuple[Report, set[str] | None]:
    """Read the three books and compare them; the report and the ids of the orders left out (their BPP's
    book could not be read), or EVERYTHING when the ledger (None: not configured) could not be read."""
    with session_scope("bap") as s:
        bap, places = bap_book(s, transaction_id)
        paid = select(BapOrder.order_id).where(BapOrder.settlement_method == "CFT", BapOrder.order_id.is_not(None))
        if transaction_id is not None:
            paid = paid.where(BapOrder.transaction_id == transaction_id)
        token_paid = {str(oid) for oid in s.scalars(paid)}
    report = Report(0, [], places=places)
    try:
        if ledger is None:
            raise BookUnreadable("not configured (FLEXMARKET_LEDGER_URL, FLEXMARKET_LEDGER_API_KEY)")
        ledger_book = _ledger_book(ledger, me, transaction_id, places, token_paid)
    except BookUnreadable as exc:
        report.unreadable.append(f"ledger: {exc}")
        return report, EVERYTHING
    bpp: dict[str, PartyOrder] = {}
    skipped: set[str] = set()
    for bpp_id, bpp_uri in sorted({(p.bpp_id, p.bpp_uri) for p in places.values() if p.bpp_uri}):
        try:
            for order_id, (order, tx) in bpps.book(str(bpp_uri), transaction_id).items():
                bpp[order_id] = order
                places.setdefault(order_id, OrderPlace(tx, bpp_id, bpp_uri))
        except BookUnreadable as exc:
            report.unreadable.append(f"BPP {bpp_id}: {exc}")
            skipped |= {oid for oid, p in places.items() if p.bpp_id == bpp_id}
    checked = (set(bap) | set(bpp) | set(ledger_book)) - skipped  # an order any book holds
    report.differences = compare_books(
        {k: v for k, v in bap.items() if k in checked},
        {k: v for k, v in bpp.items() if k in checked},
        {k: v for k, v in ledger_book.items() if k in checked},
    )
    report.checked_orders = len(checked)
    return report, skipped


def record(
    session: Session, report: Report, *, transaction_id: str | None, skipped: set[str] | None, now: datetime
) -> int:
    """Keep the run's differences as alerts (one open alert per order and kind) and resolve the open alerts
    in the run's scope (one transaction, or all) that it no longer finds — except those of orders it left
    out (`skipped`; EVERYTHING: all); the number of new alerts."""
    if skipped is EVERYTHING:
        return 0
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('bap.reconcile'))"))  # one run records at a time
    q = select(ReconciliationAlert).where(ReconciliationAlert.resolved_at.is_(None))
    if transaction_id is not None:
        q = q.where(ReconciliationAlert.transaction_id == transaction_id)
    open_alerts = {(a.order_id, a.kind): a for a in session.scalars(q) if a.order_id not in skipped}
    new = 0
    for d in report.differences:
        alert = open_alerts.pop((d.order_id, d.kind.value), None)
        log.warning("reconciliation difference", **difference_json(d, report.places.get(d.order_id)), new=alert is None)
        if alert is None:
            place = report.places.get(d.order_id) or OrderPlace(None, None)
            alert = ReconciliationAlert(
                order_id=d.order_id,
                transaction_id=place.transaction_id,
                bpp_id=place.bpp_id,
                kind=d.kind.value,
                first_seen_at=now,
            )
            session.add(alert)
            new += 1
        alert.bap_value, alert.bpp_value, alert.ledger_value = d.bap, d.bpp, d.ledger
        alert.last_seen_at = now
    for alert in open_alerts.values():
        alert.resolved_at = now
    return new


def run(me: Identity, *, transaction_id: str | None = None) -> Report:
    """One reconciliation run with this deployment's settings (the API, the beat task and the CLI use it)."""
    settings = get_settings()
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
        ledger = (
            LedgerBook(client, settings.ledger_url, settings.ledger_api_key)
            if settings.ledger_url and settings.ledger_api_key
            else None
        )
        report, skipped = reconcile(me, ledger, BppBooks(client, me), transaction_id=transaction_id)
    with session_scope("bap") as s:
        new = record(s, report, transaction_id=transaction_id, skipped=skipped, now=clock.now())
    log.info(
        "reconciliation run",
        checked_orders=report.checked_orders,
        differences=len(report.differences),
        new_alerts=new,
        unreadable=len(report.unreadable),
    )
    return report


def worker_identity() -> Identity:
    """The BAP a worker (or the CLI) reconciles for: FLEXMARKET_BAP_SUBSCRIBER_ID, else FLEXMARKET_SUBSCRIBER_ID."""
    settings = get_settings()
    subscriber_id = settings.bap_subscriber_id or settings.subscriber_id
    if not subscriber_id:
        raise ReconcileError("name the BAP to reconcile for: set FLEXMARKET_BAP_SUBSCRIBER_ID")
    return load_identity(settings.home, subscriber_id)


# -- reading the alerts --------------------------------------------------------------------------------------
def alert_json(a: ReconciliationAlert) -> dict[str, Any]:
    return {
        "id": a.id,
        "order_id": a.order_id,
        "transaction_id": a.transaction_id,
        "bpp_id": a.bpp_id,
        "kind": a.kind,
        "bap": a.bap_value,
        "bpp": a.bpp_value,
        "ledger": a.ledger_value,
        "first_seen_at": a.first_seen_at.isoformat(),
        "last_seen_at": a.last_seen_at.isoformat(),
        "resolved_at": a.resolved_at.isoformat() if a.resolved_at else None,
    }


def list_alerts(
    session: Session, *, status: str, transaction_id: str | None, after: int | None, limit: int
) -> dict[str, Any]:
    """Alerts by id: `open`, `resolved` or `all`, of one transaction or every one; page with `after`."""
    q = select(ReconciliationAlert)
    if status == "open":
        q = q.where(ReconciliationAlert.resolved_at.is_(None))
    elif status == "resolved":
        q = q.where(ReconciliationAlert.resolved_at.is_not(None))
    if transaction_id is not None:
        q = q.where(ReconciliationAlert.transaction_id == transaction_id)
    if after is not None:
        q = q.where(ReconciliationAlert.id > after)
    alerts = session.scalars(q.order_by(ReconciliationAlert.id).limit(limit)).all()
    full = len(alerts) == limit
    return {"alerts": [alert_json(a) for a in alerts], "next_after": alerts[-1].id if full else None}


# -- /metrics ------------------------------------------------------------------------------------------------
class AlertMetrics(Collector):
    """Alerts raised (a counter: rows are never deleted) and open, by kind, read from the table at each scrape,
    so /metrics counts every run's alerts whichever process (web, worker, CLI) made it."""

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        try:
            with session_scope("bap") as s:
                rows = s.execute(
                    select(
                        ReconciliationAlert.kind,
                        func.count(),
                        func.count().filter(ReconciliationAlert.resolved_at.is_(None)),
                    ).group_by(ReconciliationAlert.kind)
                ).all()
        except Exception as exc:  # a scrape never fails because the database is away
            log.warning("reconciliation metrics unavailable", error=str(exc))
            return
        counts = {r[0]: (int(r[1]), int(r[2])) for r in rows}
        raised = CounterMetricFamily(
            "flexmarket_reconciliation_alerts", "Differences between the books raised as alerts", labels=["kind"]
        )
        open_now = GaugeMetricFamily(
            "flexmarket_reconciliation_open_alerts", "Differences between the books that still stand", labels=["kind"]
        )
        for kind in Kind:
            total, still_open = counts.get(kind.value, (0, 0))
            raised.add_metric([kind.value], total)
            open_now.add_metric([kind.value], still_open)
        yield raised
        yield open_now


_metrics: AlertMetrics | None = None


def register_metrics() -> None:
    """Expose the alert metrics on this process's /metrics (once)."""
    global _metrics
    if _metrics is None:
        _metrics = AlertMetrics()
        REGISTRY.register(_metrics)
