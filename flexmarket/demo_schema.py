"""The demo's one data document, `summary.json` (schema `flexmarket-demo-summary/1`), and its validation.

`flexmarket demo` writes the document; `flexmarket/demo_console.py` (the 80-column summary) and
`flexmarket/report.py` (report.html) render it and nothing else. Conventions:
- money is integer pence in `*_pence` fields; a `*_gbp` field is a decimal string with two places ("1234.50");
  where both halves of a pair are present they must agree;
- instants are ISO 8601 strings in UTC ("2023-01-24T17:00:00Z"); dates are ISO dates;
- power is kW, energy kWh, carbon intensity gCO₂/kWh, carbon mass kg CO₂, prices £/MWh;
- file paths (statements, logs) are relative to the folder that holds summary.json and report.html.

Optional: `settlement.scrp_gbp_per_mwh` (a number), the supplier compensation reference price the settlement
policy used; the renderers state it when present.

Unknown keys are allowed anywhere (the demo may add figures). A missing or ill-typed required key, or a
document whose parts disagree, makes `validate_summary` raise `SummaryError`, which names every problem by
its path in the document (e.g. `procurement.slots[2].target_kw`).

Invariants checked beyond the shapes (`_cross_checks`):
- provider ids are unique, and every provider id the document mentions is one of `providers`;
- every window ends after it starts, and the event's and the load-shift series' slots are in time order;
- per token series: minted = outstanding + redeemed + expired (the ledger's CFT invariant, ledger/cft.py);
- `supplier_compensation_total_pence` = Σ `supplier_compensation_pence`;
- a `*_gbp` string and its `*_pence` companion, where both are present, state the same amount.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

SCHEMA_ID = "flexmarket-demo-summary/1"

_GBP = re.compile(r"-?\d+\.\d{2}")


def parse_utc(text: str) -> datetime:
    """An ISO 8601 instant with a zero UTC offset ('Z' or '+00:00')."""
    t = datetime.fromisoformat(text)
    if t.utcoffset() != timedelta(0):
        raise ValueError(f"{text!r} is not in UTC (give 'Z' or '+00:00')")
    return t


def _utc_instant(text: str) -> str:
    parse_utc(text)
    return text


def _iso_date(text: str) -> str:
    date.fromisoformat(text)
    return text


def _gbp_string(text: str) -> str:
    if not _GBP.fullmatch(text):
        raise ValueError(f"{text!r} is not an amount in pounds with two decimal places, e.g. '1234.50'")
    return text


def _relative_path(text: str) -> str:
    path = PurePosixPath(text)
    if not text or path.is_absolute() or ".." in path.parts or ":" in text or "\\" in text:
        raise ValueError(f"{text!r} is not a relative path inside the output folder (e.g. 'statements/a.csv')")
    return text


def _file_name(text: str) -> str:
    if "/" in _relative_path(text):
        raise ValueError(f"{text!r} is not a file name in the output folder itself (links in it are relative)")
    return text


UtcInstant = Annotated[str, AfterValidator(_utc_instant)]
IsoDate = Annotated[str, AfterValidator(_iso_date)]
GbpString = Annotated[str, AfterValidator(_gbp_string)]
RelativePath = Annotated[str, AfterValidator(_relative_path)]
FileName = Annotated[str, AfterValidator(_file_name)]
Id = Annotated[str, Field(min_length=1)]
NonNegative = Annotated[float, Field(ge=0)]
Count = Annotated[int, Field(ge=0)]


class _Part(BaseModel):
    """Every part of the document: strict types (no "3" for 3, no true for 1), extra keys kept."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class Clock(_Part):
    kind: str
    start: UtcInstant
    speed: Annotated[float, Field(gt=0)]


class Provider(_Part):
    provider_id: Id
    name: str
    region: str
    resource_type: Literal["compute", "storage"]
    has_battery: bool
    subscriber_id: Id
    meter_id: Id
    silent: bool


class Event(_Part):
    source: str
    event_id: Id
    window_start: UtcInstant
    window_end: UtcInstant
    opt: Literal["optIn", "optOut"]


class EventSlot(_Part):
    start: UtcInstant
    end: UtcInstant
    target_kw: NonNegative
    covered_kw: NonNegative
    delivered_kw: float


