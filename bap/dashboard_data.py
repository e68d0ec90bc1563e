"""What the operator dashboard shows (bap/dashboard.py renders it): plain dicts for its templates and charts.

Every figure comes from the BAP's own use cases — procurements and their orders (bap/procurement.py), the
market and carbon logs (bap/market_log.py), token holdings (bap/tokens.py), the kill switch and the policy
(bap/governance.py), reconciliation alerts (bap/reconcile.py) — or from another participant over HTTP: the
ledger's chain head, verification and statements with the BAP's ledger key (FLEXMARKET_LEDGER_URL,
FLEXMARKET_LEDGER_API_KEY, as bap/tokens.py reads holdings), and a provider's load-shift schedule from its BPP
(`GET <bpp_uri>/providers/{provider_id}/schedule`, at the BPP URL of the BAP's orders or offers). Nothing is
recomputed here: this module only selects and shapes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bap import governance, market_log, procurement, reconcile, tokens
from bap.models import BapOrder, CatalogOffer, Halt, MarketLogEntry, Procurement, ReconciliationAlert, TokenOrder
from bap.service import ClientError
from kernel.config import get_settings

PROCUREMENTS_SHOWN = 10
LOG_LINES_SHOWN = 50
ALERTS_SHOWN = 50
PROVIDERS_SHOWN = 100
LEDGER_TIMEOUT_S = 10.0
VERIFY_TIMEOUT_S = 60.0  # the ledger re-hashes its whole chain
SCHEDULE_TIMEOUT_S = 5.0
MAX_STATEMENT_DAYS = 366


# -- procurements and their orders ----------------------------------------------------------------------
def _view(s: Session, p: Any) -> dict[str, Any]:
    v = procurement.view(s, p)
    v.pop("market_log", None)  # the log has its own panel
    return v


def procurements(s: Session, *, limit: int = PROCUREMENTS_SHOWN) -> list[dict[str, Any]]:
    """The newest procurements, each with its slots and orders (as GET /api/v1/procurements/{id} has them)."""
    rows = procurement.listing(s, status=None, source=None, aggregator_id=None, limit=limit)
    return [_view(s, procurement.get(s, r["procurement_id"])) for r in rows]


def pending_approvals(s: Session) -> list[dict[str, Any]]:
    """Procurements waiting for an operator, with the explanation the approver reads."""
    rows = procurement.listing(s, status="pending_approval", source=None, aggregator_id=None, limit=100)
    return [_view(s, procurement.get(s, r["procurement_id"])) for r in rows]


def procurement_detail(s: Session, procurement_id: str) -> dict[str, Any] | None:
    """One procurement (None: unknown), with its target / covered / delivered chart."""
    try:
        v = _view(s, procurement.get(s, procurement_id))
    except ClientError:
        return None
    v["chart"] = slot_chart(v["slots"])
    return v


def newest_procurement_id(s: Session) -> str | None:
    rows = procurement.listing(s, status=None, source=None, aggregator_id=None, limit=1)
    return rows[0]["procurement_id"] if rows else None


def _labels(starts: list[datetime]) -> list[str]:
    """Category-axis labels (UTC): HH:MM, with the day when the slots span more than one."""
    several_days = len({t.date() for t in starts}) > 1
    return [t.strftime("%d %b %H:%M" if several_days else "%H:%M") for t in starts]


def slot_chart(slots: list[dict[str, Any]]) -> dict[str, Any]:
    """Target vs covered vs delivered kW per slot (delivered: null until settlement)."""
    starts = [datetime.fromisoformat(x["start"]) for x in slots]
    delivered = [x.get("delivered_kw") for x in slots]
    return {
        "labels": _labels(starts),
        "target_kw": [x["target_kw"] for x in slots],
        "covered_kw": [x["covered_kw"] for x in slots],
        "delivered_kw": delivered if any(d is not None for d in delivered) else None,
    }


# -- logs --------------------------------------------------------------------------------------------------
def latest_log(
    s: Session, log_name: str, *, procurement_id: str | None, limit: int = LOG_LINES_SHOWN
) -> list[dict[str, Any]]:
    """The latest `limit` lines of the market or carbon log, newest first (bap/market_log.py's rows)."""
    q = select(MarketLogEntry).where(MarketLogEntry.log == log_name)
    if procurement_id:
        q = q.where(MarketLogEntry.procurement_id == procurement_id)
    return [market_log.entry_json(e) for e in s.scalars(q.order_by(MarketLogEntry.id.desc()).limit(limit))]


# -- governance, tokens, alerts ----------------------------------------------------------------------------
def governance_state(s: Session) -> dict[str, Any]:
    """The kill switch and the active policy's approval thresholds."""
    active = governance.active(s)
    shadow = governance.shadow(s)
    return {
        "halt": governance.halt_state(s),
        "policy_version": active.version,
        "shadow_version": shadow.version if shadow else None,
        "approval": active.body.approval.model_dump(),
    }


@dataclass(frozen=True)
class Readout:
    """Rows read from somewhere that may be away: the rows, or why there are none."""

    rows: list[dict[str, Any]]
    error: str | None = None


def token_positions(s: Session) -> Readout:
    """The tokens this BAP holds, per series, as the ledger states them now."""
    try:
        return Readout(tokens.holdings_view(s))
    except tokens.TokenClientError as exc:
        return Readout([], str(exc))
    except RuntimeError as exc:  # the ledger is unreachable or answered an error
        return Readout([], str(exc))


def open_alerts(s: Session, *, limit: int = ALERTS_SHOWN) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = reconcile.list_alerts(
        s, status="open", transaction_id=None, after=None, limit=limit
    )["alerts"]
    return alerts


# -- the ledger (with the BAP's ledger key) ----------------------------------------------------------------
@dataclass(frozen=True)
class LedgerAnswer:
    """One ledger call: its HTTP status and body, or why there was none (status None)."""

    status: int | None
    body: bytes = b""
    content_type: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200

    def json(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.body)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}

    def refusal(self) -> str:
        """Why the call did not succeed, in the ledger's words where it gave some."""
        if self.error:
            return self.error
        err = self.json().get("error")
        message = err.get("message") if isinstance(err, dict) else None
        return f"the ledger answered {self.status}" + (f": {message}" if message else "")


