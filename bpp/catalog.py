"""The BPP's flexibility catalog and commitment rules (pure: plain data in, plain data out).

A BPP *platform* is one Beckn subscriber; it hosts several *providers* (data-centre operators), each
with sites (locations) and flexibility offers. Until the compute agent derives offers from its own
schedule (bpp/agent.py), the catalog is read from a JSON config file — see `example_config()` and
README "Provider catalog file".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from bpp.agent_config import provider_kind
from kernel import clock
from schemas.flex import FlexOfferSpec, FlexRequest

SLOT = timedelta(minutes=30)


class CatalogConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Site:
    id: str
    region: str  # NESO carbon-intensity region code, e.g. GB-R13 (London)
    meter_id: str
    baseline_kw: float
    name: str | None = None


@dataclass(frozen=True)
class CftSeriesConfig:
    """A Compute Flex Token series the provider sells (`cft_series` in the providers file): minted on the
    ledger against `declared_capacity_kw` over [valid_from, valid_to), `tokens` at most what that backs."""

    id: str
    valid_from: datetime
    valid_to: datetime
    declared_capacity_kw: float
    tokens: int
    price_gbp_per_token: Decimal


@dataclass(frozen=True)
class ProviderConfig:
    id: str
    name: str
    sites: tuple[Site, ...]
    offers: tuple[FlexOfferSpec, ...]
    # Optional compute/storage agent configuration (bpp/agent.py); when present, offers are derived
    # from the agent's optimal schedule instead of being read from `offers`.
    agent: dict[str, Any] | None = None
    cft_series: tuple[CftSeriesConfig, ...] = ()

    def site(self, site_id: str) -> Site | None:
        return next((s for s in self.sites if s.id == site_id), None)

    def offer(self, item_id: str) -> FlexOfferSpec | None:
        return next((o for o in self.offers if o.item_id == item_id), None)


@dataclass(frozen=True)
class PlatformConfig:
    subscriber_id: str
    slug: str  # URL path segment: the platform's Beckn URL is <BPP base URL>/<slug>
    name: str
    city_codes: tuple[str, ...]
    country_code: str
    providers: tuple[ProviderConfig, ...]

    def provider(self, provider_id: str) -> ProviderConfig | None:
        return next((p for p in self.providers if p.id == provider_id), None)


def _dt(text: str, where: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError) as exc:
        raise CatalogConfigError(f"{where}: {text!r} is not an ISO 8601 time") from exc
    if ts.tzinfo is None:
        raise CatalogConfigError(f"{where}: {text!r} needs a UTC offset")
    return ts.astimezone(UTC)


def _offer(d: dict[str, Any], provider_id: str, where: str) -> FlexOfferSpec:
    try:
        o = FlexOfferSpec(
            item_id=d["id"],
            provider_id=provider_id,
            location_id=d["location_id"],
            window_start=_dt(d["window_start"], f"{where}.window_start"),
            window_end=_dt(d["window_end"], f"{where}.window_end"),
            available_kw=float(d["available_kw"]),
            min_kw=float(d.get("min_kw", 0)),
            max_kw=float(d.get("max_kw", d["available_kw"])),
            price_gbp_per_mwh=float(d["price_gbp_per_mwh"]),
            resource_type=d.get("resource_type", "compute"),
            min_duration_min=int(d.get("min_duration_min", 30)),
            max_duration_min=int(d.get("max_duration_min", 240)),
            response_time_s=int(d.get("response_time_s", 300)),
            baseline_method=d.get("baseline_method", "10_of_10"),
            availability_price_gbp_per_mw_h=d.get("availability_price_gbp_per_mw_h"),
            expected_carbon_g_per_kwh=d.get("expected_carbon_g_per_kwh"),
            marginal_cost_gbp_per_mwh=d.get("marginal_cost_gbp_per_mwh"),
            policy_version=d.get("policy_version", "p415-v1"),
            name=d.get("name"),
        )
    except KeyError as exc:
        raise CatalogConfigError(f"{where}: missing {exc.args[0]!r}") from exc
    check_offer(o, where)
    return o


def check_offer(o: FlexOfferSpec, where: str = "offer") -> None:
    if o.window_end <= o.window_start:
        raise CatalogConfigError(f"{where}: window_end must be after window_start")
    if not (0 <= o.min_kw <= o.max_kw <= o.available_kw) or o.available_kw <= 0:
        raise CatalogConfigError(f"{where}: need 0 ≤ min_kw ≤ max_kw ≤ available_kw and available_kw > 0")
    if o.resource_type not in ("compute", "storage"):
        raise CatalogConfigError(f"{where}: resource_type must be compute or storage")


TOKEN_ENERGY_KWH = 1000  # one token = 1 MWh of callable load reduction


def series_max_tokens(declared_capacity_kw: float, valid_from: datetime, valid_to: datetime) -> int:
    """The ledger's rule (ledger/cft.py `max_tokens`), restated: floor(W × window hours / 1 MWh), with the
    capacity in whole watts as the ledger stores it. The ledger has the final word when the series is created."""
    capacity_w = int(Decimal(str(declared_capacity_kw)) * 1000)
    seconds = int((valid_to - valid_from).total_seconds())
    return (capacity_w * seconds) // (3600 * TOKEN_ENERGY_KWH * 1000)


def _series(d: Any, where: str) -> CftSeriesConfig:
    if not isinstance(d, dict):
        raise CatalogConfigError(f"{where} must be an object")
    try:
        sid, tokens, capacity, price_text = d["id"], d["tokens"], d["declared_capacity_kw"], d["price_gbp_per_token"]
        valid_from = _dt(d["valid_from"], f"{where}.valid_from")
        valid_to = _dt(d["valid_to"], f"{where}.valid_to")
    except KeyError as exc:
        raise CatalogConfigError(f"{where}: missing {exc.args[0]!r}") from exc
    if not isinstance(sid, str) or not sid or ":" in sid or len(sid) > 128:
        raise CatalogConfigError(f"{where}.id: a non-empty id of at most 128 characters without ':'")
    if valid_to <= valid_from:
        raise CatalogConfigError(f"{where}.valid_to: must be after valid_from")
    if (
        isinstance(capacity, bool)
        or not isinstance(capacity, int | float)
        or not math.isfinite(capacity)
        or capacity <= 0
    ):
        raise CatalogConfigError(f"{where}.declared_capacity_kw: must be a positive number of kW")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0:
        raise CatalogConfigError(f"{where}.tokens: must be a positive whole number")
    most = series_max_tokens(float(capacity), valid_from, valid_to)
    if tokens > most:
        raise CatalogConfigError(
            f"{where}.tokens: {tokens} is more than the {most} that {capacity:g} kW over "
            f"{(valid_to - valid_from).total_seconds() / 3600:g} h backs (1 token = 1 MWh)"
        )
    try:
        price = Decimal(str(price_text))
    except InvalidOperation as exc:
        raise CatalogConfigError(f"{where}.price_gbp_per_token: {price_text!r} is not a number") from exc
    if isinstance(price_text, bool) or not price.is_finite() or price < 0 or price != price.quantize(Decimal("0.01")):
        raise CatalogConfigError(f"{where}.price_gbp_per_token: a non-negative amount in whole pence")
    return CftSeriesConfig(sid, valid_from, valid_to, float(capacity), tokens, price.quantize(Decimal("0.01")))


def _series_list(raw_series: Any, where: str) -> tuple[CftSeriesConfig, ...]:
    if raw_series is None:
        return ()
    if not isinstance(raw_series, list):
        raise CatalogConfigError(f"{where}.cft_series must be a list")
    series = tuple(_series(d, f"{where}.cft_series[{k}]") for k, d in enumerate(raw_series))
    ids = [s.id for s in series]
    if len(set(ids)) != len(ids):
        raise CatalogConfigError(f"{where}.cft_series: series ids must be unique")
    return series


def parse_config(data: dict[str, Any]) -> list[PlatformConfig]:
    platforms = data.get("platforms")
    if not isinstance(platforms, list) or not platforms:
        raise CatalogConfigError("config needs a non-empty 'platforms' list")
    out = []
    for i, p in enumerate(platforms):
        where = f"platforms[{i}]"
        providers = []
        for j, pr in enumerate(p.get("providers", [])):
            pw = f"{where}.providers[{j}]"
            sites = tuple(
                Site(
                    id=s["id"],
                    region=s["region"],
                    meter_id=s["meter_id"],
                    baseline_kw=float(s["baseline_kw"]),
                    name=s.get("name"),
                )
                for s in pr.get("sites", [])
            )
            offers = tuple(_offer(o, pr["id"], f"{pw}.offers[{k}]") for k, o in enumerate(pr.get("offers", [])))
            site_ids = {s.id for s in sites}
            for o in offers:
                if o.location_id not in site_ids:
                    raise CatalogConfigError(f"{pw}: offer {o.item_id} names unknown site {o.location_id}")
            agent = pr.get("agent")
            if agent is not None:
                _check_agent(agent, site_ids, f"{pw}.agent")
            providers.append(
                ProviderConfig(
                    id=pr["id"],
                    name=pr.get("name", pr["id"]),
                    sites=sites,
                    offers=offers,
                    agent=agent,
                    cft_series=_series_list(pr.get("cft_series"), pw),
                )
            )
        try:
            out.append(
                PlatformConfig(
                    subscriber_id=p["subscriber_id"],
                    slug=p["slug"],
                    name=p.get("name", p["slug"]),
                    city_codes=tuple(p.get("city_codes") or [p.get("city_code", "GB-R13")]),
                    country_code=p.get("country_code", "GBR"),
                    providers=tuple(providers),
                )
            )
        except KeyError as exc:
            raise CatalogConfigError(f"{where}: missing {exc.args[0]!r}") from exc
        if out[-1].slug in RESERVED_SLUGS:
            raise CatalogConfigError(f"{where}.slug: {out[-1].slug!r} is reserved (the BPP's /{out[-1].slug}/… API)")
    series_ids = [s.id for p in out for pr in p.providers for s in pr.cft_series]
    if len(set(series_ids)) != len(series_ids):  # the ledger's series ids are one namespace
        raise CatalogConfigError("cft_series: a series id is used by more than one provider")
    return out


RESERVED_SLUGS = frozenset({"admin"})  # URL path segments the BPP serves itself (bpp/admin.py)


def _check_agent(agent: Any, site_ids: set[str], where: str) -> None:
    """An agent config plans the provider's own sites, and fits its kind (one planner per site)."""
    if not isinstance(agent, dict):
        raise CatalogConfigError(f"{where} must be an object")
    unknown = {s.get("id") for s in agent.get("sites") or [] if isinstance(s, dict)} - site_ids
    if unknown or not agent.get("sites"):
        raise CatalogConfigError(f"{where}: sites must be the provider's sites; unknown {unknown}")
    try:
        provider_kind(agent, where)
    except ValueError as exc:
        raise CatalogConfigError(str(exc)) from exc