class Order(_Part):
    order_id: Id
    provider_id: Id
    state: str
    power_kw: NonNegative
    window_start: UtcInstant
    window_end: UtcInstant
    payment: Literal["GBP", "CFT"]
    price_gbp_per_mwh: float | None
    cancelled_by: str | None
    reason: str | None


class ReProcurement(_Part):
    at: UtcInstant
    reason: str
    provider_id: Id
    gap_kw: NonNegative


class Procurement(_Part):
    procurement_id: Id
    status: str
    policy_version: str
    shortfall_kw: NonNegative
    slots: Annotated[list[EventSlot], Field(min_length=1)]
    orders: list[Order]
    re_procurements: list[ReProcurement]
    expected_cost_gbp: GbpString
    settled_cost_gbp: GbpString
    expected_carbon_avoided_kg: float
    delivered_carbon_avoided_kg: float


class SeriesSlot(_Part):
    start: UtcInstant
    baseline_kw: float
    planned_kw: float
    price_gbp_per_mwh: float
    carbon_g_per_kwh: float


class SeriesTotals(_Part):
    baseline_cost_gbp: GbpString
    planned_cost_gbp: GbpString
    baseline_carbon_kg: float
    planned_carbon_kg: float


class Series(_Part):
    """One load-shift profile: run-at-release (baseline) against the optimised plan, with the signals."""

    slot_minutes: Annotated[int, Field(gt=0)]
    slots: Annotated[list[SeriesSlot], Field(min_length=1)]
    totals: SeriesTotals


class LoadShift(_Part):
    fleet: Series
    by_provider: dict[str, Series]


class SettledProvider(_Part):
    provider_id: Id
    contracted_kwh: NonNegative
    delivered_kwh: float
    utilisation_pence: int
    shortfall_pence: int
    net_pence: int
    statement_csv: RelativePath
    statement_json: RelativePath
    statement_verified: bool


class Settlement(_Part):
    providers: list[SettledProvider]
    supplier_compensation_pence: dict[str, int]
    supplier_compensation_total_pence: int
    payments_total_pence: int


class TokenSeries(_Part):
    series_id: Id
    provider_id: Id
    minted: Count
    sold: Count
    redeemed: Count
    expired: Count
    outstanding: Count
    price_pence_per_token: Count


class Tokens(_Part):
    series: list[TokenSeries]
    bought_by_orchestrator: Count
    redeemed_by_orchestrator: Count


class Ledger(_Part):
    height: Count
    head_hash: Id
    verified: bool
    verify_summary: str


class Files(_Part):
    report: FileName
    statements: list[RelativePath]
    decisions: RelativePath
    market: RelativePath
    carbon: RelativePath


class DemoSummary(_Part):
    schema_: Literal["flexmarket-demo-summary/1"] = Field(alias="schema")
    date: IsoDate
    seed: int
    clock: Clock
    providers: Annotated[list[Provider], Field(min_length=1)]
    event: Event
    procurement: Procurement
    load_shift: LoadShift
    settlement: Settlement
    tokens: Tokens
    ledger: Ledger
    files: Files

    def provider(self, provider_id: str) -> Provider:
        return next(p for p in self.providers if p.provider_id == provider_id)


@dataclass(frozen=True)
class Problem:
    path: str  # where in the document, e.g. "procurement.slots[2].target_kw"
    message: str

    def __str__(self) -> str:
        return f"{self.path or '(document)'}: {self.message}"


