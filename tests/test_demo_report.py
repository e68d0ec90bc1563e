"""The demo's renderers from its one data document, summary.json: the schema and its validation
(flexmarket/demo_schema.py), the 80-column console summary (flexmarket/demo_console.py) and report.html
(flexmarket/report.py), the last also opened in headless Chromium.

tests/data/demo_summary_example.json is a hand-made document in the schema: 5 data centres in 3 GB regions and a
battery-only site on 2023-01-24 (the day's real GB carbon intensity and market index prices in the load-shift
series), an evening event 17:00–19:00 in four half-hour slots, one silent provider re-procured, one order paid
with tokens.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from flexmarket import demo_format as fmt
from flexmarket.demo_console import print_summary
from flexmarket.demo_schema import SummaryError, parse_summary, validate_summary
from flexmarket.report import chart_data, render_report, write_report

EXAMPLE = Path(__file__).parent / "data" / "demo_summary_example.json"
ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture
def doc() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))


def _example() -> dict[str, Any]:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))


def _problems(doc: dict[str, Any]) -> str:
    with pytest.raises(SummaryError) as caught:
        validate_summary(doc)
    return str(caught.value)


# --- the schema ---------------------------------------------------------------------------------------


def test_the_example_is_a_valid_document_of_the_size_the_brief_asks(doc: dict[str, Any]) -> None:
    validate_summary(doc)
    s = parse_summary(doc)
    compute = [p for p in s.providers if p.resource_type == "compute"]
    assert len(compute) == 5 and len({p.region for p in compute}) == 3
    assert [p.provider_id for p in s.providers if p.resource_type == "storage"] == ["bess-nw-1"]
    assert sum(p.has_battery for p in compute) == 2
    assert [(x.start[11:16], x.end[11:16]) for x in s.procurement.slots] == [
        ("17:00", "17:30"),
        ("17:30", "18:00"),
        ("18:00", "18:30"),
        ("18:30", "19:00"),
    ]
    assert len(s.load_shift.fleet.slots) == 48
    # The fleet is the sum of its providers, slot by slot (the example was made so).
    for i, slot in enumerate(s.load_shift.fleet.slots):
        parts = [series.slots[i].baseline_kw for series in s.load_shift.by_provider.values()]
        assert slot.baseline_kw == pytest.approx(sum(parts), abs=0.11)


def _key_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key of every object in the document, except the data-keyed maps (provider ids, supplier ids)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        data_keyed = path[-1:] in (("by_provider",), ("supplier_compensation_pence",))
        for key, value in node.items():
            if not data_keyed:
                out.append((*path, key))
            out += _key_paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _key_paths(value, (*path, i))
    return out


def _display(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_]\w*", part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text


def _delete(doc: dict[str, Any], path: tuple[Any, ...]) -> None:
    node: Any = doc
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_key_paths(_example())))
def test_any_missing_key_is_named_by_its_path(path: tuple[Any, ...]) -> None:
    doc = _example()
    _delete(doc, path)
    assert f"{_display(path)}: missing" in _problems(doc)


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        (("procurement", "slots", 2, "target_kw"), "procurement.slots[2].target_kw: missing"),
        (("ledger", "head_hash"), "ledger.head_hash: missing"),
        (
            ("load_shift", "by_provider", "dc-lon-1", "totals", "planned_cost_gbp"),
            "load_shift.by_provider['dc-lon-1'].totals.planned_cost_gbp: missing",
        ),
        (("schema",), "schema: missing"),
    ],
)
def test_missing_keys_read_as_paths(doc: dict[str, Any], path: tuple[Any, ...], shown: str) -> None:
    _delete(doc, path)
    assert shown in _problems(doc)


def test_extra_keys_are_tolerated_everywhere(doc: dict[str, Any]) -> None:
    doc["run_id"] = "abc"
    doc["procurement"]["slots"][0]["note"] = "added by the lead"
    doc["load_shift"]["fleet"]["slots"][3]["forecast_carbon_g_per_kwh"] = 231.0
    doc["settlement"]["scrp_gbp_per_mwh"] = 98.53
    doc["tokens"]["series"][0]["valid_to"] = "2023-01-24T21:00:00Z"
    validate_summary(doc)


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        (lambda d: d.update(seed="7"), "seed: Input should be a valid integer"),
        (lambda d: d["providers"][0].update(has_battery=1), "providers[0].has_battery"),
        (lambda d: d["providers"][0].update(resource_type="gas"), "providers[0].resource_type"),
        (lambda d: d["procurement"]["orders"][0].update(payment="EUR"), "procurement.orders[0].payment"),
        (lambda d: d["settlement"]["providers"][1].update(net_pence=205.31), "settlement.providers[1].net_pence"),
        (lambda d: d["procurement"].update(expected_cost_gbp="1458"), "procurement.expected_cost_gbp"),
        (lambda d: d["event"].update(window_start="2023-01-24T17:00:00+01:00"), "event.window_start: "),
        (lambda d: d["event"].update(window_start="at five"), "event.window_start: "),
        (lambda d: d.update(schema="flexmarket-demo-summary/2"), "schema: "),
        (lambda d: d["tokens"]["series"][0].update(minted=-1), "tokens.series[0].minted"),
        (lambda d: d["settlement"]["providers"][0].update(statement_csv="/etc/passwd"), "statement_csv"),
        (lambda d: d["settlement"]["providers"][0].update(statement_json="../x.json"), "statement_json"),
        (lambda d: d["files"].update(market="https://example.org/m.jsonl"), "files.market"),
        (lambda d: d["files"].update(report="out/report.html"), "files.report: 'out/report.html' is not a file name"),
        # invariants beyond the shapes
        (lambda d: d["procurement"]["orders"][0].update(provider_id="dc-nowhere"), "procurement.orders[0].provider_id"),
        (lambda d: d["providers"][1].update(provider_id="dc-lon-1"), "providers[1].provider_id: 'dc-lon-1' appears"),
        (lambda d: d["tokens"]["series"][1].update(outstanding=5), "tokens.series[1]: minted 6 ≠ outstanding 5"),
        (lambda d: d["settlement"].update(supplier_compensation_total_pence=1), "supplier_compensation_total_pence"),
        (lambda d: d["procurement"]["slots"][1].update(end="2023-01-24T17:00:00Z"), "procurement.slots[1]: ends"),
        (lambda d: d["procurement"]["slots"].reverse(), "procurement.slots[1].start"),
        (lambda d: d["procurement"].update(settled_cost_pence=1), "procurement.settled_cost_gbp: £1447.31 disagrees"),
    ],
)
def test_bad_values_are_refused_with_their_path(doc: dict[str, Any], change: Any, shown: str) -> None:
    change(doc)
    assert shown in _problems(doc)


def test_a_matching_pence_companion_is_accepted(doc: dict[str, Any]) -> None:
    doc["procurement"]["settled_cost_pence"] = 144731
    validate_summary(doc)


def test_not_an_object() -> None:
    with pytest.raises(SummaryError, match="a JSON object is required"):
        validate_summary([])  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), st.sampled_from([fmt.kw, fmt.kwh, fmt.kg_co2]))
def test_quantities_read_back_as_the_rounded_value(value: float, show: Any) -> None:
    text = show(value)
    number, unit = text.split(" ", 1)
    assert unit in ("kW", "kWh", "kg CO₂")
    back = Decimal(number.replace("−", "-").replace(",", ""))
    assert abs(back - Decimal(repr(value))) <= Decimal("0.05")
    assert number.startswith("−") == (back < 0)  # a true minus sign, never on a zero


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_pence_read_back_exactly(amount_pence: int) -> None:
    text = fmt.gbp_pence(amount_pence)
    assert re.fullmatch(r"−?£\d{1,3}(,\d{3})*\.\d\d", text)
    assert Decimal(text.replace("−", "-").replace("£", "").replace(",", "")) * 100 == amount_pence


# --- the console summary -----------------------------------------------------------------------------


def _console_text(doc: dict[str, Any]) -> str:
    console = Console(width=80, record=True, file=open("/dev/null", "w"), color_system=None)  # noqa: SIM115
    print_summary(console, doc)
    console.file.close()
    return console.export_text()


def _assert_fits(text: str) -> None:
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert not too_long, too_long
    assert "…" not in text and "..." not in text


def test_console_summary_fits_80_columns_and_shows_everything_whole(doc: dict[str, Any]) -> None:
    text = _console_text(doc)
    _assert_fits(text)
    lines = text.splitlines()
    for p in doc["providers"]:
        assert p["provider_id"] in text
    payments = lines[lines.index(next(x for x in lines if x.startswith("Payments per provider"))) :]
    for row in doc["settlement"]["providers"]:
        # each provider's row in the payments table starts with its whole id, then its figures with units
        assert any(x.startswith(row["provider_id"] + " ") and "kWh" in x and "£" in x for x in payments)
        for path in (row["statement_csv"], row["statement_json"]):
            assert any(x.strip() == path for x in lines), path
    for heading in (
        "Event: kW procured vs target per slot",
        "Cost and carbon against run-at-release",
        "Payments per provider",
        "Supplier compensation",
        "Compute Flex Tokens",
        "Ledger",
    ):
        assert heading in text
    assert doc["ledger"]["head_hash"] in text
    assert "17:00–17:30   4,000.0 kW   3,500.0 kW   3,505.0 kW    500.0 kW" in text
    assert "£38,615.08" in text and "59,465.5 kg CO₂" in text and "254 gCO₂/kWh" in text
    assert "−£5.00" in text  # dc-lon-2's shortfall charge
    assert "total £744.45 against £1,147.31 paid to providers" in text
    assert "Why compensation can exceed the payments" in text
    assert "orchestrator bought 2 CFT and redeemed 2 CFT" in text


def test_every_number_in_the_console_summary_carries_a_unit(doc: dict[str, Any]) -> None:
    """A bare number (not an identifier, date, time or £ amount) is followed by its unit or counted noun."""
    units = {"kW", "kWh", "MWh", "kg", "gCO₂/kWh", "CFT", "entries", "providers", "regions"}
    labels = {"seed", "policy"}  # a seed and a policy version are names, not quantities
    doc["ledger"]["verify_summary"] = "every entry re-hashed and linked"  # the ledger's own words, not ours
    checked = 0
    for line in _console_text(doc).splitlines():
        words = [w.strip(",;:.()") for w in line.split()]
        for i, word in enumerate(words):
            if re.fullmatch(r"−?[\d,]+(?:\.\d+)?", word):
                checked += 1
                after = words[i + 1] if i + 1 < len(words) else ""
                before = words[i - 1] if i else ""
                assert after in units or before in labels, (word, line)
    assert checked > 50


def test_console_summary_with_long_names_wraps_and_never_cuts(doc: dict[str, Any]) -> None:
    text = json.dumps(doc).replace("dc-lon-1", "northwest-hyperscale-campus-building-7")
    long_doc = json.loads(text.replace("2023-01-24.csv", "2023-01-24-final-reconciliation-statement-run-df.csv"))
    long_doc["providers"][1]["name"] = "[bold]Park Royal[/bold] " + "Inference Hall " * 8
    out = _console_text(long_doc)
    _assert_fits(out)
    assert "northwest-hyperscale-campus-building-7 verified" in out  # whole on its own line
    assert "[bold]Park Royal[/bold]" in out  # names are text, never console markup


def test_console_states_the_reference_price_and_a_failed_verification_when_the_document_does(
    doc: dict[str, Any],
) -> None:
    assert "SCRP)" in _console_text(doc)
    doc["settlement"]["scrp_gbp_per_mwh"] = 98.53
    doc["ledger"]["verified"] = False
    doc["settlement"]["providers"][1]["statement_verified"] = False
    text = _console_text(doc)
    assert "(SCRP, £98.53/MWh)" in text
    assert "chain NOT verified" in text and "dc-lon-2 NOT verified" in text


def test_console_refuses_an_invalid_document(doc: dict[str, Any]) -> None:
    del doc["ledger"]["verified"]
    with pytest.raises(SummaryError, match=r"ledger\.verified: missing"):
        _console_text(doc)


# --- report.html ------------------------------------------------------------------------------------


class _Scripts(HTMLParser):
    """The page's <script> elements as (attributes, text), and every src/href the page names."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.urls: list[str] = []
        self._open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "script":
            self._open = dict(attrs)
            self.scripts.append((self._open, ""))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open = None


