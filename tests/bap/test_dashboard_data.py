"""The dashboard's reads that reach other participants (bap/dashboard_data.py): a provider's load-shift schedule
from its BPP over real HTTP (a server on loopback answering as the BPP's schedule endpoint documents), shown as
a chart or as "unavailable" with the reason; and the chart data taken from such an answer as it is."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bap import dashboard_data
from bap.models import BapOrder
from kernel.db import session_scope
from tests.bap.conftest import NOWHERE

SCHEDULE = {
    "provider_id": "dc-01",
    "resource_type": "compute",
    "slot_minutes": 30,
    "slots": [
        {
            "start": "2023-01-24T17:00:00Z",
            "end": "2023-01-24T17:30:00Z",
            "baseline_kw": 901.874,
            "planned_kw": 878.834,
            "committed_reduction_kw": 0.0,
            "committed_cap_kw": None,
            "price_gbp_per_mwh": 189.76,
            "carbon_g_per_kwh": 254.0,
        },
        {
            "start": "2023-01-24T17:30:00Z",
            "end": "2023-01-24T18:00:00Z",
            "baseline_kw": 846.34,
            "planned_kw": 823.3,
            "committed_reduction_kw": 100.0,
            "committed_cap_kw": 746.34,
            "price_gbp_per_mwh": None,
            "carbon_g_per_kwh": 255.0,
        },
    ],
    "totals": {"baseline_cost_gbp": 166.6195, "planned_cost_gbp": 162.2271},
}


def test_the_chart_is_the_answer_slot_by_slot() -> None:
    chart = dashboard_data.loadshift_chart(SCHEDULE)
    assert chart["labels"] == ["17:00", "17:30"]
    assert chart["baseline_kw"] == [901.874, 846.34] and chart["planned_kw"] == [878.834, 823.3]
    assert chart["committed_reduction_kw"] == [0.0, 100.0]
    assert chart["price_gbp_per_mwh"] == [189.76, None]  # a missing signal stays a gap, not a zero
    assert chart["carbon_g_per_kwh"] == [254.0, 255.0]


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ({}, "no slots"),
        ({"slots": []}, "no slots"),
        ({"slots": ["x"]}, "slots[0] is not an object"),
        ({"slots": [{"baseline_kw": 1, "planned_kw": 1}]}, "slots[0].start"),
        ({"slots": [{"start": "noon", "baseline_kw": 1, "planned_kw": 1}]}, "slots[0].start"),
        ({"slots": [{"start": "2023-01-24T17:00:00Z", "baseline_kw": 1}]}, "baseline_kw or planned_kw"),
        ({"slots": [{"start": "2023-01-24T17:00:00Z", "baseline_kw": True, "planned_kw": 1}]}, "baseline_kw"),
        ([1, 2], "no slots"),
    ],
)
def test_a_malformed_answer_is_refused_naming_what(doc: Any, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
        dashboard_data.loadshift_chart(doc)


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=1e6, allow_nan=False),
            st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
        ),
        min_size=1,
        max_size=96,
    )
)
def test_every_slot_reaches_the_chart_in_order(points: list[tuple[float, float]]) -> None:
    start = datetime(2023, 1, 24, tzinfo=UTC)
    slots = [
        {"start": (start + i * timedelta(minutes=30)).isoformat(), "baseline_kw": b, "planned_kw": p}
        for i, (b, p) in enumerate(points)
    ]
    chart = dashboard_data.loadshift_chart({"slots": slots})
    assert list(zip(chart["baseline_kw"], chart["planned_kw"], strict=True)) == points
    assert len(chart["labels"]) == len(points) and chart["price_gbp_per_mwh"] == [None] * len(points)


# -- from a BPP over HTTP ------------------------------------------------------------------------------------
class _Bpp(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, bytes]]] = {}
    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).asked.append(self.path)
        status, body = type(self).answers.get(self.path, (404, b'{"error": {"code": "not_found"}}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def bpp(bap_db: str) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Bpp)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dc-platform"
    finally:
        server.shutdown()


def _order(provider_id: str, bpp_uri: str) -> None:
    start = datetime(2030, 1, 1, 17, tzinfo=UTC)
    with session_scope("bap") as s:
        s.add(
            BapOrder(
                transaction_id="tx-dashboard",
                bpp_id="bpp.dashboard",
                provider_id=provider_id,
                bpp_uri=bpp_uri,
                item_id=f"{provider_id}-evening",
                power_kw=100.0,
                window_start=start,
                window_end=start + timedelta(hours=1),
                settlement_method="P415",
                state="ACCEPTED",
            )
        )


def _schedule(provider_id: str) -> dict[str, Any]:
    with session_scope("bap") as s:
        return dashboard_data.provider_schedule(s, provider_id)


def test_the_schedule_is_read_from_the_providers_bpp(bpp: str) -> None:
    _order("dc-01", bpp)
    _Bpp.answers["/dc-platform/providers/dc-01/schedule"] = (200, json.dumps(SCHEDULE).encode())
    got = _schedule("dc-01")
    assert got["chart"] == dashboard_data.loadshift_chart(SCHEDULE) and got["totals"] == SCHEDULE["totals"]
    assert "/dc-platform/providers/dc-01/schedule" in _Bpp.asked


def test_a_schedule_the_bpp_cannot_give_is_unavailable_with_the_reason(bpp: str) -> None:
    _order("dc-static", bpp)  # the BPP answers 404: a provider with static offers only has no plan
    assert _schedule("dc-static") == {"error": "the BPP answered 404"}
    _order("dc-garbled", bpp)
    _Bpp.answers["/dc-platform/providers/dc-garbled/schedule"] = (200, b'{"slots": [{"start": "soon"}]}')
    assert "malformed" in _schedule("dc-garbled")["error"]
    _order("dc-away", f"{NOWHERE}/dc-platform")
    assert "unreachable" in _schedule("dc-away")["error"]
    assert _schedule("dc-unknown") == {"error": "no BPP known for dc-unknown"}
