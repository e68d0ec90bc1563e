"""One planner per site: the agent a provider's config names (``"kind"``, :class:`ProviderKind`).

A ``compute`` provider is planned by :class:`bpp.agent.ComputeAgent` — jobs, and any battery on its
sites co-optimised in the same model; a ``storage`` provider (battery-only sites) by
:class:`bpp.storage_agent.StorageAgent`. The config checks (:func:`bpp.agent_config.provider_kind`)
refuse any layout in which a site would need two agents, so no two plans ever sell the same meter.
Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bpp.agent import CommitCheck, ComputeAgent
from bpp.agent_config import ProviderKind, load_config, provider_kind
from bpp.decisions import Decision
from bpp.domain import CommittedReduction
from bpp.offers import FlexOffer
from bpp.signal_providers import SignalProvider
from bpp.storage_agent import StorageAgent
from grid.signals import SignalSeries


class ProviderAgent(Protocol):
    """What the BPP asks of a provider's planner."""

    @property
    def resource_type(self) -> str: ...

    @property
    def commitments(self) -> list[CommittedReduction]: ...

    def offers(self, start_utc: datetime | None = None, end_utc: datetime | None = None) -> list[FlexOffer]: ...

    def can_commit(
        self, site_id: str, start_utc: datetime, end_utc: datetime, reduction_kw: float, order_id: str = "check"
    ) -> CommitCheck: ...

    def commit(
        self, order_id: str, site_id: str, start_utc: datetime, end_utc: datetime, reduction_kw: float
    ) -> CommittedReduction: ...

    def decisions(
        self,
        job_id: str | None = None,
        site_id: str | None = None,
        action: str | None = None,
        start_utc: datetime | None = None,
        end_utc: datetime | None = None,
    ) -> list[Decision]: ...

    def summary(self) -> dict[str, Any]: ...


def agent_from_config(
    config: Mapping[str, Any] | str | Path,
    signals: SignalProvider | Mapping[str, SignalSeries] | None = None,
    data_dir: Path | None = None,
) -> ProviderAgent:
    """The one planner of a provider's sites, by the config's ``kind`` (ValueError naming the field
    when the config does not fit its kind)."""
    cfg = load_config(config)
    if provider_kind(cfg) is ProviderKind.STORAGE:
        return StorageAgent.from_config(cfg, signals=signals, data_dir=data_dir)
    return ComputeAgent.from_config(cfg, signals=signals, data_dir=data_dir)
