"""The grid orchestrator's failure paths end to end, on real processes (issue 12, "failures are handled without
a person"): a provider that cancels an accepted order later is replaced, a provider that goes silent (its BPP
process stopped) is replaced, and the kill switch stops a procurement in flight.

Slots, chosen so that no other e2e test orders in them and the static offers' capacity is there:
- the provider's cancellation: 08:00–08:30 the day after tomorrow (the morning offers, 06:00–09:00: 300 + 400
  + 500 kW from dc-01..dc-03 and 300 kW from dc-north-scotland; the other tests order 06:00–08:00);
- the kill switch: 08:30–09:00 the day after tomorrow, beside it. The kill switch cancels every order not yet
  started of every procurement, so it runs last in this module; the procurements of the earlier tests
  (tests/e2e/test_procurement.py, the cancellation here) are halted with it;
- the silent provider runs on a network of its own (tomorrow 16:00–17:00), with a second BPP process.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bpp.catalog import example_config
from flexmarket.runner import Network, Process, own_bpp
from kernel import db
from tests.e2e.helpers import bap_headers, eventually, own_network, rows, tomorrow_window

pytestmark = [pytest.mark.e2e]

FINAL = ("covered", "partially_covered", "failed", "cancelled", "halted")
CANCEL_SLOT = tomorrow_window(32, 1)[0]  # 08:00 the day after tomorrow
HALT_SLOT = CANCEL_SLOT + timedelta(minutes=30)
REASON = "cooling plant failure in hall A"


def _slots(start: datetime, targets_kw: list[float]) -> list[dict[str, Any]]:
    half = timedelta(minutes=30)
    return [
        {"start": (start + i * half).isoformat(), "end": (start + (i + 1) * half).isoformat(), "target_kw": kw}
        for i, kw in enumerate(targets_kw)
    ]


def _api(net: Network, method: str, path: str, role: str = "operator", **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{net.url('bap')}/api/v1{path}", headers=bap_headers(net, role), timeout=30, **kw)


def _view(net: Network, pid: str) -> dict[str, Any]:
    r = _api(net, "GET", f"/procurements/{pid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _until(net: Network, pid: str, done: Any, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        v = _view(net, pid)
        return v if done(v) else None

    return dict(eventually(check, timeout=timeout, interval=0.25))


def _final(net: Network, pid: str, timeout: float = 90) -> dict[str, Any]:
    return _until(net, pid, lambda v: v["status"] in FINAL, timeout)


def _procure(net: Network, start: datetime, targets_kw: list[float]) -> str:
    r = _api(net, "POST", "/procurements", json={"slots": _slots(start, targets_kw), "objective": "cost"})
    assert r.status_code == 202, r.text
    return str(r.json()["procurement_id"])


def _kinds(view: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in view["market_log"]]


def _covered(view: dict[str, Any]) -> bool:
    return all(s["covered_kw"] >= s["target_kw"] - 0.1 for s in view["slots"])


def _slug(net: Network, bpp_id: str) -> str:
    [url] = [p["url"] for p in net.manifest["participants"]["bpp"]["platforms"] if p["subscriber_id"] == bpp_id]
    return str(url).rstrip("/").rsplit("/", 1)[1]


def _admin_cancel(net: Network, bpp_id: str, order_id: str, body: Any, token: str | None = None) -> httpx.Response:
    token = token or net.processes["bpp"].env["FLEXMARKET_BPP_ADMIN_TOKEN"]
    return httpx.post(
        f"{net.url('bpp')}/admin/{_slug(net, bpp_id)}/orders/{order_id}/cancel",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


# -- a provider that cancels later ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cancelled_later(network: Network, db_url: str) -> dict[str, Any]:
    """A procurement covered by several orders; the provider of one cancels it through the BPP's admin API."""
    pid = _procure(network, CANCEL_SLOT, [700.0])
    first = _final(network, pid)
    assert first["status"] == "covered", first["status_reason"]
    accepted = [o for o in first["orders"] if o["state"] == "ACCEPTED"]
    assert len(accepted) >= 2, first["orders"]
    # an order registered with the ledger (asynchronous after on_confirm), so the cancellation has something to
    # undo there. (dc-north-scotland's site has dc-01's meter id in conftest.two_city_config, so the ledger refuses
    # whichever of the two registers second: "meter MTR-0001 belongs to another provider".)
    registered = eventually(
        lambda: [o for o in accepted if rows(db_url, "SELECT 1 FROM ledger.orders WHERE order_id = %s", o["order_id"])],
        timeout=30,
    )
    victim = registered[0]
    r = _admin_cancel(network, victim["bpp_id"], victim["order_id"], {"reason": REASON})
    assert r.status_code == 200, r.text
    assert r.json() == {"order_id": victim["order_id"], "state": "CANCELLED", "reason": REASON}
    # covered again after a re-procurement: a second `covered` entry follows the `reprocure` one
    view = _until(
        network,
        pid,
        lambda v: "reprocure" in _kinds(v) and v["status"] in FINAL and _kinds(v).count(v["status"]) >= 2,
    )
    return {"pid": pid, "first": first, "view": view, "victim": victim}


