"""The demo's network: which data centres and batteries take part, and the grid event of the replayed day.

Every data centre is a BPP platform of its own (its own subscriber id and Ed25519 keys), onboarded through the
registry's `/subscribe` when its BPP starts; its compute agent plans a job mix of critical inference (never moved),
flexible training and best-effort batch (`bpp/workload.py`: GPU jobs drawn from the published Alibaba 2023
statistics, CPU batch jobs from GAIA's PAI week shipped in `data/jobs/`) on signals forecast from the days before
(`bpp/forecast.py`). Two data centres have batteries; one more site is a battery only, sold by a storage agent.
The GB data has no regional carbon series, so every region shares the national one (site region "GB").

The silent provider is a separate data centre on a BPP process of its own (:data:`SILENT`), cheap enough to be
chosen first: the demo stops that process mid-procurement, and the orchestrator must replace it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bpp.catalog import EXAMPLE_BATTERY, example_storage_agent, series_max_tokens
from grid.signals import GB, coverage, default_data_dir

JOBS_DIR = Path(__file__).resolve().parent.parent / "data" / "jobs"
EVENT_START_HOUR = 17  # the evening peak, 17:00–19:00 (UTC = local time in January)
EVENT_HOURS = 2


@dataclass(frozen=True)
class DataCentre:
    provider_id: str
    name: str
    region: str  # NESO region code (the registry's city code)
    region_name: str
    baseline_kw: float  # the site's typical draw
    battery: bool = False


FLEET: tuple[DataCentre, ...] = (
    DataCentre("dc-docklands", "Docklands DC", "GB-R13", "London", 4000, battery=True),
    DataCentre("dc-slough", "Slough DC", "GB-R14", "South East England", 2000),
    DataCentre("dc-manchester", "Manchester DC", "GB-R3", "North West England", 3000, battery=True),
    DataCentre("dc-cardiff", "Cardiff DC", "GB-R7", "South Wales", 1200),
    DataCentre("dc-edinburgh", "Edinburgh DC", "GB-R2", "South Scotland", 1000),
    DataCentre("dc-leeds", "Leeds DC", "GB-R5", "Yorkshire", 1400),
    DataCentre("dc-birmingham", "Birmingham DC", "GB-R8", "West Midlands", 1800),
)
#: the data centres' batteries: 3 MWh, 1.5 MW each way (the example's, scaled), 90% round trip, £8/MWh wear — big
#: enough that an hour's offer can take a whole token (1 MWh in one hour is 1,000 kW)
DATA_CENTRE_BATTERY: dict[str, Any] = {
    **EXAMPLE_BATTERY,
    "energy_kwh": 3000,
    "charge_power_kw": 1500,
    "discharge_power_kw": 1500,
}
BATTERY_SITE = DataCentre("bess-thurrock", "Thurrock Battery", "GB-R10", "East England", 300)
SILENT = DataCentre("dc-reading", "Reading DC (goes silent)", "GB-R12", "South England", 1500)


def replayable(day: date, data_dir: Path | None = None) -> str | None:
    """Why `day` cannot be replayed with the grid data at hand (None: it can): the day itself and at least a
    week before it, for the forecasts, must be in the data (`data/grid/`, or `../shared/data/grid/`)."""
    first, end = coverage(GB, data_dir or default_data_dir())
    start = datetime.combine(day, time(0), tzinfo=UTC)
    if start - timedelta(days=7) < first or start + timedelta(days=1) > end:
        return (
            f"{day.isoformat()}: the grid data covers {first:%Y-%m-%d} to {end - timedelta(seconds=1):%Y-%m-%d}; "
            "the day and the week before it must be inside (default 2023-01-24)"
        )
    return None


def subscriber_id(provider_id: str) -> str:
    return f"{provider_id}.bpp.flexmarket.local"


def _agent(dc: DataCentre, *, seed: int, n_jobs: int) -> dict[str, Any]:
    site: dict[str, Any] = {
        "id": f"{dc.provider_id}-site",
        "region": "GB",  # the national carbon and price series: the data has no regional ones
        "capacity_kw": dc.baseline_kw * 2.0,
        "baseline_kw": dc.baseline_kw * 0.35,  # critical inference and facility load: never moved
    }
    if dc.battery:
        site["battery"] = dict(DATA_CENTRE_BATTERY)
    return {
        "horizon_slots": 96,
        "signals": {"source": "naive_week"},
        "sites": [site],
        "jobs": {"source": "mixed", "n_jobs": n_jobs, "seed": seed, "power_scale": 150.0, "jobs_dir": str(JOBS_DIR)},
        "actions": {"max_deferral_min": 240},
        "objective": {"kind": "cost_x_carbon", "carbon_reference_g_per_kwh": 150},
        # one-hour offer windows on the hour, so a request over any whole hours can be met from them
        "offers": {"window_slots": 2, "margin_fraction": 0.1, "margin_gbp_per_mwh": 5},
    }


def _series(dc: DataCentre, day: datetime, price_gbp_per_mwh: float) -> dict[str, Any]:
    """Tokens over the evening peak the provider declares it can always shed (a fifth of its draw)."""
    valid_from = day + timedelta(hours=16)
    valid_to = day + timedelta(hours=20)
    capacity_kw = round(dc.baseline_kw * 0.25, -1)
    return {
        "id": f"{dc.provider_id}-cft-{day:%Y%m%d}-evening",
        "valid_from": valid_from.isoformat(),
        "valid_to": valid_to.isoformat(),
        "declared_capacity_kw": capacity_kw,
        "tokens": series_max_tokens(capacity_kw, valid_from, valid_to),
        "price_gbp_per_token": str(Decimal(str(price_gbp_per_mwh)).quantize(Decimal("0.01"))),
    }


def _hourly(agent: dict[str, Any]) -> dict[str, Any]:
    agent["offers"] = {**agent.get("offers", {}), "window_slots": 2}
    return agent


def _platform(dc: DataCentre, providers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "subscriber_id": subscriber_id(dc.provider_id),
        "slug": dc.provider_id,
        "name": dc.name,
        "city_codes": [dc.region],
        "country_code": "GBR",
        "providers": providers,
    }


def _site(dc: DataCentre, meter_no: int) -> dict[str, Any]:
    return {
        "id": f"{dc.provider_id}-site",
        "region": dc.region,
        "meter_id": f"MTR-D{meter_no:03d}",
        "baseline_kw": dc.baseline_kw,
        "name": f"{dc.name}, {dc.region_name}",
    }


def fleet(n_data_centres: int) -> list[DataCentre]:
    if not 3 <= n_data_centres <= len(FLEET):
        raise ValueError(f"--providers: between 3 and {len(FLEET)} data centres")
    return list(FLEET[:n_data_centres])


def network_providers(day: datetime, *, n_data_centres: int, seed: int, n_jobs: int) -> dict[str, Any]:
    """The main BPP's providers file: one platform per data centre and one for the battery site."""
    platforms = []
    for i, dc in enumerate(fleet(n_data_centres)):
        provider: dict[str, Any] = {
            "id": dc.provider_id,
            "name": dc.name,
            "sites": [_site(dc, i + 1)],
            "offers": [],
            "agent": _agent(dc, seed=seed * 100 + i, n_jobs=n_jobs),
        }
        if dc.battery:  # the two sites with batteries sell token series over the evening peak
            provider["cft_series"] = [_series(dc, day, 28.0 + i)]
        platforms.append(_platform(dc, [provider]))
    storage = {
        "id": BATTERY_SITE.provider_id,
        "name": BATTERY_SITE.name,
        "sites": [_site(BATTERY_SITE, 90)],
        "offers": [],
        "agent": _hourly(example_storage_agent(f"{BATTERY_SITE.provider_id}-site")),
    }
    platforms.append(_platform(BATTERY_SITE, [storage]))
    return {"platforms": platforms}


def silent_providers(day: datetime) -> dict[str, Any]:
    """The silent data centre's own BPP: one static evening offer, cheaper than the fleet's, so it is chosen."""
    window_start = day + timedelta(hours=16)
    offer = {
        "id": f"{SILENT.provider_id}-evening",
        "location_id": f"{SILENT.provider_id}-site",
        "name": "Reading evening turn-down",
        "window_start": window_start.isoformat(),
        "window_end": (window_start + timedelta(hours=4)).isoformat(),
        "available_kw": 500,
        "min_kw": 100,
        "max_kw": 500,
        "price_gbp_per_mwh": 15,
        "resource_type": "compute",
        "min_duration_min": 30,
        "max_duration_min": 240,
        "response_time_s": 300,
    }
    provider = {"id": SILENT.provider_id, "name": SILENT.name, "sites": [_site(SILENT, 99)], "offers": [offer]}
    return {"platforms": [_platform(SILENT, [provider])]}
