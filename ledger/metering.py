"""Half-hourly metering in PostgreSQL: which provider owns a meter, and readings stored all or nothing
(a correction is a new version; the old one stays, and settlement reads what was known as of its run).

Each reading records its kind (ledger/allocation.py): `self_reported` (the meter's provider posted it, or an
operator imported it from CSV) or `meter_operator` (signed by a registered meter operator: ledger/meter_data.py,
with the signer's key id and the signature). Several kinds coexist for one meter and period — append-only;
versions count within a kind, so a correction supersedes only its own source, and settlement prefers the
meter operator's. Energy is signed Wh: negative is a net export (schemas/limits.py MAX_ENERGY_WH_PER_PERIOD).

Which reading of a period counts is one rule, `settled_readings`: settlement runs (ledger/settlement_runs.py) and
the metering read endpoint (`meter_readings`, GET /api/v1/metering/{meter_id}) both use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import psycopg

from grid.money import wh_to_kwh_str
from grid.periods import PERIOD, is_period_aligned
from ledger.allocation import ReadingKind
from ledger.db import CLOCK_SKEW, iso
from ledger.errors import LedgerError, forbidden, not_found
from ledger.meter_data import VerifiedSignature
from schemas import limits


def claim_meter(conn: psycopg.Connection, meter_id: str, provider_id: str) -> None:
    """Record `provider_id` as the meter's owner, or refuse if another provider owns it already."""
    conn.execute(
        "INSERT INTO ledger.meters (meter_id, provider_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (meter_id, provider_id),
    )
    row = conn.execute("SELECT provider_id FROM ledger.meters WHERE meter_id = %s", (meter_id,)).fetchone()
    if row is None or row[0] != provider_id:
        raise LedgerError("meter_owned_by_other", f"meter {meter_id} belongs to another provider", status=409)


@dataclass(frozen=True)
class Reading:
    period_start: datetime
    energy_wh: int  # signed: negative = net export


@dataclass(frozen=True)
class SelfReported:
    """Readings the meter's provider vouches for (its own API key, or a CSV import)."""


SELF_REPORTED = SelfReported()
# Where a batch of readings comes from: self-reported, or a meter operator's verified signature.
ReadingOrigin = SelfReported | VerifiedSignature


def origin_kind(origin: ReadingOrigin) -> str:
    return "self_reported" if isinstance(origin, SelfReported) else "meter_operator"


def ingest_metering(
    conn: psycopg.Connection,
    meter_id: str,
    readings: Sequence[Reading],
    *,
    provider_id: str | None,
    now: datetime,
    correction: bool = False,
    source: str = "api",
    origin: ReadingOrigin = SELF_REPORTED,
) -> dict[str, Any]:
    """Store half-hourly readings for one meter, all or nothing. Malformed or duplicate readings are
    refused with a reason; a correction is stored as a new version of its own kind (the old one stays).
    A meter operator's readings (`origin` a verified signature) are only for meters already registered."""
    if not readings:
        raise LedgerError("no_readings", "at least one reading is required")
    if len(readings) > limits.MAX_ROWS_PER_IMPORT:
        raise LedgerError("too_many_readings", f"at most {limits.MAX_ROWS_PER_IMPORT} readings of one meter at once")
    problems: list[str] = []
    seen: set[datetime] = set()
    for r in readings:
        label = r.period_start.isoformat() if isinstance(r.period_start, datetime) else repr(r.period_start)
        if not isinstance(r.period_start, datetime) or r.period_start.tzinfo is None:
            problems.append(f"{label}: period_start must be an aware UTC instant")
            continue
        if not is_period_aligned(r.period_start):
            problems.append(f"{label}: not the start of a half-hour period")
        if r.period_start < limits.EARLIEST_HISTORY:  # e.g. `period_start: 0` (1970): schemas/limits.py
            problems.append(f"{label}: period_start is before {limits.EARLIEST_HISTORY.date().isoformat()}")
        if r.period_start + PERIOD > now + CLOCK_SKEW:
            problems.append(f"{label}: the period has not ended yet")
        if type(r.energy_wh) is not int:
            problems.append(f"{label}: energy must be a number of kWh")
        elif abs(r.energy_wh) > limits.MAX_ENERGY_WH_PER_PERIOD:
            problems.append(f"{label}: energy is beyond ±{limits.MAX_ENERGY_KWH_PER_PERIOD:g} kWh per half-hour")
        if r.period_start in seen:
            problems.append(f"{label}: appears twice in this request")
        seen.add(r.period_start)
    if problems:
        raise LedgerError(
            "malformed_readings",
            f"{len(problems)} malformed reading(s): " + "; ".join(problems[:10]),
            problems=problems[:100],
        )
    kind = origin_kind(origin)
    row = conn.execute("SELECT provider_id FROM ledger.meters WHERE meter_id = %s", (meter_id,)).fetchone()
    if row is None and kind == "meter_operator":
        raise LedgerError(
            "unknown_meter", f"meter_id: {meter_id} is not registered (its provider names it first)", status=404
        )
    if row is None:
        if provider_id is None:
            raise LedgerError("unknown_meter", f"meter {meter_id} is not registered; name its provider")
        if not meter_id or len(meter_id) > 128 or any(c.isspace() for c in meter_id):
            raise LedgerError("meter_invalid", "meter_id must be 1-128 characters without spaces")
        claim_meter(conn, meter_id, provider_id)
    elif provider_id is not None and row[0] != provider_id:
        raise forbidden(f"meter {meter_id} belongs to another provider")
    starts = [r.period_start for r in readings]
    latest = {
        r[0].astimezone(UTC): (r[1], r[2])
        for r in conn.execute(
            "SELECT DISTINCT ON (period_start) period_start, version, energy_wh FROM ledger.metering "
            "WHERE meter_id = %s AND reading_kind = %s AND period_start = ANY(%s) ORDER BY period_start, version DESC",
            (meter_id, kind, starts),
        )
    }
    dupes = []
    for r in readings:
        prev = latest.get(r.period_start.astimezone(UTC))
        if prev is None:
            continue
        if not correction:
            dupes.append(
                f"{iso(r.period_start)}: already recorded as {kind} (version {prev[0]}, {prev[1]} Wh); "
                "send correction=true to supersede it"
            )
        elif prev[1] == r.energy_wh:
            dupes.append(f"{iso(r.period_start)}: correction repeats the current value {prev[1]} Wh")
    if dupes:
        raise LedgerError(
            "duplicate_readings",
            f"{len(dupes)} duplicate reading(s): " + "; ".join(dupes[:10]),
            status=409,
            problems=dupes[:100],
        )
    versions = [latest.get(r.period_start.astimezone(UTC), (0, 0))[0] + 1 for r in readings]
    signer, signature = (None, None) if isinstance(origin, SelfReported) else (origin.key_id, origin.signature)
    with conn.cursor().copy(
        "COPY ledger.metering (meter_id, period_start, version, energy_wh, received_at, source, reading_kind, "
        "signer_key_id, signature) FROM STDIN"
    ) as copy:
        for r, v in zip(readings, versions, strict=True):
            copy.write_row((meter_id, r.period_start, v, r.energy_wh, now, source[:100], kind, signer, signature))
    return {
        "status": "created",
        "meter_id": meter_id,
        "reading_kind": kind,
        "accepted": len(readings),
        "corrections": sum(1 for v in versions if v > 1),
    }