def load_config(path: Path) -> list[PlatformConfig]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CatalogConfigError(f"cannot read providers file {path}: {exc}") from exc
    return parse_config(data)


# -- matching and commitments ---------------------------------------------------------------------
def overlaps(a_start: datetime, a_end: datetime, b_start: datetime, b_end: datetime) -> bool:
    return a_start < b_end and b_start < a_end


def matching_offers(offers: list[FlexOfferSpec], req: FlexRequest, region_of: dict[str, str]) -> list[FlexOfferSpec]:
    """Offers overlapping the wanted window (DESIGN: 'A BPP answers with only the offers that overlap
    the window'), of the wanted resource type and region, at or under the maximum price."""
    out = []
    for o in offers:
        if not overlaps(o.window_start, o.window_end, req.window_start, req.window_end):
            continue
        if req.resource_type and o.resource_type != req.resource_type:
            continue
        if req.region and region_of.get(o.location_id) != req.region:
            continue
        if req.max_price_gbp_per_mwh is not None and o.price_gbp_per_mwh > req.max_price_gbp_per_mwh:
            continue
        out.append(o)
    return out


def slot_starts(start: datetime, end: datetime) -> list[datetime]:
    """30-minute UTC slots covering [start, end) (DESIGN "Time")."""
    first = start.astimezone(UTC).replace(second=0, microsecond=0)
    first -= timedelta(minutes=first.minute % 30)
    out, t = [], first
    while t < end:
        out.append(t)
        t += SLOT
    return out


