"""Token series in the providers file (bpp/catalog.py): parsed, checked against the ledger's capacity rule with
errors naming the field, and the example catalog's series sized and priced as documented."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bpp.catalog import CatalogConfigError, example_config, network_config, parse_config, series_max_tokens
from ledger import cft as ledger_cft

NOW = datetime(2026, 12, 2, 10, tzinfo=UTC)


def _config(**series_changes: Any) -> dict[str, Any]:
    config = example_config(2, now=NOW)
    series = config["platforms"][0]["providers"][0]["cft_series"][0]
    for k, v in series_changes.items():
        if v is None:
            series.pop(k)
        else:
            series[k] = v
    return config


def test_example_series_over_the_evening_offer() -> None:
    config = example_config(4, now=NOW)
    for i, provider in enumerate(config["platforms"][0]["providers"]):
        evening = provider["offers"][0]
        (series,) = provider["cft_series"]
        assert (series["valid_from"], series["valid_to"]) == (evening["window_start"], evening["window_end"])
        assert series["declared_capacity_kw"] == evening["available_kw"]
        assert series["tokens"] == int(evening["available_kw"] * 4 // 1000), i
        assert Decimal(series["price_gbp_per_token"]) == Decimal(str(evening["price_gbp_per_mwh"])) * Decimal("0.9")
    parsed = parse_config(config)[0].providers[0].cft_series[0]
    assert parsed.tokens == 2 and parsed.price_gbp_per_token == Decimal("135.00")


def test_agents_declare_no_series() -> None:
    assert all("cft_series" not in p for p in example_config(2, now=NOW, agents=True)["platforms"][0]["providers"])
    first = network_config(2)["platforms"][0]["providers"][0]
    assert "cft_series" not in first


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tokens": 3}, "tokens"),  # 600 kW over 4 h backs 2
        ({"tokens": 0}, "tokens"),
        ({"tokens": 1.5}, "tokens"),
        ({"id": None}, "'id'"),
        ({"id": "a:b"}, ".id"),
        ({"price_gbp_per_token": "1.001"}, "price_gbp_per_token"),
        ({"price_gbp_per_token": -1}, "price_gbp_per_token"),
        ({"price_gbp_per_token": "cheap"}, "price_gbp_per_token"),
        ({"declared_capacity_kw": 0}, "declared_capacity_kw"),
        ({"valid_to": "2026-12-03T15:00:00+00:00"}, "valid_to"),
        ({"valid_from": "2026-12-03T16:00:00"}, "valid_from"),
    ],
)
def test_series_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(CatalogConfigError) as err:
        parse_config(_config(**change))
    assert "cft_series[0]" in str(err.value) and field in str(err.value)


def test_series_ids_are_one_namespace() -> None:
    config = _config()
    providers = config["platforms"][0]["providers"]
    providers[1]["cft_series"] = copy.deepcopy(providers[0]["cft_series"])
    with pytest.raises(CatalogConfigError, match="more than one provider"):
        parse_config(config)


@given(
    capacity_w=st.integers(1, 10**9),
    start_min=st.integers(0, 10_000),
    length_s=st.integers(1, 10**6),
)
def test_max_tokens_is_the_ledgers_rule(capacity_w: int, start_min: int, length_s: int) -> None:
    start = NOW + timedelta(minutes=start_min)
    end = start + timedelta(seconds=length_s)
    assert series_max_tokens(capacity_w / 1000, start, end) == ledger_cft.max_tokens(capacity_w, start, end)