def _parse(html: str) -> _Scripts:
    page = _Scripts()
    page.feed(html)
    return page


def _embedded(html: str) -> Any:
    [(_, text)] = [(a, t) for a, t in _parse(html).scripts if a.get("id") == "report-data"]
    return json.loads(text)


def test_report_embeds_the_documents_chart_data_once(doc: dict[str, Any]) -> None:
    html = render_report(doc)
    data = _embedded(html)
    assert data["load_shift"] == doc["load_shift"]
    assert data["event_slots"] == doc["procurement"]["slots"]
    assert data["token_series"] == doc["tokens"]["series"]
    assert data["event"] == {"window_start": "2023-01-24T17:00:00Z", "window_end": "2023-01-24T19:00:00Z"}
    assert data == chart_data(doc)
    assert html.count('id="report-data"') == 1


def test_report_is_self_contained_and_links_statements_relatively(doc: dict[str, Any]) -> None:
    html = render_report(doc)
    page = _parse(html)
    assert all(a.get("src") is None for a, _ in page.scripts)  # every script inline
    assert "<link" not in html and "<img" not in html and "<iframe" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert [u for u in page.urls if "://" in u or u.startswith("//")] == []
    for row in doc["settlement"]["providers"]:
        assert row["statement_csv"] in page.urls and row["statement_json"] in page.urls
    vendored = (Path(__file__).parent.parent / "bap" / "static" / "vendor" / "chart.min.js").read_text("utf-8")
    assert vendored in html