@dataclass(frozen=True)
class Commitment:
    power_kw: float
    window_start: datetime
    window_end: datetime


class CommitmentError(ValueError):
    """Why an order cannot be taken; `kind` maps to a Beckn error code."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def check_order_fits_offer(o: FlexOfferSpec, power_kw: float, start: datetime, end: datetime) -> None:
    if start < o.window_start or end > o.window_end:
        raise CommitmentError(
            "fulfillment_unavailable",
            f"window {start.isoformat()}–{end.isoformat()} is outside offer {o.item_id}'s "
            f"{o.window_start.isoformat()}–{o.window_end.isoformat()}",
        )
    if start.minute % 30 or end.minute % 30 or start.second or end.second or start.microsecond or end.microsecond:
        raise CommitmentError("fulfillment_unavailable", "window must be aligned to 30-minute slots")
    duration_min = (end - start).total_seconds() / 60
    if not (o.min_duration_min <= duration_min <= o.max_duration_min):
        raise CommitmentError(
            "fulfillment_unavailable",
            f"duration {duration_min:g} min outside {o.min_duration_min}–{o.max_duration_min} min",
        )
    if power_kw < o.min_kw or power_kw > o.max_kw:
        raise CommitmentError(
            "quantity_unavailable", f"{power_kw:g} kW outside offer {o.item_id}'s {o.min_kw:g}–{o.max_kw:g} kW"
        )


def check_capacity(o: FlexOfferSpec, committed: list[Commitment], new: Commitment) -> None:
    """Invariant: in every slot, Σ committed kW on this offer ≤ its available kW."""
    for slot in slot_starts(new.window_start, new.window_end):
        used = sum(c.power_kw for c in committed if c.window_start <= slot < c.window_end)
        if used + new.power_kw > o.available_kw + 1e-9:
            raise CommitmentError(
                "quantity_unavailable",
                f"offer {o.item_id}: {used:g} kW already committed at {slot.isoformat()}; "
                f"{new.power_kw:g} kW more exceeds the {o.available_kw:g} kW available",
            )


# -- a generated catalog for `flexmarket up` / `demo` ----------------------------------------------
PROVIDER_NAMES = [
    "DC North",
    "DC Docklands",
    "DC Slough",
    "DC Thames Valley",
    "DC Croydon",
    "DC Enfield",
    "DC Park Royal",
    "DC Hayes",
    "DC Dartford",
    "DC Watford",
]


def example_config(
    n_providers: int,
    *,
    now: datetime | None = None,
    platforms: int = 1,
    city_code: str = "GB-R13",
    base_subscriber: str = "bpp.flexmarket.local",
    agents: bool = False,
) -> dict[str, Any]:
    """Providers with offers for tomorrow's evening peak (16:00–20:00 UTC) and the next morning.

    Prices and sizes vary per provider so that choosing among them matters. With `platforms` > 1
    the providers are spread over that many BPP subscribers (each its own key and URL). With `agents`,
    each provider's offers are derived by its compute agent (example_agent) instead, the first
    provider's site also has a battery its compute agent co-optimises (a site with both), and one
    more provider, ``bess-01``, is a battery-only site sold by a storage agent (example_storage_agent),
    so a search shows storage offers beside compute ones.
    """
    now = (now or clock.now()).astimezone(UTC)
    day = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    out: list[dict[str, Any]] = []
    for p in range(platforms):
        slug = f"dc-platform-{p + 1}" if platforms > 1 else "dc-platform"
        out.append(
            {
                "subscriber_id": f"{slug}.{base_subscriber}",
                "slug": slug,
                "name": f"Data-centre platform {p + 1}",
                "city_codes": [city_code],
                "country_code": "GBR",
                "providers": [],
            }
        )
    for i in range(n_providers):
        pid = f"dc-{i + 1:02d}"
        name = PROVIDER_NAMES[i % len(PROVIDER_NAMES)] + ("" if i < len(PROVIDER_NAMES) else f" {i + 1}")
        site: dict[str, Any] = {
            "id": f"{pid}-site",
            "region": city_code,
            "meter_id": f"MTR-{i + 1:04d}",
            "baseline_kw": 2000 + 400 * (i % 5),
            "name": f"{name} hall A",
        }
        available = 600 + 200 * (i % 4)
        offers = [
            {
                "id": f"{pid}-evening-peak",
                "location_id": site["id"],
                "name": f"{name} evening peak turn-down",
                "window_start": (day + timedelta(hours=16)).isoformat(),
                "window_end": (day + timedelta(hours=20)).isoformat(),
                "available_kw": available,
                "min_kw": 100,
                "max_kw": available,
                "price_gbp_per_mwh": 150 + 15 * ((i * 7) % 6),
                "resource_type": "compute",
                "min_duration_min": 30,
                "max_duration_min": 240,
                "response_time_s": 300,
                "expected_carbon_g_per_kwh": 180 + 5 * (i % 7),
                "marginal_cost_gbp_per_mwh": 120 + 10 * (i % 5),
            },
            {
                "id": f"{pid}-morning",
                "location_id": site["id"],
                "name": f"{name} morning turn-down",
                "window_start": (day + timedelta(days=1, hours=6)).isoformat(),
                "window_end": (day + timedelta(days=1, hours=9)).isoformat(),
                "available_kw": available // 2,
                "min_kw": 50,
                "max_kw": available // 2,
                "price_gbp_per_mwh": 110 + 10 * (i % 4),
                "resource_type": "compute",
                "min_duration_min": 30,
                "max_duration_min": 180,
                "response_time_s": 600,
            },
        ]
        provider: dict[str, Any] = {"id": pid, "name": name, "sites": [site], "offers": offers}
        if not agents:
            provider["cft_series"] = [example_series(pid, offers[0])]
        if agents:
            provider["offers"] = []
            provider["agent"] = example_agent(site["id"], float(site["baseline_kw"]), seed=i)
            if i == 0:
                provider["agent"]["sites"][0]["battery"] = dict(EXAMPLE_BATTERY)
        out[i % platforms]["providers"].append(provider)
    if agents:
        out[n_providers % platforms]["providers"].append(example_storage_provider(city_code))
    return {"platforms": out}


def network_config(n_providers: int, *, platforms: int = 1, city_code: str = "GB-R13") -> dict[str, Any]:
    """What `flexmarket up` hosts: the example providers with static offers, except that the first is a site
    with both compute and a battery, planned by one compute agent (a 150-job mix, so start-up stays quick), and
    one more, ``bess-01``, is a battery-only site sold by a storage agent — so a newcomer's first search shows
    storage offers beside compute ones, from a planner per site."""
    config = example_config(n_providers, platforms=platforms, city_code=city_code)
    first = config["platforms"][0]["providers"][0]
    site = first["sites"][0]
    first["offers"] = []
    first.pop("cft_series", None)  # a series is declared beside static offers (example_series)
    first["agent"] = example_agent(site["id"], float(site["baseline_kw"]), seed=0, n_jobs=150)
    first["agent"]["sites"][0]["battery"] = dict(EXAMPLE_BATTERY)
    config["platforms"][n_providers % platforms]["providers"].append(example_storage_provider(city_code))
    return config


def example_series(provider_id: str, evening: dict[str, Any]) -> dict[str, Any]:
    """One token series over the provider's evening-peak offer window: its available kW declared, as many tokens
    as that backs over the window (floor(kW × h / 1000)), at 90% of the offer's price per MWh."""
    valid_from, valid_to = (
        datetime.fromisoformat(evening["window_start"]),
        datetime.fromisoformat(evening["window_end"]),
    )
    capacity_kw = float(evening["available_kw"])
    return {
        "id": f"{provider_id}-cft-{valid_from:%Y%m%d}-evening",
        "valid_from": evening["window_start"],
        "valid_to": evening["window_end"],
        "declared_capacity_kw": capacity_kw,
        "tokens": series_max_tokens(capacity_kw, valid_from, valid_to),
        "price_gbp_per_token": str(
            (Decimal(str(evening["price_gbp_per_mwh"])) * Decimal("0.9")).quantize(Decimal("0.01"))
        ),
    }


