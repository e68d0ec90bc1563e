"""The catalog `flexmarket up` hosts (bpp/catalog.py `network_config`): a newcomer's first search shows storage
offers beside compute ones — a battery-only site sold by a storage agent, and a site with both compute and a
battery planned by one compute agent — next to the static providers."""

from __future__ import annotations

from datetime import UTC, datetime

from bpp import agent_service
from bpp.catalog import network_config, parse_config


def test_up_hosts_a_battery_only_site_and_a_site_with_both() -> None:
    [platform] = parse_config(network_config(3))
    by_id = {p.id: p for p in platform.providers}
    assert set(by_id) == {"dc-01", "dc-02", "dc-03", "bess-01"}
    both, battery_only = by_id["dc-01"], by_id["bess-01"]
    assert both.agent is not None and battery_only.agent is not None
    assert not both.offers and not battery_only.offers  # their offers come from their planners
    assert all(by_id[p].agent is None and by_id[p].offers for p in ("dc-02", "dc-03"))
    now = datetime.now(UTC)
    storage = agent_service.preview(battery_only, now)
    compute = agent_service.preview(both, now)
    assert storage and {o.resource_type for o in storage} == {"storage"}
    assert compute and {o.resource_type for o in compute} == {"compute"}
    # one planner per site: every offer of the site with both names that one site
    assert {o.location_id for o in compute} == {both.sites[0].id}
