"""How the demo's figures read, shared by the console summary (demo_console.py) and report.html (report.py):
every number with its unit, instants in GB local time, and the one sentence on supplier compensation."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from flexmarket.demo_schema import DemoSummary, parse_utc
from grid.money import pence_to_gbp_str

LONDON = ZoneInfo("Europe/London")  # settlement periods and the event are stated in GB local time

# NESO Carbon Intensity API regions (the registry's city codes, GB-R<n>).
NESO_REGIONS = {
    "GB-R1": "North Scotland",
    "GB-R2": "South Scotland",
    "GB-R3": "North West England",
    "GB-R4": "North East England",
    "GB-R5": "Yorkshire",
    "GB-R6": "North Wales & Merseyside",
    "GB-R7": "South Wales",
    "GB-R8": "West Midlands",
    "GB-R9": "East Midlands",
    "GB-R10": "East England",
    "GB-R11": "South West England",
    "GB-R12": "South England",
    "GB-R13": "London",
    "GB-R14": "South East England",
}


def _signed(amount: Decimal, unit_prefix: str, places: int) -> str:
    """Thousands separated, rounded half to even, with a true minus sign when the rounded value is negative."""
    rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    sign = "−" if rounded < 0 else ""
    return f"{sign}{unit_prefix}{abs(rounded):,.{places}f}"


def gbp_pence(amount_pence: int) -> str:
    """12345 → '£123.45'; negative amounts as '−£3.79'."""
    return _signed(Decimal(pence_to_gbp_str(amount_pence)), "£", 2)


def gbp(amount_gbp: str) -> str:
    """A document's `*_gbp` string ('1234.50') → '£1,234.50'."""
    return _signed(Decimal(amount_gbp), "£", 2)


def gbp_per_mwh(price: float | None) -> str:
    return "not priced" if price is None else _signed(Decimal(repr(float(price))), "£", 2) + "/MWh"


def _number(value: float, places: int) -> str:
    return _signed(Decimal(repr(float(value))), "", places)


def kw(power_kw: float) -> str:
    return f"{_number(power_kw, 1)} kW"


def kwh(energy_kwh: float) -> str:
    return f"{_number(energy_kwh, 1)} kWh"


def kg_co2(mass_kg: float) -> str:
    return f"{_number(mass_kg, 1)} kg CO₂"


def g_per_kwh(intensity: float) -> str:
    return f"{_number(intensity, 0)} gCO₂/kWh"


def region(code: str) -> str:
    """'GB-R13' → 'GB-R13 London'; an unknown code as it is."""
    name = NESO_REGIONS.get(code)
    return f"{code} {name}" if name else code


def tokens(count: int) -> str:
    return f"{count:,} CFT"


def local_time(instant: str) -> str:
    """'2023-01-24T17:00:00Z' → '17:00' (Europe/London)."""
    return f"{parse_utc(instant).astimezone(LONDON):%H:%M}"


def local_datetime(instant: str) -> str:
    """'2023-01-24T17:00:00Z' → '2023-01-24 17:00 GMT' (Europe/London, with its abbreviation)."""
    return f"{parse_utc(instant).astimezone(LONDON):%Y-%m-%d %H:%M %Z}"


def local_window(start: str, end: str) -> str:
    return f"{local_time(start)}–{local_time(end)}"


def compensation_why(summary: DemoSummary) -> str:
    """Why the host suppliers' compensation can exceed what the providers are paid (P415 rules 6, 7 and 9,
    ../shared/reference/market/p415-settlement.md): the two are measured on different volumes at different
    prices. An optional `settlement.scrp_gbp_per_mwh` in the document states the reference price used."""
    scrp = (summary.settlement.model_extra or {}).get("scrp_gbp_per_mwh")
    price = "" if not isinstance(scrp, int | float) else f", {gbp_per_mwh(scrp)}"
    return (
        "Why compensation can exceed the payments: under P415 each host supplier is compensated at a reference "
        f"price (SCRP{price}) for all the energy it bought that its customer did not consume in the event's "
        "periods, while a provider is paid its own flexibility price only for delivered energy up to its "
        "contracted volume, less any shortfall charge, and nothing in £ at settlement for orders prepaid "
        "with Compute Flex Tokens."
    )
