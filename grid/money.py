"""Money and quantity arithmetic: integers in, exact rationals in between, integers out.

The ledger never holds floats (../shared/DESIGN.md "Units in names"; p415-settlement.md rule 11).
Inputs are integers in named units — energy in Wh (`energy_wh`), power in W (`power_w`), prices in
milli-pence per MWh (`price_millipence_per_mwh`: £/MWh × 100,000, exact for the 5 decimal places the
real Elexon price series carries, see ../shared/data/grid/README.md) — and the per-MWh products are
carried as exact `fractions.Fraction` values of pence (p415-settlement.md rule 11 allows milli-pence
for per-MWh arithmetic). Each settlement line (one component of one order in one run,
summed over its periods) is rounded ONCE to integer pence.

Rounding rule (chosen once, for the whole ledger): round half to even ("banker's rounding"), so
that systematic .5 cases do not drift in either party's favour over many lines.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from fractions import Fraction

WH_PER_MWH = 1_000_000
MILLIPENCE_PER_PENNY = 1_000
PRICE_DECIMALS_GBP = 5  # £/MWh → milli-pence/MWh
MONEY_DECIMALS_GBP = 2  # £ → pence
# RFC 8785 serialises numbers as IEEE-754 doubles: integers beyond 2**53 would lose precision in
# the canonical entry bytes, so amounts are kept below it (£90 trillion in pence — ample).
MAX_SAFE_INTEGER = 2**53 - 1


class QuantityError(ValueError):
    """A decimal input that cannot be represented exactly in the ledger's integer unit."""


def round_half_even(value: Fraction) -> int:
    """The ledger's single rounding rule: nearest integer, ties to the even neighbour."""
    return round(value)  # Fraction.__round__ with no ndigits rounds half to even, exactly


def energy_price_pence(energy_wh: Fraction | int, price_millipence_per_mwh: int) -> Fraction:
    """Exact pence for `energy_wh` at `price_millipence_per_mwh` (not yet rounded)."""
    return Fraction(energy_wh) * price_millipence_per_mwh / (WH_PER_MWH * MILLIPENCE_PER_PENNY)


def gbp_per_mwh_to_millipence(value: Decimal | str | int, what: str = "price") -> int:
    return decimal_to_units(value, PRICE_DECIMALS_GBP, what)


def millipence_to_gbp_str(price_millipence_per_mwh: int) -> str:
    return units_to_decimal_str(price_millipence_per_mwh, PRICE_DECIMALS_GBP)


def decimal_to_units(value: Decimal | str | int, scale_digits: int, what: str) -> int:
    """`value` × 10**scale_digits as an exact integer; refuses more decimal places than the unit holds.

    E.g. kWh with scale 3 → Wh; £/MWh with scale 2 → pence/MWh.
    """
    try:
        dec = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise QuantityError(f"{what}: {value!r} is not a decimal number") from exc
    if not dec.is_finite():
        raise QuantityError(f"{what}: {value!r} is not a finite number")
    scaled = dec.scaleb(scale_digits)
    if scaled != scaled.to_integral_value():
        raise QuantityError(f"{what}: {value} has more than {scale_digits} decimal places")
    units = int(scaled)
    if abs(units) > MAX_SAFE_INTEGER:
        raise QuantityError(f"{what}: {value} is too large")
    return units


def units_to_decimal_str(units: int | Fraction, scale_digits: int, places: int | None = None) -> str:
    """Display helper: integer (or exact rational) units → decimal string, e.g. 12345 pence → '123.45'."""
    places = scale_digits if places is None else places
    value = Fraction(units) / 10**scale_digits
    quantum = Fraction(1, 10**places)
    rounded = round_half_even(value / quantum)
    sign = "-" if rounded < 0 else ""
    rounded = abs(rounded)
    if places == 0:
        return f"{sign}{rounded}"
    whole, frac = divmod(rounded, 10**places)
    return f"{sign}{whole}.{frac:0{places}d}"


def pence_to_gbp_str(amount_pence: int) -> str:
    return units_to_decimal_str(amount_pence, 2)


def wh_to_kwh_str(energy_wh: int | Fraction, places: int = 3) -> str:
    return units_to_decimal_str(energy_wh, 3, places)


def fraction_to_json(value: Fraction) -> str:
    """Exact, reproducible text for a rational ('7/2'), used in stored settlement details."""
    return str(value)


def fraction_from_json(text: str | int) -> Fraction:
    return Fraction(text)
