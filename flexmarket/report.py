"""report.html: the demo's `summary.json` as one self-contained page (no network) for an operator, an aggregator
and a finance team.

The page is `templates/report.html.j2` (Jinja2, autoescaped) with the vendored Chart.js inlined
(bap/static/vendor/chart.min.js, 3.9.1, category axes only). The charts' data is embedded once, verbatim from
the document, as JSON in `<script type="application/json" id="report-data">` (`chart_data`); every chart is
drawn from it, so a test can compare what the charts show with the ledger's figures. A Content-Security-Policy
in the page refuses every request, so nothing it shows can come from anywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from flexmarket import demo_format
from flexmarket.demo_schema import DemoSummary, parse_summary

TEMPLATE = "report.html.j2"
TIME_ZONE = "Europe/London"  # the charts' labels, as demo_format.LONDON for the tables


def chart_js() -> str:
    """The vendored Chart.js, checked safe to inline in a <script> element."""
    text = files("bap").joinpath("static/vendor/chart.min.js").read_text(encoding="utf-8")
    lowered = text.lower()
    if "</script" in lowered or "<!--" in lowered:
        raise ValueError("bap/static/vendor/chart.min.js cannot be inlined: it contains '</script' or '<!--'")
    return text


def chart_data(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What the charts draw, copied unchanged from the document: the load-shift series (fleet and per
    provider), the event's slots, the token series, and the time zone of the labels."""
    return {
        "time_zone": TIME_ZONE,
        "event": {"window_start": doc["event"]["window_start"], "window_end": doc["event"]["window_end"]},
        "load_shift": doc["load_shift"],
        "event_slots": doc["procurement"]["slots"],
        "token_series": doc["tokens"]["series"],
    }


def script_json(data: Any) -> Markup:
    """JSON safe inside a <script> element: '<', '>' and '&' as \\u escapes, so no '</script>' or '<!--' can
    end or confuse the element; JSON.parse reads the same values back."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("flexmarket", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        gbp_pence=demo_format.gbp_pence,
        gbp=demo_format.gbp,
        gbp_per_mwh=demo_format.gbp_per_mwh,
        kw=demo_format.kw,
        kwh=demo_format.kwh,
        kg_co2=demo_format.kg_co2,
        g_per_kwh=demo_format.g_per_kwh,
        tokens=demo_format.tokens,
        local_time=demo_format.local_time,
        local_datetime=demo_format.local_datetime,
        region=demo_format.region,
    )
    env.globals["local_window"] = demo_format.local_window
    return env


def render_report(doc: Mapping[str, Any]) -> str:
    """report.html's text for a valid summary document (`SummaryError` otherwise)."""
    return _render(parse_summary(doc), doc)


def write_report(doc: Mapping[str, Any], out_dir: Path) -> Path:
    """Write report.html (the document's `files.report` name) into `out_dir`; return its path. An invalid
    document raises `SummaryError` and writes nothing."""
    summary = parse_summary(doc)
    html = _render(summary, doc)
    path = out_dir / summary.files.report
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def _render(summary: DemoSummary, doc: Mapping[str, Any]) -> str:
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            s=summary,
            names={p.provider_id: p.name for p in summary.providers},
            settled=_settlement_totals(summary),
            why=demo_format.compensation_why(summary),
            chart_json=script_json(chart_data(doc)),
            chart_js=Markup(chart_js()),
        )
    )


def _settlement_totals(summary: DemoSummary) -> dict[str, float | int]:
    rows = summary.settlement.providers
    return {
        "contracted_kwh": sum(r.contracted_kwh for r in rows),
        "delivered_kwh": sum(r.delivered_kwh for r in rows),
        "utilisation_pence": sum(r.utilisation_pence for r in rows),
        "shortfall_pence": sum(r.shortfall_pence for r in rows),
        "net_pence": sum(r.net_pence for r in rows),
    }
