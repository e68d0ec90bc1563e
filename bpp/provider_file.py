"""A data centre's provider file: the providers-file entry for one provider (README "Provider catalog
file"), as `flexmarket provider init` writes it, `validate` checks it and `join` sends it to a BPP's admin
API (bpp/admin.py).

Shape: ``{"id", "name", "sites": [{"id", "region", "meter_id", "baseline_kw", "name"}], "agent": {…}}``
where ``agent`` is a compute agent's config (:mod:`bpp.agent_config`, :meth:`bpp.agent.ComputeAgent.from_config`);
a provider without an agent lists static ``"offers"`` instead. Keys starting with ``$`` (``"$comment"``) are
notes for the operator and are ignored.

Pure: plain data in, plain data out; every problem is reported with the field it is in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bpp.agent_config import ProviderKind, battery_from_config, objective_from, offer_settings_from, provider_kind
from bpp.catalog import CatalogConfigError, ProviderConfig, parse_config
from bpp.domain import MARKET_SLOT_MINUTES, PLAN_SLOT_MINUTES, ControlActions, minutes_to_slots
from bpp.offers import OfferSettings
from grid.signals import SLOTS_PER_DAY
from schemas.limits import MAX_ID_CHARS, MAX_KW, MAX_NAME_CHARS, PRINTABLE_PATTERN, check_text

JOB_SOURCES = ("alibaba", "gaia", "mixed", "synthetic")
SIGNAL_SOURCES = ("actual", "gbm", "naive_day", "naive_week")
MAX_HORIZON_SLOTS = 7 * SLOTS_PER_DAY
MAX_JOBS = 5000
MAX_SITES = 50
_PROVIDER_KEYS = {"id", "name", "sites", "agent", "offers"}
_SITE_KEYS = {"id", "region", "meter_id", "baseline_kw", "name"}
_AGENT_KEYS = {
    "kind",
    "horizon_slots",
    "slot_minutes",
    "signals",
    "sites",
    "jobs",
    "actions",
    "objective",
    "offers",
    "solver",
}
_AGENT_SITE_KEYS = {"id", "region", "capacity_kw", "baseline_kw", "solar", "battery", "grid_import_limit_kw", "export"}
_ID = re.compile(PRINTABLE_PATTERN)


@dataclass(frozen=True)
class FieldError:
    field: str  # dotted path, e.g. "agent.sites[0].capacity_kw"
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ProviderFileError(ValueError):
    """The provider file has problems; ``errors`` names each one's field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def parse_provider(data: Any) -> ProviderConfig:
    """The provider a file describes, or :class:`ProviderFileError` listing every problem found."""
    errors = check_provider(data)
    if errors:
        raise ProviderFileError(errors)
    clean = without_notes(data)
    try:
        platforms = parse_config({"platforms": [{"subscriber_id": "-", "slug": "-", "providers": [clean]}]})
    except (CatalogConfigError, KeyError, TypeError, ValueError) as exc:
        raise ProviderFileError([FieldError("offers", str(exc).replace("platforms[0].providers[0].", ""))]) from None
    return platforms[0].providers[0]


def check_provider(data: Any) -> list[FieldError]:
    """Every problem with a provider file, each naming its field (empty: the file is valid)."""
    if not isinstance(data, Mapping):
        return [FieldError("(file)", "must be a JSON object")]
    data = without_notes(data)
    errors = _unknown(data, _PROVIDER_KEYS, "")
    _check_id(data.get("id"), "id", errors)
    if "name" in data and not _is_text(data["name"], MAX_NAME_CHARS):
        errors.append(FieldError("name", f"must be one line of 1..{MAX_NAME_CHARS} characters"))
    site_ids = _check_sites(data.get("sites"), errors)
    agent, offers = data.get("agent"), data.get("offers")
    if agent is None and not offers:
        errors.append(FieldError("agent", "is required (or static 'offers')"))
    if agent is not None:
        _check_agent(agent, site_ids, errors)
    if offers is not None and not isinstance(offers, list):
        errors.append(FieldError("offers", "must be a list"))
    return errors