class SummaryError(ValueError):
    """summary.json does not hold a valid flexmarket-demo-summary/1 document; `problems` says where and why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"summary.json is not a valid {SCHEMA_ID} document:\n{lines}")


def _path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _problem(error: Mapping[str, Any]) -> Problem:
    # Annotated validators put their function name in the location; it says nothing to the reader.
    loc = [part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
    message = "missing" if error["type"] == "missing" else str(error["msg"]).removeprefix("Value error, ")
    return Problem(_path(loc), message)


def parse_summary(doc: Mapping[str, Any]) -> DemoSummary:
    """The document as typed objects; `SummaryError` names every missing, ill-typed or inconsistent field."""
    if not isinstance(doc, Mapping):
        raise SummaryError([Problem("", f"a JSON object is required, not {type(doc).__name__}")])
    try:
        summary = DemoSummary.model_validate(dict(doc))
    except ValidationError as e:
        raise SummaryError([_problem(err) for err in e.errors()]) from None
    problems = list(_cross_checks(summary, doc))
    if problems:
        raise SummaryError(problems)
    return summary


def validate_summary(doc: Mapping[str, Any]) -> None:
    """Raise `SummaryError` unless `doc` is a complete, self-consistent flexmarket-demo-summary/1 document."""
    parse_summary(doc)


# --- the invariants beyond the shapes ---------------------------------------------------------------


def _cross_checks(s: DemoSummary, doc: Mapping[str, Any]) -> Iterator[Problem]:
    yield from _provider_references(s)
    yield from _windows(s)
    yield from _token_invariant(s)
    yield from _compensation_total(s)
    yield from _gbp_pairs(doc, "")


def _provider_references(s: DemoSummary) -> Iterator[Problem]:
    known: set[str] = set()
    for i, p in enumerate(s.providers):
        if p.provider_id in known:
            yield Problem(f"providers[{i}].provider_id", f"{p.provider_id!r} appears twice")
        known.add(p.provider_id)
    mentions = [
        *((f"procurement.orders[{i}].provider_id", o.provider_id) for i, o in enumerate(s.procurement.orders)),
        *(
            (f"procurement.re_procurements[{i}].provider_id", r.provider_id)
            for i, r in enumerate(s.procurement.re_procurements)
        ),
        *((f"load_shift.by_provider[{pid!r}]", pid) for pid in s.load_shift.by_provider),
        *((f"settlement.providers[{i}].provider_id", p.provider_id) for i, p in enumerate(s.settlement.providers)),
        *((f"tokens.series[{i}].provider_id", t.provider_id) for i, t in enumerate(s.tokens.series)),
    ]
    for path, pid in mentions:
        if pid not in known:
            yield Problem(path, f"{pid!r} is not one of the document's providers")


def _windows(s: DemoSummary) -> Iterator[Problem]:
    windows = [
        ("event", s.event.window_start, s.event.window_end),
        *((f"procurement.slots[{i}]", x.start, x.end) for i, x in enumerate(s.procurement.slots)),
        *((f"procurement.orders[{i}]", o.window_start, o.window_end) for i, o in enumerate(s.procurement.orders)),
    ]
    for path, start, end in windows:
        if parse_utc(end) <= parse_utc(start):
            yield Problem(path, f"ends ({end}) before it starts ({start})")
    yield from _in_order("procurement.slots", [x.start for x in s.procurement.slots])
    series = [("load_shift.fleet", s.load_shift.fleet)]
    series += [(f"load_shift.by_provider[{pid!r}]", x) for pid, x in s.load_shift.by_provider.items()]
    for path, x in series:
        yield from _in_order(f"{path}.slots", [slot.start for slot in x.slots])


def _in_order(path: str, starts: list[str]) -> Iterator[Problem]:
    times = [parse_utc(t) for t in starts]
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            yield Problem(f"{path}[{i}].start", f"{starts[i]} is not after the slot before it ({starts[i - 1]})")


def _token_invariant(s: DemoSummary) -> Iterator[Problem]:
    for i, t in enumerate(s.tokens.series):
        if t.minted != t.outstanding + t.redeemed + t.expired:
            yield Problem(
                f"tokens.series[{i}]",
                f"minted {t.minted} ≠ outstanding {t.outstanding} + redeemed {t.redeemed} + expired {t.expired}",
            )


def _compensation_total(s: DemoSummary) -> Iterator[Problem]:
    total = sum(s.settlement.supplier_compensation_pence.values())
    if total != s.settlement.supplier_compensation_total_pence:
        yield Problem(
            "settlement.supplier_compensation_total_pence",
            f"{s.settlement.supplier_compensation_total_pence} ≠ {total}, the sum of supplier_compensation_pence",
        )


def _gbp_pairs(node: Any, path: str) -> Iterator[Problem]:
    """Every `x_gbp` string beside an `x_pence` integer states the same amount."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and key.endswith("_gbp") and isinstance(value, str) and _GBP.fullmatch(value):
                pence = node.get(key.removesuffix("_gbp") + "_pence")
                if isinstance(pence, int) and not isinstance(pence, bool) and Decimal(value) * 100 != pence:
                    yield Problem(here, f"£{value} disagrees with {key.removesuffix('_gbp')}_pence = {pence}")
            yield from _gbp_pairs(value, here)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _gbp_pairs(value, f"{path}[{i}]")
