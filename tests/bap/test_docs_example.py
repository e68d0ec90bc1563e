"""The client API's /docs example is a request the API accepts today (its window is computed from the market
clock, never a fixed date that goes stale)."""

from __future__ import annotations

from bap.router import SearchIn


def test_the_search_example_is_valid_now() -> None:
    example = SearchIn.model_json_schema()["example"]
    assert SearchIn.model_validate(example).power_kw == example["power_kw"]
