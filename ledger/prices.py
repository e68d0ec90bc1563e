"""Imbalance and market index prices in PostgreSQL (insert-only per period), and the Elexon system
price CSV they are usually loaded from.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from grid.money import gbp_per_mwh_to_millipence
from grid.periods import is_period_aligned
from ledger.errors import LedgerError


@dataclass(frozen=True)
class PriceRow:
    period_start: datetime
    imbalance_millipence_per_mwh: int | None
    market_index_millipence_per_mwh: int | None


def ingest_prices(conn: psycopg.Connection, rows: Sequence[PriceRow], source: str, now: datetime) -> dict[str, int]:
    """Insert-only: an existing period keeps its price; a different value is counted as a conflict."""
    if not rows:
        return {"inserted": 0, "unchanged": 0, "conflicts": 0}
    for r in rows:
        if not is_period_aligned(r.period_start):
            raise LedgerError("price_invalid", f"{r.period_start.isoformat()} is not a half-hour period start")
    cols = (
        [r.period_start for r in rows],
        [r.imbalance_millipence_per_mwh for r in rows],
        [r.market_index_millipence_per_mwh for r in rows],
    )
    existing = {
        r[0].astimezone(UTC): (r[1], r[2])
        for r in conn.execute(
            "SELECT period_start, imbalance_millipence_per_mwh, market_index_millipence_per_mwh "
            "FROM ledger.prices WHERE period_start = ANY(%s)",
            (cols[0],),
        )
    }
    inserted = conn.execute(
        "INSERT INTO ledger.prices (period_start, imbalance_millipence_per_mwh, market_index_millipence_per_mwh, "
        "source, received_at) SELECT p, i, m, %s, %s "
        "FROM unnest(%s::timestamptz[], %s::int8[], %s::int8[]) AS u(p, i, m) ON CONFLICT (period_start) DO NOTHING",
        (source[:300], now, *cols),
    ).rowcount
    conflicts = sum(
        1
        for r in rows
        if (old := existing.get(r.period_start.astimezone(UTC))) is not None
        and old != (r.imbalance_millipence_per_mwh, r.market_index_millipence_per_mwh)
    )
    return {"inserted": inserted, "unchanged": len(rows) - inserted - conflicts, "conflicts": conflicts}


def read_prices_csv(path: Path) -> list[PriceRow]:
    """Elexon system prices as in ../shared/data/grid/gb_system_prices_2023-01_2024-05.csv (see its
    README): period_start_utc, period_end_utc, imbalance_price_gbp_per_mwh, market_index_price_gbp_per_mwh;
    empty cells are missing prices. £/MWh (up to 5 decimals) → integer milli-pence/MWh."""
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            start = datetime.fromisoformat(row["period_start_utc"].replace("Z", "+00:00"))

            def pence(text: str | None, what: str) -> int | None:
                return None if not text else gbp_per_mwh_to_millipence(text, what)

            out.append(
                PriceRow(
                    start,
                    pence(row.get("imbalance_price_gbp_per_mwh"), "imbalance price"),
                    pence(row.get("market_index_price_gbp_per_mwh"), "market index price"),
                )
            )
    return out
