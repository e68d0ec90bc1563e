"""The demo's meters: what each site with an order draws, read half-hourly and signed by the meter operator.

Delivery is not "baseline minus contracted": a site's metered draw in the window is what its BPP's re-planned
schedule says it runs (the plan with its orders imposed, `GET /{platform}/providers/{id}/schedule`, read at the
window's start) with ±1% meter noise; the history the ledger's 10-of-10 baseline reads is the site's unshifted
(run-at-release) draw at the same half hours of the 20 days before, ±2%. Noise is seeded (`--seed`), so the same
seed gives the same readings. The readings go to the ledger's `POST /api/v1/metering/signed`, Ed25519-signed by
the meter operator's key (ledger/meter_data.py), as a supplier's meter data system would send them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from beckn.keys import load_or_create_keypair
from flexmarket.demo_network import Api
from grid.signals import GB, default_data_dir, load_region
from ledger.meter_data import READINGS_FORMAT, sign_readings

if TYPE_CHECKING:
    from flexmarket.demo import DemoRun
    from flexmarket.demo_network import DemoNetwork

HALF_HOUR = timedelta(minutes=30)
HISTORY_DAYS = 20
DELIVERING = ("ACCEPTED", "IN-PROGRESS", "COMPLETED")
DELIVERY_NOISE = 0.01
HISTORY_NOISE = 0.02


def _kw_at(schedule: dict[str, Any], t: datetime, key: str) -> float:
    """The schedule's `key` kW over the half hour from `t` (the mean of its slots inside it), to 0.1 kW: finer
    than that is the solver's tolerance, not the site's behaviour (the same seed gives the same readings)."""
    values = [float(s[key]) for s in schedule["slots"] if t <= datetime.fromisoformat(s["start"]) < t + HALF_HOUR]
    if not values:
        raise ValueError(f"the schedule of {schedule.get('provider_id')} has no slot at {t.isoformat()}")
    return round(sum(values) / len(values), 1)


def site_readings(
    *,
    morning: dict[str, Any],
    event: dict[str, Any],
    window: tuple[datetime, datetime],
    rng: np.random.Generator,
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """(readings to post, the window's per-half-hour record: baseline and metered kW)."""
    periods = []
    t = window[0]
    while t < window[1]:
        periods.append(t)
        t += HALF_HOUR
    readings: list[dict[str, str]] = []
    for d in range(HISTORY_DAYS, 0, -1):
        for p in periods:
            kw = _kw_at(morning, p, "baseline_kw") * (1 + HISTORY_NOISE * rng.standard_normal())
            readings.append({"period_start": (p - timedelta(days=d)).isoformat(), "energy_kwh": f"{kw / 2:.3f}"})
    record = []
    for p in periods:
        metered_kw = _kw_at(event, p, "planned_kw") * (1 + DELIVERY_NOISE * rng.standard_normal())
        readings.append({"period_start": p.isoformat(), "energy_kwh": f"{metered_kw / 2:.3f}"})
        record.append({"start": p.isoformat(), "metered_kw": round(metered_kw, 3)})
    return readings, record


def post_metering(net: DemoNetwork, run: DemoRun) -> dict[str, Any]:
    """Post every ordered site's readings, signed; returns meter id → {provider_id, periods}."""
    operator = net.manifest["participants"]["ledger"]["api_keys"]["meter_operator"]
    key = load_or_create_keypair(Path(operator["key_file"])).signing_private_key
    ledger = Api(f"{net.net.url('ledger')}/api/v1", operator["api_key"])
    view = net.bap("viewer").get(f"/procurements/{run.procurement_id}")
    meters = sorted({(o["provider_id"], o["meter_id"]) for o in view["orders"] if o["state"] in DELIVERING})
    rng = np.random.default_rng(run.options.seed)
    out: dict[str, Any] = {}
    for provider_id, meter_id in meters:
        readings, record = site_readings(
            morning=run.schedules_morning[provider_id],
            event=run.schedules_event[provider_id],
            window=(run.event_start, run.event_end),
            rng=rng,
        )
        payload = {"format": READINGS_FORMAT, "meter_id": meter_id, "correction": False, "readings": readings}
        body = {"payload": payload, "key_id": operator["signing_key_id"], "signature": sign_readings(payload, key)}
        ledger.post("/metering/signed", body)
        out[meter_id] = {"provider_id": provider_id, "periods": record}
    return out


def post_prices(net: DemoNetwork, day_start: datetime, until: datetime) -> int:
    """The replayed day's Elexon system prices (imbalance and market index, per half hour up to `until`) reach the
    ledger through its API, as finance would load them: shortfall charges and supplier compensation read them."""
    midnight = day_start.replace(hour=0, minute=0)
    series = load_region(GB, midnight, until, default_data_dir())
    rows = []
    for i in range(len(series)):
        imbalance = series.imbalance_price_gbp_per_mwh
        rows.append(
            {
                "period_start": (series.start_utc + i * HALF_HOUR).isoformat(),
                "market_index_price_gbp_per_mwh": f"{series.price_gbp_per_mwh[i]:.2f}",
                **({"imbalance_price_gbp_per_mwh": f"{imbalance[i]:.2f}"} if imbalance is not None else {}),
            }
        )
    net.ledger("finance").post("/prices", {"source": "Elexon BMRS system prices (replayed)", "prices": rows})
    return len(rows)