#: the example sites' battery: 2 MWh, 1 MW each way, 90% round trip, £8/MWh wear, kept 10–90% full
EXAMPLE_BATTERY: dict[str, Any] = {
    "energy_kwh": 2000,
    "charge_power_kw": 1000,
    "discharge_power_kw": 1000,
    "round_trip_efficiency": 0.9,
    "degradation_gbp_per_mwh": 8,
}


def example_storage_provider(city_code: str) -> dict[str, Any]:
    """A battery-only provider: one site with 300 kW of other load and a 2 MWh battery that may
    export up to 500 kW at 90% of the import price, planned and sold by a storage agent."""
    site: dict[str, Any] = {
        "id": "bess-01-site",
        "region": city_code,
        "meter_id": "MTR-B001",
        "baseline_kw": 300,
        "name": "Battery Barking",
    }
    return {
        "id": "bess-01",
        "name": "Battery Barking",
        "sites": [site],
        "offers": [],
        "agent": example_storage_agent(site["id"]),
    }


def example_storage_agent(site_id: str, other_load_kw: float = 300.0) -> dict[str, Any]:
    """A storage agent for one GB battery site: 48 h horizon, two-hour windows priced at marginal
    cost + 10% + £5/MWh (cost = energy bought and sold plus wear, re-solved per offered level)."""
    return {
        "kind": "storage",
        "horizon_slots": 96,
        "signals": {"source": "actual"},
        "sites": [
            {
                "id": site_id,
                "region": "GB",
                "baseline_kw": other_load_kw,
                "battery": dict(EXAMPLE_BATTERY),
                "export": {"limit_kw": 500, "price_fraction": 0.9},
            }
        ],
        "offers": {"window_slots": 4, "margin_fraction": 0.1, "margin_gbp_per_mwh": 5},
    }


