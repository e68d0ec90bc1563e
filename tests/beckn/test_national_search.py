"""Other Beckn buyers get sensible answers: a national search (country only) passes every receiver's
context_location step, and a search without a window or quantity is a request for the whole catalog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from beckn import envelope
from beckn.errors import BecknError
from beckn.steps import ContextLocation
from schemas.core import Context, Intent
from schemas.flex import FlexFormatError, intent_to_request


def _draft(action: str, city: str | None) -> SimpleNamespace:
    ctx = envelope.context(
        action, bap_id="bap", bap_uri="http://b", transaction_id="t", city_code=city or "", country_code="GBR"
    )
    return SimpleNamespace(action=action, context=Context.model_validate(ctx))


@pytest.mark.parametrize("action", ["search", "on_search"])
def test_a_national_search_and_its_answers_need_no_city(action: str) -> None:
    draft = _draft(action, None)
    assert "city" not in draft.context.model_dump(exclude_none=True)["location"]
    ContextLocation()(draft)  # type: ignore[arg-type]


@pytest.mark.parametrize("action", ["select", "init", "confirm", "on_select", "status"])
def test_every_other_message_still_needs_a_city(action: str) -> None:
    with pytest.raises(BecknError, match="city"):
        ContextLocation()(_draft(action, None))  # type: ignore[arg-type]
    ContextLocation()(_draft(action, "GB-R13"))  # type: ignore[arg-type]


def test_a_country_is_always_required() -> None:
    draft = _draft("search", "GB-R13")
    draft.context = Context.model_validate({**draft.context.model_dump(exclude_none=True), "location": {}})
    with pytest.raises(BecknError, match="country"):
        ContextLocation()(draft)  # type: ignore[arg-type]


def test_a_search_without_window_or_quantity_takes_the_receivers_default() -> None:
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    window = (now, now + timedelta(days=7))
    with pytest.raises(FlexFormatError):  # the buyer's own form still needs both
        intent_to_request(Intent())
    req = intent_to_request(Intent(), default_window=window)
    assert (req.window_start, req.window_end, req.power_kw) == (*window, 0.0)
    assert intent_to_request(None, default_window=window).window_end == window[1]