def test_report_shows_the_figures_an_operator_and_finance_read(doc: dict[str, Any]) -> None:
    html = render_report(doc)
    for text in (
        "2023-01-24",
        "seed",
        "dc-wal-1",
        "went silent",
        "confirm not acknowledged within the message TTL; provider marked silent",
        "tokens (CFT)",
        "£210.00/MWh",
        "£504.00",  # dc-lon-1's utilisation
        "−£5.00",
        "£1,147.31",  # net total and payments
        "£744.45",  # supplier compensation
        "Why compensation can exceed the payments",
        doc["ledger"]["head_hash"],
        "1873 entries re-hashed",
        "17:00–19:00",
    ):
        assert text in html, text


def test_report_escapes_what_it_is_given(doc: dict[str, Any]) -> None:
    attack = "</script><script>alert(1)</script><!--"
    doc["providers"][0]["name"] = attack
    doc["procurement"]["slots"][0]["note"] = attack  # an extra key: lands in the embedded JSON
    doc["ledger"]["verify_summary"] = '<img src=x onerror="alert(1)">'
    html = render_report(doc)
    page = _parse(html)
    assert len(page.scripts) == 3  # the data, Chart.js, the drawing code: nothing injected
    assert _embedded(html)["event_slots"][0]["note"] == attack
    assert "<img" not in html and "&lt;/script&gt;&lt;script&gt;alert(1)" in html