def example_agent(site_id: str, baseline_kw: float, seed: int = 0, n_jobs: int = 600) -> dict[str, Any]:
    """A compute agent for one GB site: a real job mix (Alibaba GPU 2023 trace, ../shared/data/jobs, or
    its synthetic stand-in when that is absent), 48 h horizon, two-hour offer windows priced at marginal
    cost + 10% + £5/MWh. One trace task stands for a training run of `power_scale` such pods, so the
    flexible load is data-centre sized (hundreds of kW) next to an inflexible 35% of `baseline_kw`."""
    return {
        "horizon_slots": 96,
        "signals": {"source": "actual"},
        "sites": [{"id": site_id, "region": "GB", "capacity_kw": baseline_kw * 2.0, "baseline_kw": baseline_kw * 0.35}],
        "jobs": {"source": "alibaba", "n_jobs": n_jobs, "seed": seed, "power_scale": 150.0},
        "actions": {"max_deferral_min": 240},
        "objective": {"kind": "cost_x_carbon", "carbon_reference_g_per_kwh": 150},
        "offers": {"window_slots": 4, "margin_fraction": 0.1, "margin_gbp_per_mwh": 5},
    }


__all__ = [
    "CatalogConfigError",
    "CftSeriesConfig",
    "Commitment",
    "CommitmentError",
    "PlatformConfig",
    "ProviderConfig",
    "Site",
    "check_capacity",
    "check_order_fits_offer",
    "example_config",
    "example_series",
    "example_storage_agent",
    "load_config",
    "matching_offers",
    "network_config",
    "parse_config",
    "series_max_tokens",
    "slot_starts",
]
