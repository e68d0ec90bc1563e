"""Why an instance has no plan: :class:`Conflict` records and the errors that carry them.

The pre-checks (:mod:`bpp.scheduler.eligibility`) and the elastic diagnosis
(:mod:`bpp.scheduler.diagnosis`) both report through :class:`SchedulingInfeasible`, whose message
names every job, site, time span and order in conflict.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from datetime import datetime

from bpp.domain import iso


@dataclass(frozen=True)
class Conflict:
    """One reason an instance has no plan. ``kind``: ``window`` (deadline before release+duration),
    ``horizon`` (window outside the planning horizon), ``region`` (no allowed site), ``carbon_threshold``,
    ``capacity``, ``commitment`` (a committed reduction), ``import_limit``, ``unknown``."""

    kind: str
    job_ids: tuple[str, ...]
    detail: str
    _: KW_ONLY
    site_id: str | None = None
    start_utc: datetime | None = None
    end_utc: datetime | None = None
    order_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "job_ids": list(self.job_ids),
            "site_id": self.site_id,
            "start_utc": iso(self.start_utc) if self.start_utc else None,
            "end_utc": iso(self.end_utc) if self.end_utc else None,
            "order_ids": list(self.order_ids),
            "detail": self.detail,
        }


class SchedulingError(RuntimeError):
    """The solver failed for a reason other than proven infeasibility (time limit, numerical)."""


class SchedulingInfeasible(SchedulingError):
    """No plan satisfies every constraint; ``conflicts`` names the jobs and constraints involved."""

    def __init__(self, conflicts: list[Conflict], stage: str) -> None:
        self.conflicts = conflicts
        self.stage = stage  # "pre-check" | "solver"
        lines = [f"infeasible schedule ({stage}): {len(conflicts)} conflict(s)"]
        for c in conflicts[:20]:
            jobs = ", ".join(c.job_ids[:12]) + (" …" if len(c.job_ids) > 12 else "")
            where = f" at {c.site_id}" if c.site_id else ""
            when = f" {iso(c.start_utc)}–{iso(c.end_utc)}" if c.start_utc and c.end_utc else ""
            orders = f" orders [{', '.join(c.order_ids)}]" if c.order_ids else ""
            lines.append(f"  - {c.kind}{where}{when}{orders}: jobs [{jobs}] — {c.detail}")
        if len(conflicts) > 20:
            lines.append(f"  … and {len(conflicts) - 20} more")
        super().__init__("\n".join(lines))

    @property
    def job_ids(self) -> set[str]:
        return {j for c in self.conflicts for j in c.job_ids}

    @property
    def kinds(self) -> set[str]:
        return {c.kind for c in self.conflicts}