def test_report_says_so_when_the_ledger_did_not_verify(doc: dict[str, Any]) -> None:
    assert "NOT verified" not in render_report(doc)
    doc["ledger"]["verified"] = False
    doc["settlement"]["providers"][0]["statement_verified"] = False
    html = render_report(doc)
    assert html.count('class="v bad">NOT verified') == 1 and "not verified</span>" in html


def test_report_refuses_an_invalid_document(doc: dict[str, Any], tmp_path: Path) -> None:
    del doc["settlement"]["providers"][0]["net_pence"]
    with pytest.raises(SummaryError, match=r"settlement\.providers\[0\]\.net_pence: missing"):
        write_report(doc, tmp_path)
    assert not (tmp_path / "report.html").exists()


_CHARTS_JS = """() => Array.from(document.querySelectorAll("canvas[data-chart]")).map((c) => {
  const chart = Chart.getChart(c);
  return {
    kind: c.dataset.chart, series: c.dataset.series || null, width: c.width, height: c.height,
    labels: chart ? chart.data.labels : null,
    datasets: chart ? chart.data.datasets.map((d) => ({label: d.label, data: Array.from(d.data)})) : null,
  };
})"""


def test_report_draws_every_chart_in_headless_chromium(doc: dict[str, Any], tmp_path: Path) -> None:
    check_report_in_chromium(doc, write_report(doc, tmp_path), "report.png")