def test_a_provider_cancelling_later_is_replaced(cancelled_later: dict[str, Any], db_url: str) -> None:
    view, victim = cancelled_later["view"], cancelled_later["victim"]
    assert view["status"] == "covered", view["status_reason"]
    assert _covered(view) and view["shortfall_kw"] == 0
    at_bap = {o["order_ref"]: o for o in view["orders"]}
    assert at_bap[victim["order_ref"]]["state"] == "CANCELLED"
    assert at_bap[victim["order_ref"]]["cancelled_by"] == "PROVIDER"  # the on_cancel said so, not CONSUMER
    [failed] = [e for e in view["market_log"] if e["kind"] == "order_failed"]
    assert failed["detail"]["cancelled_by"] == "PROVIDER" and "cancelled by the provider" in failed["message"]
    replacements = [
        o for o in view["orders"] if o["order_ref"] not in {x["order_ref"] for x in cancelled_later["first"]["orders"]}
    ]
    assert replacements and all(o["state"] == "ACCEPTED" for o in replacements)
    assert all(o["provider_id"] != victim["provider_id"] for o in replacements)
    live_kw = sum(o["power_kw"] for o in view["orders"] if o["state"] == "ACCEPTED")
    assert live_kw >= 700.0 - 0.1
    kinds = _kinds(view)
    assert kinds.index("order_failed") < kinds.index("reprocure")
    # every order was initialised and confirmed exactly once (no re-send on a later tick of the engine)
    sent = dict(
        rows(
            db_url,
            "SELECT action, count(*) FROM bap.outbox WHERE action IN ('init', 'confirm') AND transaction_id IN "
            "(SELECT transaction_id FROM bap.orders WHERE procurement_id = %s) GROUP BY action",
            cancelled_later["pid"],
        )
    )
    assert sent == {"init": len(view["orders"]), "confirm": len(view["orders"])}
    # the provider's side: CANCELLED with its reason; the ledger's: the registration cancelled
    [(state, reason)] = rows(
        db_url, "SELECT state, cancellation_reason FROM bpp.orders WHERE id = %s", victim["order_id"]
    )
    assert (state, reason) == ("CANCELLED", REASON)
    [(cancelled_by,)] = rows(db_url, "SELECT cancelled_by FROM bpp.orders WHERE id = %s", victim["order_id"])
    assert cancelled_by == "PROVIDER"
    eventually(
        lambda: rows(db_url, "SELECT 1 FROM ledger.order_cancellations WHERE order_id = %s", victim["order_id"]), 30
    )


def test_the_providers_reason_reaches_the_buyer_and_the_market_log(cancelled_later: dict[str, Any]) -> None:
    view, victim = cancelled_later["view"], cancelled_later["victim"]
    [failed] = [e for e in view["market_log"] if e["kind"] == "order_failed"]
    assert failed["provider_id"] == victim["provider_id"] and failed["order_ref"] == victim["order_ref"]
    assert REASON in failed["message"], failed["message"]
    [at_bap] = [o for o in view["orders"] if o["order_ref"] == victim["order_ref"]]
    assert REASON in (at_bap["cancellation_reason"] or ""), at_bap


def test_the_admin_cancel_is_refused_without_the_token_or_when_not_cancellable(
    network: Network, cancelled_later: dict[str, Any]
) -> None:
    victim = cancelled_later["victim"]
    assert (
        _admin_cancel(network, victim["bpp_id"], victim["order_id"], {"reason": "x"}, token="wrong").status_code == 403
    )
    again = _admin_cancel(network, victim["bpp_id"], victim["order_id"], {"reason": "again"})
    assert again.status_code == 409 and again.json()["error"]["message"].startswith("order_id")
    assert _admin_cancel(network, victim["bpp_id"], str(uuid.uuid4()), {"reason": "x"}).status_code == 404
    assert _admin_cancel(network, victim["bpp_id"], victim["order_id"], {}).status_code == 400


# -- the kill switch in flight ---------------------------------------------------------------------------------
def test_the_kill_switch_halts_a_covered_procurement_and_cancels_its_orders(network: Network, db_url: str) -> None:
    pid = _procure(network, HALT_SLOT, [400.0])
    covered = _final(network, pid)
    assert covered["status"] == "covered", covered["status_reason"]
    accepted = [o for o in covered["orders"] if o["state"] == "ACCEPTED"]
    assert accepted
    try:
        r = _api(network, "POST", "/halt", json={"reason": "test: grid emergency in flight"})
        assert r.status_code == 200 and r.json()["halted"] is True, r.text
        halted = _until(network, pid, lambda v: all(o["state"] == "CANCELLED" for o in v["orders"]), timeout=60)
    finally:
        assert _api(network, "POST", "/resume", json={"reason": "test over"}).json()["halted"] is False
    assert halted["status"] == "halted" and "kill switch" in (halted["status_reason"] or "")
    assert "halted" in _kinds(halted)
    for o in accepted:
        [(state,)] = rows(db_url, "SELECT state FROM bpp.orders WHERE id = %s", o["order_id"])
        assert state == "CANCELLED"
    # a halted procurement stays halted after the switch is lifted: nothing is re-bought
    assert _view(network, pid)["status"] == "halted"


