from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from grid.money import (
    QuantityError,
    decimal_to_units,
    energy_price_pence,
    gbp_per_mwh_to_millipence,
    round_half_even,
    units_to_decimal_str,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(1, 2), 0),
        (Fraction(3, 2), 2),
        (Fraction(5, 2), 2),
        (Fraction(-1, 2), 0),
        (Fraction(-3, 2), -2),
        (Fraction(2499, 1000), 2),
        (Fraction(2501, 1000), 3),
        (Fraction(7), 7),
    ],
)
def test_round_half_even(value: Fraction, expected: int) -> None:
    assert round_half_even(value) == expected


def test_energy_price_is_exact() -> None:
    # 250 kWh at £3,000/MWh = £750 = 75,000 pence
    assert energy_price_pence(250_000, gbp_per_mwh_to_millipence("3000")) == 75_000
    # 1 Wh at £0.00001/MWh: a billionth of a penny, still exact
    assert energy_price_pence(1, 1) == Fraction(1, 10**9)


@pytest.mark.parametrize(
    ("text", "digits", "units"),
    [
        ("12.345", 3, 12345),
        ("0", 3, 0),
        ("-8.07", 5, -807000),
        ("123.40021", 5, 12340021),
        (Decimal("1e2"), 2, 10000),
    ],
)
def test_decimal_to_units(text: str, digits: int, units: int) -> None:
    assert decimal_to_units(text, digits, "x") == units


@pytest.mark.parametrize("text", ["1.2345", "abc", "NaN", "Infinity", "1e30"])
def test_decimal_to_units_refuses_inexact_or_bad(text: str) -> None:
    with pytest.raises(QuantityError):
        decimal_to_units(text, 3, "energy_kwh")


def test_display() -> None:
    assert units_to_decimal_str(12345, 2) == "123.45"
    assert units_to_decimal_str(-5, 2) == "-0.05"
    assert units_to_decimal_str(Fraction(1, 3), 3, 3) == "0.000"