def check_report_in_chromium(doc: dict[str, Any], path: Path, screenshot: str) -> None:
    """`path` (report.html of `doc`) in headless chromium: no console or page error, no request leaves file://,
    and every chart is drawn by Chart.js from the document's figures, value for value."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it with apt-get): report.html not drawn")
    problems: list[str] = []
    requests: list[str] = []
    blocked: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
            page.on("request", lambda r: requests.append(r.url))

            def only_files(route: Any) -> None:
                if route.request.url.startswith("file://"):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            page.route("**/*", only_files)
            page.goto(path.as_uri(), wait_until="load")
            charts = page.evaluate(_CHARTS_JS)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert blocked == [] and all(u.startswith("file://") for u in requests), requests
    kinds = [(c["kind"], c["series"]) for c in charts]
    providers = list(doc["load_shift"]["by_provider"])
    assert kinds == [
        ("event", None),
        ("load-shift", "fleet"),
        *(("load-shift", pid) for pid in providers),
        ("tokens", None),
    ]
    for c in charts:
        assert c["width"] > 0 and c["height"] > 0, c["kind"]
        assert c["datasets"], f"no Chart.js instance on {c}"
        assert any(len(d["data"]) > 0 for d in c["datasets"])
    by_key = {(c["kind"], c["series"]): c for c in charts}
    # What the charts draw is the document's figures, value for value.
    slots = doc["procurement"]["slots"]
    event = by_key[("event", None)]["datasets"]
    assert [d["data"] for d in event] == [[x[k] for x in slots] for k in ("target_kw", "covered_kw", "delivered_kw")]
    assert by_key[("event", None)]["labels"][0] == "17:00–17:30"
    for key in ["fleet", *providers]:
        series = doc["load_shift"]["fleet"] if key == "fleet" else doc["load_shift"]["by_provider"][key]
        drawn = by_key[("load-shift", key)]
        fields = ("baseline_kw", "planned_kw", "price_gbp_per_mwh", "carbon_g_per_kwh")
        assert [d["data"] for d in drawn["datasets"]] == [[x[f] for x in series["slots"]] for f in fields]
        at_five = next(
            k for k, x in enumerate(series["slots"]) if datetime.fromisoformat(x["start"]).astimezone(UTC).hour == 17
        )
        assert drawn["labels"][at_five] == "17:00"  # Europe/London, GMT in January
    tokens = by_key[("tokens", None)]["datasets"]
    flows = ("minted", "sold", "redeemed", "expired", "outstanding")
    assert [d["data"] for d in tokens] == [[t[f] for t in doc["tokens"]["series"]] for f in flows]
    assert (ARTIFACTS / screenshot).stat().st_size > 10_000