def ledger_get(path: str, params: dict[str, str] | None = None, *, timeout_s: float = LEDGER_TIMEOUT_S) -> LedgerAnswer:
    """GET <ledger>/api/v1<path> with the BAP's ledger key."""
    settings = get_settings()
    if not settings.ledger_url:
        return LedgerAnswer(None, error="this BAP has no ledger (FLEXMARKET_LEDGER_URL is not set)")
    headers = {"Authorization": f"Bearer {settings.ledger_api_key}"} if settings.ledger_api_key else {}
    url = f"{str(settings.ledger_url).rstrip('/')}/api/v1{path}"
    try:
        with httpx.Client(timeout=timeout_s) as client:
            r = client.get(url, params=params, headers=headers)
    except httpx.HTTPError as exc:
        return LedgerAnswer(None, error=f"the ledger is unreachable: {type(exc).__name__}")
    return LedgerAnswer(r.status_code, r.content, r.headers.get("content-type", ""))


def ledger_head() -> dict[str, Any]:
    """The chain head (height, head hash, entries) and the latest signed checkpoint, or why not."""
    head = ledger_get("/chain/head")
    if not head.ok:
        return {"error": head.refusal()}
    answer = ledger_get("/checkpoints/latest")
    message = answer.json().get("message") if answer.ok else None
    checkpoint = None
    if isinstance(message, dict) and isinstance(message.get("time_us"), int):
        checkpoint = {
            "height": message.get("height"),
            "head_hash": message.get("head_hash"),
            "signed_at": datetime.fromtimestamp(message["time_us"] / 1_000_000, UTC),
        }
    return {"head": head.json(), "checkpoint": checkpoint}


def ledger_verify() -> dict[str, Any]:
    """The ledger's own full verification (GET /verify): chain, checkpoints and balances, or its refusal."""
    answer = ledger_get("/verify", timeout_s=VERIFY_TIMEOUT_S)
    if not answer.ok:
        return {"error": answer.refusal(), "status": answer.status}
    return answer.json()


def statement_accounts(s: Session) -> list[str]:
    """The ledger accounts the BAP's key may read: its cash, and a holding per token series it bought through
    Beckn or holds now (as bap/tokens.py reads its holdings; those it cannot read are left out)."""
    me = tokens.my_id()
    series = set(s.scalars(select(TokenOrder.series_id).where(TokenOrder.state == "ACCEPTED").distinct()).all())
    series |= {row["series_id"] for row in token_positions(s).rows}
    return [f"bap:{me}:cash", *(f"holding:{me}:{sid}" for sid in sorted(series))]


