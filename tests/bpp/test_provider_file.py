"""A data centre's provider file (bpp/provider_file.py) and `flexmarket provider init / validate /
own-platform`: the template and the committed example are valid as written, every problem names its field,
and validate shows the offers the agent's 48 h plan would publish."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from bpp.catalog import parse_config
from bpp.provider_file import check_provider, parse_provider, provider_template
from flexmarket.cli import app
from schemas.limits import MAX_KW

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "provider.json"
runner = CliRunner()


def _fields(data: Any) -> list[str]:
    return [e.field for e in check_provider(data)]


def test_template_and_committed_example_are_valid() -> None:
    assert check_provider(provider_template()) == []
    example = json.loads(EXAMPLE.read_text())
    provider = parse_provider(example)
    assert provider.id == "example-dc"
    assert provider.agent is not None and "$comment" not in json.dumps(provider.agent)  # notes are not planned on
    assert [s.id for s in provider.sites] == [s["id"] for s in provider.agent["sites"]]


def _set(path: str, value: Any) -> dict[str, Any]:
    data = provider_template()
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("id", "has space", "id"),
        ("id", _DELETE, "id"),
        ("sites", [], "sites"),
        ("name", "two\nlines", "name"),
        ("sites.0.region", "GB\x00R13", "sites[0].region"),
        ("sites.0.meter_id", _DELETE, "sites[0].meter_id"),
        ("sites.0.baseline_kw", -5, "sites[0].baseline_kw"),
        ("sites.0.baseline_kw", "lots", "sites[0].baseline_kw"),
        ("sites.0.colour", "red", "sites[0].colour"),
        ("agent", _DELETE, "agent"),
        ("agent.horizon_slots", 1, "agent.horizon_slots"),
        ("agent.kind", "gas", "agent.kind"),
        ("agent.kind", "storage", "agent.jobs"),  # one planner per site: a storage provider runs no jobs
        ("agent.signals", {"source": "crystal ball"}, "agent.signals.source"),
        ("agent.sites.0.id", "elsewhere", "agent.sites[0].id"),
        ("agent.sites.0.capacity_kw", [1.0] * 47, "agent.sites[0].capacity_kw"),
        ("agent.sites.0.capacity_kw", 0, "agent.sites[0].capacity_kw"),
        ("agent.sites.0.battery.energy_kwh", _DELETE, "agent.sites[0].battery"),
        ("agent.sites.0.battery.round_trip_efficiency", 1.5, "agent.sites[0].battery"),
        ("agent.jobs.source", "mainframe", "agent.jobs.source"),
        ("agent.jobs.n_jobs", -1, "agent.jobs.n_jobs"),
        ("agent.actions.max_deferral_min", 45, "agent.actions"),
        ("agent.actions.teleport", True, "agent.actions"),
        ("agent.objective.kind", "happiness", "agent.objective"),
        ("agent.offers.levels", [0.5], "agent.offers"),
        ("agent.offers.window_slots", 0, "agent.offers"),
    ],
)
def test_each_problem_names_its_field(path: str, value: Any, field: str) -> None:
    assert field in _fields(_set(path, value))


def test_a_battery_only_provider_is_valid_without_jobs_or_capacity() -> None:
    data = provider_template("dc-battery")
    data["agent"]["kind"] = "storage"
    del data["agent"]["jobs"], data["agent"]["sites"][0]["capacity_kw"]
    assert check_provider(data) == []


def test_a_file_that_is_not_an_object_is_refused() -> None:
    assert _fields([1, 2]) == ["(file)"]


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**9), 10**9))
def test_site_baseline_must_be_a_finite_kw_within_the_limit(baseline_kw: float) -> None:
    data = copy.deepcopy(provider_template())
    data["sites"][0]["baseline_kw"] = baseline_kw
    ok = math.isfinite(baseline_kw) and 0 <= baseline_kw <= MAX_KW
    assert ("sites[0].baseline_kw" not in _fields(data)) is ok


# -- the command line -----------------------------------------------------------------------------
def test_init_writes_a_valid_file_and_keeps_an_existing_one(tmp_path: Path) -> None:
    target = tmp_path / "dc.json"
    result = runner.invoke(app, ["provider", "init", str(target), "--id", "dc-new", "--region", "GB-R12"])
    assert result.exit_code == 0, result.output
    written = json.loads(target.read_text())
    assert check_provider(written) == [] and written["sites"][0]["region"] == "GB-R12"
    again = runner.invoke(app, ["provider", "init", str(target)])
    assert again.exit_code == 1 and "--force" in again.output
    assert json.loads(target.read_text()) == written


def test_validate_shows_the_planned_offers(tmp_path: Path) -> None:
    data = json.loads(EXAMPLE.read_text())
    data["agent"]["jobs"]["n_jobs"] = 80  # the example's planner, on a smaller job mix: quicker
    path = tmp_path / "dc.json"
    path.write_text(json.dumps(data))
    result = runner.invoke(app, ["provider", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "What example-dc would offer" in result.output and "is valid" in result.output
    assert "£/MWh" in result.output and result.output.count("compute") >= 3  # one row per planned offer


def test_validate_a_bad_file_names_each_field_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_set("sites.0.baseline_kw", -1) | {"id": ""}))
    result = runner.invoke(app, ["provider", "validate", str(path)])
    assert result.exit_code == 2
    assert "sites[0].baseline_kw" in result.output and "2 problem(s)" in result.output
    path.write_text("{not json")
    assert runner.invoke(app, ["provider", "validate", str(path)]).exit_code == 2


def test_own_platform_writes_a_providers_file_for_serve_bpp(tmp_path: Path) -> None:
    out = tmp_path / "providers.json"
    result = runner.invoke(
        app,
        ["provider", "own-platform", str(EXAMPLE), "--subscriber-id", "bpp.example-dc.test", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    (platform,) = parse_config(json.loads(out.read_text()))
    assert platform.subscriber_id == "bpp.example-dc.test"
    assert [p.id for p in platform.providers] == ["example-dc"]


def test_admin_token_is_new_each_time() -> None:
    first, second = (runner.invoke(app, ["provider", "admin-token"]).output.strip() for _ in range(2))
    assert len(first) >= 40 and first != second
