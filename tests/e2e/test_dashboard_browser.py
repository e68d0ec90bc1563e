"""The operator dashboard (/dashboard on the BAP) driven in real headless Chromium (Playwright with Debian's
`chromium`, never a downloaded browser), on the shared network's real processes:

- an operator logs in with its API key, sees a real procurement waiting for approval, clicks Approve in the page,
  and the procurement (read through the JSON API) leaves pending_approval and gets its orders, which the page
  then shows with their states, its chart drawn;
- a viewer logs in and sees a pending procurement with no approve button, and a POST it forges with its own
  session and CSRF token is refused 403;
- neither page logs a console error; a screenshot is kept at tests/artifacts/dashboard.png.

The procurements ask for 100 kW over 08:30–09:00 the day after tomorrow, within the static morning offers
(06:00–09:00; the offers have no midday window, so a procurement there could never reach an approval). Beside
it, tests/e2e/test_procurement_failures.py's kill switch test takes 400 of the 1,500 kW those offers hold then,
and halts this module's procurement with every other open one, after it. The approval threshold comes from a
policy version this test activates and replaces by the previous one as soon as its procurements wait.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from flexmarket.runner import Network
from tests.conftest import ROOT
from tests.e2e.helpers import bap_headers, bap_key, eventually, tomorrow_window

CHROMIUM = shutil.which("chromium")
NO_CHROMIUM = "Debian's chromium is not installed here (`.ci/run` installs it with apt-get)"
# skipped before the shared network is started for it
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)]
SLOT_START = tomorrow_window(32, 1)[0] + timedelta(minutes=30)  # 08:30 the day after tomorrow
SCREENSHOT = ROOT / "tests" / "artifacts" / "dashboard.png"
FINAL = ("covered", "partially_covered", "failed", "cancelled", "halted")


def _api(net: Network, method: str, path: str, role: str = "operator", **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{net.url('bap')}/api/v1{path}", headers=bap_headers(net, role), timeout=30, **kw)


def _view(net: Network, pid: str) -> dict[str, Any]:
    r = _api(net, "GET", f"/procurements/{pid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _until(net: Network, pid: str, statuses: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    return eventually(lambda: (v := _view(net, pid))["status"] in statuses and v, timeout=timeout, interval=0.5)


def _activate(net: Network, version: int) -> None:
    r = _api(net, "POST", f"/policies/{version}/activate", json={"mode": "active", "reason": "dashboard test"})
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def waiting(network: Network) -> Iterator[list[str]]:
    """Two procurements waiting for approval (a policy whose threshold is 0.05 MW asks for 0.1 MW)."""
    base = _api(network, "GET", "/policies/active").json()["version"]
    r = _api(network, "POST", "/policies", json={"body": {"approval": {"max_power_mw": 0.05}}, "note": "dashboard"})
    assert r.status_code == 201, r.text
    _activate(network, int(r.json()["version"]))
    slot = {"start": SLOT_START.isoformat(), "end": (SLOT_START + timedelta(minutes=30)).isoformat(), "target_kw": 100}
    pids = []
    try:
        for _ in range(2):
            r = _api(network, "POST", "/procurements", json={"slots": [slot], "objective": "cost"})
            assert r.status_code == 202, r.text
            pids.append(r.json()["procurement_id"])
        for pid in pids:
            v = _until(network, pid, ("pending_approval", *FINAL))
            assert v["status"] == "pending_approval", v["status_reason"]
    finally:
        _activate(network, base)
    yield pids
    for pid in pids:  # whatever is still waiting is rejected, so nothing lingers for the later tests
        if _view(network, pid)["status"] == "pending_approval":
            _api(network, "POST", f"/procurements/{pid}/reject", json={"reason": "dashboard test over"})


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip(NO_CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """One browser context and page, with the console errors and uncaught exceptions it logs."""

    def __init__(self, browser: Any, net: Network) -> None:
        self.base = net.url("bap")
        self.context = browser.new_context(viewport={"width": 1440, "height": 1000})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def login(self, key: str) -> None:
        self.page.goto(f"{self.base}/dashboard/login")
        self.page.fill("#api_key", key)
        with self.page.expect_navigation():
            self.page.click("form[action='/dashboard/login'] button[type=submit]")
        assert self.page.url == f"{self.base}/dashboard", self.page.content()[:2000]

    def wait_lazy_panels(self) -> None:
        for name in ("tokens", "ledger", "loadshift"):
            self.page.wait_for_function(
                f"() => !document.querySelector('#panel-{name} .panel-body').textContent.includes('loading…')",
                timeout=20_000,
            )


def test_an_operator_approves_in_the_page_and_a_viewer_cannot(
    network: Network, waiting: list[str], chromium: Any
) -> None:
    approve, other = waiting
    operator = Tab(chromium, network)
    operator.login(bap_key(network, "operator"))
    page = operator.page
    page.goto(f"{operator.base}/dashboard?procurement={approve}")
    card = page.locator(f"#panel-approvals article[data-procurement='{approve}']")
    assert card.count() == 1 and "above the policy" in card.inner_text()
    assert page.locator(f"#panel-detail .summary[data-procurement='{approve}'] .status").inner_text() == (
        "pending_approval"
    )
    card.locator("input[name=reason]").fill("approved in the browser")
    with page.expect_navigation():
        card.locator("button.approve").click()
    assert "notice=approved" in page.url and "approved" in page.locator(".notice").inner_text().lower()

    # the JSON API sees the decision, with who and why
    decided = _view(network, approve)
    assert decided["status"] != "pending_approval"
    assert decided["decided_by"] == bap_key(network, "operator").split("_")[1]
    # the reason is the market log's (the status reason moves on as the orders are placed)
    assert any(
        e["kind"] == "approved" and e["message"].endswith(": approved in the browser") for e in decided["market_log"]
    ), decided["market_log"]
    covered = _until(network, approve, FINAL, timeout=60)
    assert covered["status"] == "covered", covered["status_reason"]
    orders = [o for o in covered["orders"] if o["state"] == "ACCEPTED"]
    assert orders

    # the page, refreshing itself, shows those orders with their states (no reload)
    for o in orders:
        row = page.locator(f"#panel-detail tr.order-row[data-order='{o['order_ref']}']")
        row.wait_for(timeout=20_000)
        page.wait_for_function(
            "([sel, state]) => document.querySelector(sel)?.textContent.includes(state)",
            arg=[f"#panel-detail tr.order-row[data-order='{o['order_ref']}']", "ACCEPTED"],
            timeout=20_000,
        )
        assert o["provider_id"] in row.inner_text()
    drawn = page.evaluate(
        "() => { const c = Chart.getChart(document.getElementById('chart-slots'));"
        " return c ? c.data.datasets.map(d => d.data) : null; }"
    )
    assert drawn is not None and drawn[0] == [100] and drawn[1][0] >= 100  # target, then covered kW
    operator.wait_lazy_panels()

    # the ledger panel: its verify button shows the ledger's own answer in place; a statement downloads through
    # the BAP, with the BAP's ledger key
    page.click("#panel-ledger form[data-into] button")
    page.wait_for_function("() => !document.getElementById('verify-result').textContent.includes('working')")
    verdict = page.locator("#verify-result").inner_text()
    assert verdict.startswith("Verified"), verdict
    with page.expect_download() as download:
        page.click("#panel-ledger form.statement button[type=submit]")
    path = download.value.path()
    assert download.value.suggested_filename.endswith(".csv") and path is not None
    assert "," in path.read_text().splitlines()[0]  # the ledger's CSV header
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000

    viewer = Tab(chromium, network)
    viewer.login(bap_key(network, "viewer"))
    vpage = viewer.page
    vpage.goto(f"{viewer.base}/dashboard?procurement={other}")
    card = vpage.locator(f"#panel-approvals article[data-procurement='{other}']")
    assert card.count() == 1 and "Read-only" in card.inner_text()
    assert vpage.locator("button.approve, button.reject, button.halt, form[action*='/approve']").count() == 0
    csrf = vpage.locator("input[name=csrf_token]").first.get_attribute("value")
    forged = viewer.context.request.post(
        f"{viewer.base}/dashboard/procurements/{other}/approve",
        form={"csrf_token": csrf or "", "reason": "forged by a viewer"},
        headers={"Origin": viewer.base},
        max_redirects=0,
    )
    assert forged.status == 403 and "operator" in forged.text()
    assert _view(network, other)["status"] == "pending_approval"
    viewer.wait_lazy_panels()

    assert operator.errors == [] and viewer.errors == [], operator.errors + viewer.errors
    operator.context.close()
    viewer.context.close()