def statement_period(now: datetime) -> tuple[date, date]:
    """The statement form's default: the last 30 days to today (market time), both inclusive."""
    today = now.date()
    return today - timedelta(days=30), today


def statement(account: str, first_day: date, last_day: date, fmt: str) -> LedgerAnswer:
    """The ledger's statement of `account` for whole UTC days first_day..last_day (JSON or CSV)."""
    params = {
        "from": f"{first_day.isoformat()}T00:00:00Z",
        "to": f"{(last_day + timedelta(days=1)).isoformat()}T00:00:00Z",
        "format": fmt,
    }
    return ledger_get(f"/statements/{account}", params)


# -- a provider's load-shift schedule, from its BPP ----------------------------------------------------------
def providers(s: Session) -> list[str]:
    """Providers the BAP has ordered from or seen offers of."""
    ordered = set(s.scalars(select(BapOrder.provider_id).distinct().limit(PROVIDERS_SHOWN)).all())
    offered = set(s.scalars(select(CatalogOffer.provider_id).distinct().limit(PROVIDERS_SHOWN)).all())
    return sorted(ordered | offered)[:PROVIDERS_SHOWN]


def provider_bpp_uri(s: Session, provider_id: str) -> str | None:
    """The BPP URL of the provider's latest order, else of its latest offer."""
    uri = s.scalars(
        select(BapOrder.bpp_uri).where(BapOrder.provider_id == provider_id).order_by(BapOrder.updated_at.desc())
    ).first()
    if uri is None:
        uri = s.scalars(
            select(CatalogOffer.bpp_uri)
            .where(CatalogOffer.provider_id == provider_id)
            .order_by(CatalogOffer.received_at.desc())
        ).first()
    return uri


_SLOT_NUMBERS = ("baseline_kw", "planned_kw", "committed_reduction_kw", "price_gbp_per_mwh", "carbon_g_per_kwh")


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def loadshift_chart(doc: Any) -> dict[str, Any]:
    """The chart data of a BPP's schedule answer; ValueError naming what is malformed."""
    slots = doc.get("slots") if isinstance(doc, dict) else None
    if not isinstance(slots, list) or not slots:
        raise ValueError("the answer has no slots")
    starts: list[datetime] = []
    series: dict[str, list[float | None]] = {k: [] for k in _SLOT_NUMBERS}
    for i, slot in enumerate(slots):
        if not isinstance(slot, dict):
            raise ValueError(f"slots[{i}] is not an object")
        try:
            starts.append(datetime.fromisoformat(str(slot["start"])))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"slots[{i}].start is not a time") from exc
        for k in _SLOT_NUMBERS:
            series[k].append(_number(slot.get(k)))
        if series["baseline_kw"][-1] is None or series["planned_kw"][-1] is None:
            raise ValueError(f"slots[{i}] lacks baseline_kw or planned_kw")
    return {"labels": _labels(starts), **series}


def provider_schedule(s: Session, provider_id: str) -> dict[str, Any]:
    """The provider's load-shift chart from its BPP, or {"error": why it is unavailable}."""
    uri = provider_bpp_uri(s, provider_id)
    if uri is None:
        return {"error": f"no BPP known for {provider_id}"}
    url = f"{uri.rstrip('/')}/providers/{provider_id}/schedule"
    try:
        with httpx.Client(timeout=SCHEDULE_TIMEOUT_S) as client:
            r = client.get(url)
    except httpx.HTTPError as exc:
        return {"error": f"the BPP is unreachable ({type(exc).__name__})"}
    if r.status_code != 200:
        return {"error": f"the BPP answered {r.status_code}"}
    try:
        doc = r.json()
        chart = loadshift_chart(doc)
    except ValueError as exc:
        return {"error": f"the BPP's answer is malformed: {exc}"}
    return {"chart": chart, "totals": doc.get("totals") if isinstance(doc.get("totals"), dict) else None}


def version(s: Session) -> str:
    """What the panels show has changed since a page last saw this value when it differs: the newest change to a
    procurement or order, the market log's last entry, the kill switch's last move, the reconciliation alerts."""
    parts = [
        s.scalar(select(func.max(Procurement.updated_at))),
        s.scalar(select(func.max(BapOrder.updated_at))),
        s.scalar(select(func.max(MarketLogEntry.id))),
        s.scalar(select(func.max(Halt.id))),
        s.scalar(select(func.count()).select_from(ReconciliationAlert)),
    ]
    return "|".join("" if p is None else str(p) for p in parts)