def without_notes(value: Any) -> Any:
    """The file without its ``$`` notes, at any depth (what the BPP stores and the planner reads)."""
    if isinstance(value, Mapping):
        return {k: without_notes(v) for k, v in value.items() if not str(k).startswith("$")}
    if isinstance(value, list):
        return [without_notes(v) for v in value]
    return value


def _unknown(d: Mapping[str, Any], known: set[str], where: str) -> list[FieldError]:
    return [
        FieldError(f"{where}{k}", f"unknown field (known: {', '.join(sorted(known))})") for k in d if k not in known
    ]


def _is_text(value: Any, most: int) -> bool:
    """One line of 1..`most` characters, no control character."""
    if not isinstance(value, str) or not 1 <= len(value) <= most:
        return False
    try:
        check_text(value, one_line=True)
    except ValueError:
        return False
    return True


def _check_id(value: Any, field: str, errors: list[FieldError]) -> None:
    if not _is_text(value, MAX_ID_CHARS) or not _ID.match(value):
        errors.append(FieldError(field, f"must be 1..{MAX_ID_CHARS} printable characters without spaces"))


def _number(value: Any, field: str, errors: list[FieldError], *, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        errors.append(FieldError(field, "must be a finite number"))
    elif not low <= value <= high:
        errors.append(FieldError(field, f"must be in [{low:g}, {high:g}]"))


def _daily_numbers(value: Any, field: str, errors: list[FieldError], *, low: float) -> None:
    """A number, or 48 numbers by UTC half hour."""
    if isinstance(value, list):
        if len(value) != SLOTS_PER_DAY:
            errors.append(FieldError(field, f"give a number or {SLOTS_PER_DAY} values by UTC half hour"))
            return
        for i, v in enumerate(value):
            _number(v, f"{field}[{i}]", errors, low=low, high=MAX_KW)
    else:
        _number(value, field, errors, low=low, high=MAX_KW)


def _check_sites(sites: Any, errors: list[FieldError]) -> set[str]:
    if not isinstance(sites, list) or not 1 <= len(sites) <= MAX_SITES:
        errors.append(FieldError("sites", f"must be a list of 1..{MAX_SITES} sites"))
        return set()
    ids: set[str] = set()
    for i, site in enumerate(sites):
        where = f"sites[{i}]"
        if not isinstance(site, Mapping):
            errors.append(FieldError(where, "must be an object"))
            continue
        errors.extend(_unknown(site, _SITE_KEYS, f"{where}."))
        _check_id(site.get("id"), f"{where}.id", errors)
        _check_id(site.get("meter_id"), f"{where}.meter_id", errors)
        if not _is_text(site.get("region"), MAX_ID_CHARS):
            errors.append(FieldError(f"{where}.region", "must be a region code, e.g. GB-R13"))
        _number(site.get("baseline_kw"), f"{where}.baseline_kw", errors, low=0.0, high=MAX_KW)
        if site.get("id") in ids:
            errors.append(FieldError(f"{where}.id", f"{site['id']!r} is listed twice"))
        if isinstance(site.get("id"), str):
            ids.add(site["id"])
    return ids


def _check_agent(agent: Any, site_ids: set[str], errors: list[FieldError]) -> None:
    if not isinstance(agent, Mapping):
        errors.append(FieldError("agent", "must be an object"))
        return
    errors.extend(_unknown(agent, _AGENT_KEYS, "agent."))
    slot_minutes = _check_slot_minutes(agent, errors)
    horizon = agent.get("horizon_slots", 96)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or not 2 <= horizon <= MAX_HORIZON_SLOTS:
        errors.append(
            FieldError("agent.horizon_slots", f"must be a whole number of half hours in 2..{MAX_HORIZON_SLOTS}")
        )
    elif horizon * MARKET_SLOT_MINUTES % slot_minutes:
        errors.append(FieldError("agent.horizon_slots", f"must be whole {slot_minutes}-minute slots (slot_minutes)"))
    source = _mapping(agent, "signals", errors).get("source", "actual")
    if source not in SIGNAL_SOURCES:
        errors.append(FieldError("agent.signals.source", f"must be one of {', '.join(SIGNAL_SOURCES)}"))
    kind = _check_kind(agent, errors)
    _check_agent_sites(agent.get("sites"), site_ids, errors, compute=kind is not ProviderKind.STORAGE)
    _check_jobs(_mapping(agent, "jobs", errors), errors)
    for key, build in (
        ("actions", lambda d: ControlActions(**d).max_deferral_slots(slot_minutes)),
        ("objective", objective_from),
        ("offers", lambda d: _offers_on_slots(offer_settings_from(d), slot_minutes)),
    ):
        _check_built(_mapping(agent, key, errors), f"agent.{key}", build, errors)


def _check_slot_minutes(agent: Mapping[str, Any], errors: list[FieldError]) -> int:
    """The plan's slot length (15, 30 or 60 minutes; default 30); 30 for the other checks when it is bad."""
    value = agent.get("slot_minutes", MARKET_SLOT_MINUTES)
    if isinstance(value, bool) or value not in PLAN_SLOT_MINUTES:
        errors.append(FieldError("agent.slot_minutes", f"must be one of {list(PLAN_SLOT_MINUTES)} (minutes)"))
        return MARKET_SLOT_MINUTES
    return int(value)


def _offers_on_slots(settings: OfferSettings, slot_minutes: int) -> None:
    """Offer windows (half hours) must be whole plan slots: a 60-minute plan offers whole hours."""
    window = settings.window_slots
    minutes_to_slots(window * MARKET_SLOT_MINUTES, slot_minutes, f"window_slots ({window} half hours)")


def _check_kind(agent: Mapping[str, Any], errors: list[FieldError]) -> ProviderKind | None:
    """Who plans the sites (compute or storage; one planner per site): a problem names its field."""
    try:
        return provider_kind(agent, "agent")
    except (TypeError, ValueError) as exc:
        message = str(exc)
        field, _, rest = message.partition(" ")
        if field.startswith("agent"):
            errors.append(FieldError(field.rstrip(":"), rest))
        else:
            errors.append(FieldError("agent", message))
        return None


def _mapping(d: Mapping[str, Any], key: str, errors: list[FieldError]) -> Mapping[str, Any]:
    value = d.get(key, {})
    if not isinstance(value, Mapping):
        errors.append(FieldError(f"agent.{key}", "must be an object"))
        return {}
    return value


def _check_built(
    d: Mapping[str, Any], field: str, build: Callable[[dict[str, Any]], object], errors: list[FieldError]
) -> None:
    """The entry's fields as the planner reads them: an unknown field or a bad value names the entry."""
    try:
        build(dict(d))
    except TypeError as exc:
        errors.append(FieldError(field, f"unknown or mistyped field ({exc})"))
    except ValueError as exc:
        errors.append(FieldError(field, str(exc)))


def _check_agent_sites(sites: Any, site_ids: set[str], errors: list[FieldError], *, compute: bool) -> None:
    if not isinstance(sites, list) or not sites:
        errors.append(FieldError("agent.sites", "must be a non-empty list of the provider's sites"))
        return
    for i, site in enumerate(sites):
        where = f"agent.sites[{i}]"
        if not isinstance(site, Mapping):
            errors.append(FieldError(where, "must be an object"))
            continue
        errors.extend(_unknown(site, _AGENT_SITE_KEYS, f"{where}."))
        if site.get("id") not in site_ids:
            errors.append(FieldError(f"{where}.id", f"must be one of the provider's sites {sorted(site_ids)}"))
        if not _is_text(site.get("region"), MAX_ID_CHARS):
            errors.append(FieldError(f"{where}.region", "must be a signal region, e.g. GB or GB-R13"))
        if compute or "capacity_kw" in site:
            _daily_numbers(site.get("capacity_kw"), f"{where}.capacity_kw", errors, low=1.0)
        _daily_numbers(site.get("baseline_kw", 0.0), f"{where}.baseline_kw", errors, low=0.0)
        if site.get("battery") is not None:
            try:
                battery_from_config(site["battery"], f"{where}.battery")
            except (TypeError, ValueError) as exc:
                errors.append(FieldError(f"{where}.battery", str(exc).removeprefix(f"{where}.battery").lstrip(":. ")))


def _check_jobs(jobs: Mapping[str, Any], errors: list[FieldError]) -> None:
    if "list" in jobs:
        if not isinstance(jobs["list"], list):
            errors.append(FieldError("agent.jobs.list", "must be a list of jobs"))
        return
    if jobs.get("source", "alibaba") not in JOB_SOURCES:
        errors.append(FieldError("agent.jobs.source", f"must be one of {', '.join(JOB_SOURCES)}"))
    n_jobs = jobs.get("n_jobs", 100)
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or not 0 <= n_jobs <= MAX_JOBS:
        errors.append(FieldError("agent.jobs.n_jobs", f"must be a whole number in 0..{MAX_JOBS}"))
    if "jobs_dir" in jobs and not _is_text(jobs["jobs_dir"], 4096):
        errors.append(FieldError("agent.jobs.jobs_dir", "must be the path of a folder holding the trace CSV"))


def provider_template(provider_id: str = "my-dc", *, region: str = "GB-R13") -> dict[str, Any]:
    """A provider file to fill in (`flexmarket provider init`): valid as written, every field documented in
    README "Onboarding a data centre" and in the ``$comment`` entries."""
    site_id = f"{provider_id}-site-1"
    return {
        "$comment": "A flexmarket provider file. Fill in, then: flexmarket provider validate FILE. "
        "Fields: README 'Onboarding a data centre'. Keys starting with $ are notes and are ignored.",
        "id": provider_id,
        "name": "My data centre",
        "sites": [
            {
                "$comment": "region: NESO carbon-intensity region (GB-R1..GB-R14); meter_id: the site's settlement "
                "meter; baseline_kw: its usual import",
                "id": site_id,
                "name": "Hall A",
                "region": region,
                "meter_id": f"{site_id}-meter",
                "baseline_kw": 2000,
            }
        ],
        "agent": {
            "$comment": "The compute agent that plans the site and derives the offers (horizon_slots: half hours, "
            "96 = 48 h ahead). slot_minutes: the plan's slot, 15, 30 or 60, one for the whole site (compute and "
            "battery); offers, orders and settlement stay half-hourly.",
            "horizon_slots": 96,
            "slot_minutes": 30,
            "signals": {"source": "actual"},
            "sites": [
                {
                    "$comment": "capacity_kw / baseline_kw: a number or 48 values by UTC half hour; baseline_kw here "
                    "is the inflexible load; battery: fill in, or delete it if the site has none",
                    "id": site_id,
                    "region": "GB",
                    "capacity_kw": 4000,
                    "baseline_kw": 700,
                    "battery": {
                        "energy_kwh": 2000,
                        "charge_power_kw": 500,
                        "discharge_power_kw": 500,
                        "round_trip_efficiency": 0.9,
                        "initial_soc_fraction": 0.5,
                    },
                }
            ],
            "jobs": {
                "$comment": "The job mix: source alibaba | gaia | mixed | synthetic, read from the trace CSV in "
                "jobs_dir (default ../shared/data/jobs; synthetic when absent); or {'list': [jobs]}",
                "source": "alibaba",
                "n_jobs": 300,
                "seed": 0,
                "power_scale": 150.0,
            },
            "actions": {
                "temporal_shifting": True,
                "max_deferral_min": 240,
                "geographic_migration": True,
                "storage_coordination": True,
            },
            "objective": {"kind": "cost_x_carbon", "carbon_reference_g_per_kwh": 150},
            "offers": {"window_slots": 4, "margin_fraction": 0.1, "margin_gbp_per_mwh": 5},
        },
    }
