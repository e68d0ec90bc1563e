"""What a re-plan changed in the offers (bpp/decisions.py `offer_changes`, recorded in the decision log): every
offer id is listed once, under what happened to it, and unchanged offers not at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from bpp.decisions import OfferTerms, offer_changes, replan_record
from bpp.replan import still_relevant
from bpp.signal_providers import SignalUpdate

terms = st.builds(
    OfferTerms,
    available_kw=st.sampled_from([1.0, 50.0, 120.5]),
    price_gbp_per_mwh=st.sampled_from([80.0, 95.25]),
)
books = st.dictionaries(st.sampled_from([f"o{i}" for i in range(8)]), terms, max_size=8)


@given(before=books, after=books)
def test_every_offer_is_listed_once_under_what_happened_to_it(
    before: dict[str, OfferTerms], after: dict[str, OfferTerms]
) -> None:
    changes = offer_changes(before, after, {k: "why" for k in before})
    added = {c["offer_id"] for c in changes["added"]}
    withdrawn = {c["offer_id"] for c in changes["withdrawn"]}
    changed = {c["offer_id"] for c in changes["changed"]}
    assert added == after.keys() - before.keys() and withdrawn == before.keys() - after.keys()
    assert changed == {k for k in before.keys() & after.keys() if before[k] != after[k]}
    assert all(c["reason"] == "why" for c in changes["withdrawn"])
    for c in changes["changed"]:
        for field in ("available_kw", "price_gbp_per_mwh"):
            b, a = getattr(before[c["offer_id"]], field), getattr(after[c["offer_id"]], field)
            assert (field in c) == (b != a) and (field not in c or c[field] == {"before": b, "after": a})


def test_the_record_says_why_from_when_and_what_changed() -> None:
    at = datetime(2026, 12, 2, 8, tzinfo=UTC)
    changes = offer_changes({"a": OfferTerms(10, 90)}, {"a": OfferTerms(8, 90), "b": OfferTerms(5, 80)}, {})
    record = replan_record(provider_id="p", decided_at_utc=at, anchor_utc=at, why="periodic re-plan", changes=changes)
    d = record.to_dict()
    assert d["action"] == "replan" and d["decision_id"] == "p:replan-2026-12-02T08:00:00Z"
    assert "periodic re-plan" in d["rationale"] and "1 added, 0 withdrawn, 1 changed" in d["rationale"]
    assert d["details"]["offers"]["changed"] == [{"offer_id": "a", "available_kw": {"before": 10, "after": 8}}]


def test_signal_updates_are_kept_until_their_window_is_over() -> None:
    at = datetime(2026, 12, 2, 8, tzinfo=UTC)
    over = SignalUpdate("GB", at - timedelta(hours=2), at, price_gbp_per_mwh=900)
    live = SignalUpdate("GB", at, at + timedelta(hours=1), price_gbp_per_mwh=900)
    assert still_relevant([over, live, live], at) == [live]
    assert SignalUpdate.from_dict(live.to_dict()) == live