# -- a provider that goes silent --------------------------------------------------------------------------------
SILENT_ID = "silent-platform.bpp.flexmarket.test"
SILENT_PROVIDER = "dc-silent"
MESSAGE_TTL_S = 8


def _silent_config(network_start: datetime) -> dict[str, Any]:
    """One static provider, cheaper than the network's, so the first choice is its offer."""
    site = {"id": "silent-site", "region": "GB-R13", "meter_id": "MTR-SILENT", "baseline_kw": 2000, "name": "Silent"}
    offer = {
        "id": "dc-silent-evening",
        "location_id": site["id"],
        "name": "Silent evening turn-down",
        "window_start": network_start.isoformat(),
        "window_end": (network_start + timedelta(hours=4)).isoformat(),
        "available_kw": 600,
        "min_kw": 100,
        "max_kw": 600,
        "price_gbp_per_mwh": 90,
        "resource_type": "compute",
        "min_duration_min": 30,
        "max_duration_min": 240,
        "response_time_s": 300,
    }
    provider = {"id": SILENT_PROVIDER, "name": "Silent DC", "sites": [site], "offers": [offer]}
    platform = {
        "subscriber_id": SILENT_ID,
        "slug": "silent",
        "name": "Silent platform",
        "city_codes": ["GB-R13"],
        "country_code": "GBR",
        "providers": [provider],
    }
    return {"platforms": [platform]}


def _signal_group(p: Process, sig: signal.Signals) -> None:
    if p.alive():
        assert p.popen is not None
        os.killpg(p.popen.pid, sig)


@pytest.fixture()
def two_bpps(pg_server_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[Network, Network]]:
    """A network of its own (message TTL MESSAGE_TTL_S) and a second BPP platform in a process of its own, with
    its own worker, database, home and Celery queue."""
    extra = {"FLEXMARKET_MESSAGE_TTL_S": str(MESSAGE_TTL_S), "FLEXMARKET_REGISTRY_CACHE_TTL_S": "1"}
    (tmp_path / "net").mkdir()
    with own_network(
        pg_server_url,
        redis_url,
        tmp_path / "net",
        prefix="fm_silent_net",
        providers_config=example_config(2),
        extra_env=extra,
    ) as net:
        home = tmp_path / "silent"
        home.mkdir()
        providers_file = home / "providers.json"
        providers_file.write_text(json.dumps(_silent_config(tomorrow_window(16)[0])))
        url = db.create_database(pg_server_url, "fm_silent_bpp")
        silent = own_bpp(net, home=home, database_url=url, providers_file=providers_file, name="silent")
        try:
            silent.start(timeout=90)
            yield net, silent
        finally:
            _signal_group(silent.processes["worker"], signal.SIGCONT)  # a frozen worker cannot stop
            silent.stop()
            db.drop_database(pg_server_url, url)


@pytest.mark.slow
def test_a_provider_that_goes_silent_is_replaced(two_bpps: tuple[Network, Network]) -> None:
    """Deterministic silence: the second BPP's worker is frozen (SIGSTOP), so its web process ACKs the
    procurement's search and the search waits; then the web process is stopped and the worker thawed, and it
    answers the search. The BAP hears the silent provider's cheap offer and chooses it, but its select reaches
    nobody: no answer within the message TTL, and the gap is re-bought from the network's own BPP."""
    net, silent = two_bpps
    _signal_group(silent.processes["worker"], signal.SIGSTOP)
    bpp_db = silent.processes["bpp"].env["DATABASE_URL"]
    start = tomorrow_window(16)[0]
    pid = _procure(net, start, [500.0, 500.0])
    [tx] = eventually(lambda: _view(net, pid)["transaction_ids"], timeout=20)
    eventually(
        lambda: rows(bpp_db, "SELECT 1 FROM bpp.inbox WHERE action = 'search' AND transaction_id = %s", tx), timeout=20
    )
    silent.processes["bpp"].stop()
    _signal_group(silent.processes["worker"], signal.SIGCONT)
    view = _final(net, pid, timeout=MESSAGE_TTL_S * 4 + 30)
    assert view["status"] == "covered", "\n".join(f"{e['kind']}: {e['message']}" for e in view["market_log"])
    assert _covered(view) and view["shortfall_kw"] == 0
    [gone] = [o for o in view["orders"] if o["provider_id"] == SILENT_PROVIDER]
    assert gone["bpp_id"] == SILENT_ID and gone["state"] == "SELECTING"
    assert all(o["state"] == "ACCEPTED" for o in view["orders"] if o["provider_id"] != SILENT_PROVIDER)
    [failed] = [e for e in view["market_log"] if e["kind"] == "order_failed"]
    assert failed["provider_id"] == SILENT_PROVIDER
    assert f"no answer to select within the message TTL ({MESSAGE_TTL_S} s)" in failed["message"]
    kinds = _kinds(view)
    assert kinds.index("choice") < kinds.index("order_failed") < kinds.index("reprocure") < kinds.index("covered")
