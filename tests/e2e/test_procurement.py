"""The grid orchestrator buys a time-varying load reduction end to end, on the shared network's real
processes: the procurement searches nationally, collects every BPP's offers, chooses exactly (HiGHS), and
select → init → confirm runs without a person; governance (kill switch, approval both ways, shadow mode)
holds on the way.

The slots are 18:00–19:00 tomorrow, a window the other e2e tests leave free (they order 16:00–18:00 and
19:00–20:00), so the static evening offers' whole capacity (600 + 800 + 1,000 kW from dc-01..dc-03) is there.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from flexmarket.runner import Network
from tests.e2e.helpers import bap_headers, eventually, tomorrow_window

pytestmark = [pytest.mark.e2e]

FINAL = ("covered", "partially_covered", "failed", "cancelled", "halted")


def _slots(start: datetime, targets_kw: list[float]) -> list[dict[str, Any]]:
    half = timedelta(minutes=30)
    return [
        {"start": (start + i * half).isoformat(), "end": (start + (i + 1) * half).isoformat(), "target_kw": kw}
        for i, kw in enumerate(targets_kw)
    ]


def _api(net: Network, method: str, path: str, role: str = "operator", **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{net.url('bap')}/api/v1{path}", headers=bap_headers(net, role), timeout=30, **kw)


def _final(net: Network, pid: str, statuses: tuple[str, ...] = FINAL, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        v = _api(net, "GET", f"/procurements/{pid}").json()
        return v if v["status"] in statuses else None

    return eventually(done, timeout=timeout, interval=0.5)


def _policy(net: Network, **body: Any) -> int:
    r = _api(net, "POST", "/policies", json={"body": body, "note": "test"})
    assert r.status_code == 201, r.text
    return int(r.json()["version"])


def _activate(net: Network, version: int, mode: str = "active") -> None:
    r = _api(net, "POST", f"/policies/{version}/activate", json={"mode": mode, "reason": "test"})
    assert r.status_code == 200, r.text


def test_a_time_varying_target_is_covered_by_three_providers(network: Network) -> None:
    start, _ = tomorrow_window(18, 1)
    targets = [1200.0, 2000.0]
    r = _api(network, "POST", "/procurements", json={"slots": _slots(start, targets), "objective": "cost"})
    assert r.status_code == 202, r.text
    pid = r.json()["procurement_id"]
    view = _final(network, pid)
    assert view["status"] == "covered", view["status_reason"]
    assert view["policy_version"] >= 1 and view["source"] == "api"
    for slot, target in zip(view["slots"], targets, strict=True):
        assert slot["covered_kw"] >= target - 0.1
    accepted = [o for o in view["orders"] if o["state"] == "ACCEPTED"]
    assert len({o["provider_id"] for o in accepted}) >= 3
    assert all(o["procurement_id"] == pid for o in accepted)
    assert view["shortfall_kw"] == 0 and view["seconds_to_all_confirmed"] is not None
    kinds = {e["kind"] for e in view["market_log"]}
    assert {"procurement_created", "search", "offer_seen", "chosen", "choice", "covered"} <= kinds
    # exported as JSON lines, filtered by procurement
    lines = _api(network, "GET", f"/market-log?procurement_id={pid}&format=jsonl").text.splitlines()
    assert len(lines) == len(view["market_log"])


def test_the_kill_switch_refuses_new_procurements_until_resumed(network: Network) -> None:
    assert _api(network, "POST", "/halt", json={"reason": "test: grid emergency"}).json()["halted"] is True
    try:
        start, _ = tomorrow_window(18, 1)
        r = _api(network, "POST", "/procurements", json={"slots": _slots(start, [10.0])})
        assert r.status_code == 409 and "kill switch" in r.json()["error"]["message"]
        assert _api(network, "GET", "/halt", role="viewer").json()["reason"] == "test: grid emergency"
        # a viewer cannot lift it
        assert _api(network, "POST", "/resume", role="viewer", json={"reason": "x"}).status_code == 403
    finally:
        assert _api(network, "POST", "/resume", json={"reason": "test over"}).json()["halted"] is False


def test_approval_both_ways_and_shadow_mode(network: Network) -> None:
    base = _api(network, "GET", "/policies/active").json()["version"]
    strict = _policy(network, approval={"max_power_mw": 0.05, "max_cost_gbp": 10000})
    shadow = _policy(network, objective="carbon")
    _activate(network, strict)
    _activate(network, shadow, mode="shadow")
    try:
        start, _ = tomorrow_window(18, 1)
        pids = []
        for _ in range(2):
            r = _api(network, "POST", "/procurements", json={"slots": _slots(start, [100.0, 100.0])})
            assert r.status_code == 202, r.text
            pids.append(r.json()["procurement_id"])
        waiting = [_final(network, pid, ("pending_approval", *FINAL)) for pid in pids]
        for v in waiting:
            assert v["status"] == "pending_approval" and v["policy_version"] == strict
            assert v["explanation"]["choice"] and "MW" in v["explanation"]["why"]
            assert v["shadow"]["policy_version"] == shadow and v["shadow"]["orders"]
            assert v["orders"] == []  # nothing ordered while waiting, and never for the shadow policy
        assert _api(network, "POST", f"/procurements/{pids[0]}/approve", role="aggregator").status_code == 403
        assert _api(network, "POST", f"/procurements/{pids[0]}/approve", json={"reason": "ok"}).status_code == 200
        assert _api(network, "POST", f"/procurements/{pids[1]}/reject", json={"reason": "no"}).status_code == 200
        approved, rejected = _final(network, pids[0]), _final(network, pids[1])
        assert approved["status"] == "covered" and approved["approval_latency_s"] is not None
        assert rejected["status"] == "cancelled" and rejected["orders"] == []
        # a decided procurement cannot be decided again
        assert _api(network, "POST", f"/procurements/{pids[1]}/approve", json={}).status_code == 409
        shadow_orders = len(approved["shadow"]["orders"])
        assert len(approved["orders"]) >= 1 and shadow_orders >= 1
    finally:
        _activate(network, base)
        _api(network, "POST", "/policies/shadow/end", json={"reason": "test over"})


def test_bad_procurements_are_refused_naming_the_field(network: Network) -> None:
    start, _ = tomorrow_window(18, 1)
    cases = [
        ({"slots": []}, "slots"),
        ({"slots": _slots(start, [-5.0])}, "target_kw"),
        (
            {
                "slots": [
                    {"start": start.isoformat(), "end": (start + timedelta(minutes=20)).isoformat(), "target_kw": 1}
                ]
            },
            "half-hour",
        ),
        ({"slots": _slots(start - timedelta(days=3), [10.0])}, "past"),
        ({"window_start": start.isoformat()}, "window_end"),
    ]
    for body, word in cases:
        r = _api(network, "POST", "/procurements", json=body)
        assert r.status_code in (400, 422), (body, r.status_code, r.text)
        assert word in r.text, (body, r.text)