@dataclass(frozen=True)
class SettledReading:
    """The reading of one half hour that settlement rests on, and its kind."""

    period_start: datetime
    energy_wh: int  # signed: negative = net export
    kind: ReadingKind


def settled_readings(
    conn: psycopg.Connection, meter_id: str, start: datetime, end: datetime, *, as_of: datetime
) -> list[SettledReading]:
    """The reading per half hour in [start, end) that settlement uses, as known at `as_of` (received by then):
    the meter operator's reading wins over a self-reported one; within a kind, the latest version. By period."""
    rows = conn.execute(
        "SELECT DISTINCT ON (period_start) period_start, energy_wh, reading_kind FROM ledger.metering "
        "WHERE meter_id = %s AND period_start >= %s AND period_start < %s AND received_at <= %s "
        "ORDER BY period_start, reading_kind = 'meter_operator' DESC, version DESC",
        (meter_id, start, end, as_of),
    )
    return [SettledReading(t.astimezone(UTC), energy_wh, cast(ReadingKind, kind)) for t, energy_wh, kind in rows]


def meter_owner(conn: psycopg.Connection, meter_id: str) -> str:
    """The provider a registered meter belongs to (404 for a meter the ledger does not know)."""
    row = conn.execute("SELECT provider_id FROM ledger.meters WHERE meter_id = %s", (meter_id,)).fetchone()
    if row is None:
        raise not_found(f"meter {meter_id}")
    return str(row[0])


def meter_readings(
    conn: psycopg.Connection,
    meter_id: str,
    start: datetime,
    end: datetime,
    *,
    as_of: datetime,
    reader_provider_id: str | None,
) -> dict[str, Any]:
    """A meter's settled readings in [start, end) as JSON (kWh to 3 decimals). `reader_provider_id`: the
    provider whose key asks (only its own meters: 403 otherwise); None for a key that reads every meter."""
    assert start.tzinfo is not None and end.tzinfo is not None and end > start
    owner = meter_owner(conn, meter_id)
    if reader_provider_id is not None and reader_provider_id != owner:
        raise forbidden(f"meter {meter_id} belongs to another provider")
    readings = settled_readings(conn, meter_id, start, end, as_of=as_of)
    return {
        "meter_id": meter_id,
        "provider_id": owner,
        "readings": [
            {"period_start": iso(r.period_start), "energy_kwh": wh_to_kwh_str(r.energy_wh), "kind": r.kind}
            for r in readings
        ],
    }
