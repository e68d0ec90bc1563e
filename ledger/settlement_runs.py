"""Settlement runs in PostgreSQL: gather an order's inputs exactly as the ledger knew them at `as_of`,
perform its next run (II → SF → R1 → R2 → R3 → RF → DF) when due, and append the run's transfers.

Which reading each period rests on: the meter operator's when one was received by `as_of`, else the provider's
self-reported one (ledger/allocation.py); every order declared on the meter is gathered too, so the meter's
delivery is shared among them rather than paid to each. A run that rested on a weaker reading than the ledger
now holds (self_reported or none, where a meter operator's reading has since arrived) makes the next run due at
once if that run is before RF — a restatement (so does another order registered late on the same meter, whose
share of the delivery changes this order's); RF and DF keep their timetable.

Each stored run also records the clock it ran under (`kernel.clock.describe()`: the wall clock or the
deployment's simulated one), so a run made on a replayed market day says so. The rules (P415 rules
2-12, run timing, transfers per run) are the pure ledger/settlement.py.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import psycopg

from grid.periods import PERIOD, SettlementPeriod
from kernel import clock
from ledger import accounts as acct
from ledger.accounts_db import ensure_accounts
from ledger.agreements import with_agreement
from ledger.agreements_db import order_agreement_hash
from ledger.allocation import FINAL_RUNS, ReadingKind, reading_kind, strengthened
from ledger.db import connection, in_transaction, iso, us
from ledger.errors import not_found
from ledger.metering import settled_readings
from ledger.orders import ORDER_COLUMNS, current_reserve_id, load_order, order_from_row, terms_as_of
from ledger.policies import get_policy
from ledger.settlement import (
    RUNS,
    EscrowState,
    OrderTerms,
    Policy,
    SettlementInputs,
    declared_periods,
    inputs_digest,
    next_run,
    run_due_at,
    run_transfers,
    settle,
)
from ledger.store import append_one
from ledger.transfers import TransferSpec


def load_inputs(
    conn: psycopg.Connection, order_id: str, as_of: datetime, run: str = RUNS[0]
) -> tuple[OrderTerms, Policy, SettlementInputs, bool]:
    """Everything settle() needs for run `run`, exactly as the ledger knew it at `as_of` (rule 12) — the
    order's terms too: the latest amendment recorded by then (ledger/orders.py terms_as_of)."""
    registered, _ = load_order(conn, order_id)
    terms = terms_as_of(conn, registered, as_of)
    policy = get_policy(conn, terms.policy_version)
    lookback = timedelta(days=policy.baseline.lookback_days + 2)
    lo = terms.window_start - lookback
    hi = terms.window_end + (policy.rebound_periods + 1) * PERIOD
    readings: dict[datetime, int] = {}
    kinds: dict[datetime, ReadingKind] = {}
    for settled in settled_readings(conn, terms.meter_id, lo, hi, as_of=as_of):  # the meter operator's wins
        readings[settled.period_start], kinds[settled.period_start] = settled.energy_wh, settled.kind
    event_days: set[date] = set()
    sharing_w: dict[datetime, dict[str, int]] = {}
    for r in conn.execute(
        f"SELECT {ORDER_COLUMNS} FROM ledger.orders o WHERE meter_id = %s AND window_end > %s AND "
        "window_start < %s AND registered_at <= %s AND NOT EXISTS (SELECT 1 FROM ledger.order_cancellations c "
        "WHERE c.order_id = o.order_id AND c.cancelled_at <= %s)",
        (terms.meter_id, lo, hi, as_of, as_of),
    ):
        other = terms_as_of(conn, order_from_row(r), as_of)
        other_policy = policy if other.policy_version == policy.version else get_policy(conn, other.policy_version)
        accepted, _ = declared_periods(other.window_start, other.window_end, other.confirmed_at, other_policy)
        event_days.update(p.settlement_date for p in accepted)
        for p in accepted:  # every order (token redemptions too) declared on the meter shares its delivery
            sharing_w.setdefault(p.start_utc, {})[other.order_id] = other.contracted_w
    imbalance: dict[datetime, int | None] = {}
    market: dict[datetime, int | None] = {}
    for r in conn.execute(
        "SELECT period_start, imbalance_millipence_per_mwh, market_index_millipence_per_mwh FROM ledger.prices "
        "WHERE period_start >= %s AND period_start < %s AND received_at <= %s",
        (terms.window_start, terms.window_end, as_of),
    ):
        imbalance[r[0].astimezone(UTC)] = r[1]
        market[r[0].astimezone(UTC)] = r[2]
    cancelled = (
        conn.execute(
            "SELECT 1 FROM ledger.order_cancellations WHERE order_id = %s AND cancelled_at <= %s", (order_id, as_of)
        ).fetchone()
        is not None
    )
    inputs = SettlementInputs(
        terms, readings, frozenset(event_days), imbalance, market, reading_kinds=kinds, sharing_w=sharing_w, run=run
    )
    return terms, policy, inputs, cancelled


@dataclass
class RunOutcome:
    order_id: str
    status: str  # settled | not_due | complete | cancelled
    run: str | None = None
    lines: dict[str, int] = field(default_factory=dict)
    transfers: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "status": self.status,
            "run": self.run,
            "lines_pence": self.lines,
            "transfers": self.transfers,
            "reason": self.reason,
        }


def _escrow_state(conn: psycopg.Connection, order_id: str, as_of: datetime) -> EscrowState | None:
    pid = current_reserve_id(conn, order_id, as_of)  # an amended order's escrow is its latest reserve
    as_of_us = us(as_of)
    row = conn.execute(
        "SELECT amount, timeout_us FROM ledger.entries WHERE id = %s AND kind = 'pending'", (pid,)
    ).fetchone()
    if row is None:
        return None
    resolved = conn.execute("SELECT 1 FROM ledger.entries WHERE pending_id = %s", (pid,)).fetchone() is not None
    usable = not resolved and (row[1] is None or row[1] > as_of_us)
    return EscrowState(pid, row[0], usable)


def run_settlement(conn: psycopg.Connection, order_id: str, as_of: datetime, *, force: bool = False) -> RunOutcome:
    """Perform the order's next settlement run if it is due at `as_of` (II→SF→R1→R2→R3→RF→DF).

    Idempotent: the run row's primary key (order_id, run) and the deterministic transfer ids mean a
    second attempt — a Celery retry, two beat ticks — finds the run done and appends nothing."""
    done = conn.execute(
        "SELECT run, lines, result FROM ledger.settlement_runs WHERE order_id = %s ORDER BY seq", (order_id,)
    ).fetchall()
    run = next_run([r[0] for r in done])
    terms, policy, inputs, cancelled = load_inputs(conn, order_id, as_of, run or RUNS[-1])
    if cancelled:
        return RunOutcome(order_id, "cancelled", reason="order cancelled before its window")
    if run is None:
        return RunOutcome(order_id, "complete", reason="all runs II..DF done")
    if as_of < terms.window_end:
        return RunOutcome(order_id, "not_due", run, reason="the delivery window has not closed")
    why = ""
    if not force and as_of < run_due_at(terms, run, policy):
        accepted, _ = declared_periods(terms.window_start, terms.window_end, terms.confirmed_at, policy)
        metered = all(p.start_utc in inputs.readings for p in accepted)
        improved = _periods_to_restate(done[-1][2], inputs, accepted) if done and run not in FINAL_RUNS else []
        if not (run == "II" and metered) and not improved:
            return RunOutcome(
                order_id, "not_due", run, reason=f"{run} falls due at {iso(run_due_at(terms, run, policy))}"
            )
        if improved:
            why = f"restatement: new readings or orders on the meter for {', '.join(improved[:5])}" + (
                " …" if len(improved) > 5 else ""
            )
    result = settle(inputs, policy)
    previous = {k: int(v) for k, v in done[-1][1].items()} if done else None
    as_of_us = us(as_of)
    escrow = _escrow_state(conn, order_id, as_of) if previous is None else None
    planned = run_transfers(terms, run, result.lines, previous=previous, policy=policy, escrow=escrow)
    conn.execute(
        "INSERT INTO ledger.settlement_runs (order_id, run, seq, as_of, policy_version, inputs_sha256, lines, result, "
        "clock) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            order_id,
            run,
            RUNS.index(run) + 1,
            as_of,
            policy.version,
            inputs_digest(inputs, policy, as_of),
            json.dumps(result.lines),
            json.dumps(result.to_json()),
            json.dumps(clock.describe()),
        ),
    )
    agreement = order_agreement_hash(conn, order_id)
    specs = [
        TransferSpec(
            t.id,
            t.kind,
            acct.GBP if t.kind == "single" else None,
            t.debit_account if t.kind == "single" else None,
            t.credit_account if t.kind == "single" else None,
            t.amount if t.kind in ("single", "post") else None,
            t.pending_id,
            None,
            with_agreement(t.memo, agreement),  # the signed agreement the order was registered with
        )
        for t in planned
    ]
    entries: list[dict[str, Any]] = []
    if specs:
        ensure_accounts(conn, [n for t in planned for n in (t.debit_account, t.credit_account)])
        entries = [e.as_json() for e in append_one(conn, specs, rule_now_us=as_of_us).entries]
    return RunOutcome(order_id, "settled", run, dict(result.lines), entries, why)


def _periods_to_restate(
    previous_result: dict[str, Any], inputs: SettlementInputs, accepted: Sequence[SettlementPeriod]
) -> list[str]:
    """Labels of the declared periods the previous run settled on what the ledger has since improved on: a
    reading that is now stronger evidence (a meter operator's after a self-reported one, any reading after
    none), or another set of orders sharing the meter (one registered late: the delivery is shared anew)."""
    before: dict[str, dict[str, Any]] = {p["period"]: p for p in previous_result.get("periods", [])}
    out = []
    for p in accepted:
        prev = before.get(p.label())
        if prev is None:
            continue
        # runs stored before reading kinds and sharing were recorded: infer the kind, assume no sharing
        legacy: ReadingKind = "self_reported" if prev.get("metered_wh") is not None else "missing"
        was: ReadingKind = prev.get("reading_kind") or legacy
        now = reading_kind(p.start_utc, inputs.readings, inputs.reading_kinds, run=inputs.run)
        sharing = set(inputs.sharing_w.get(p.start_utc, {})) - {inputs.order.order_id}
        if strengthened(was, now) or sharing != set(prev.get("sharing_orders") or ()):
            out.append(p.label())
    return out


def settle_due(
    url: str | None, now: datetime, *, order_ids: Sequence[str] | None = None, force: bool = False
) -> list[RunOutcome]:
    """Every run that is due at `now`, each in its own transaction, catching up in order. Re-running
    is a no-op (nothing new falls due)."""
    outcomes: list[RunOutcome] = []
    with connection(url) as conn:
        if order_ids is None:
            order_ids = [
                r[0]
                for r in conn.execute(
                    "SELECT o.order_id FROM ledger.orders o WHERE o.window_end <= %s "
                    "AND NOT EXISTS (SELECT 1 FROM ledger.order_cancellations c WHERE c.order_id = o.order_id) "
                    "AND (SELECT count(*) FROM ledger.settlement_runs r WHERE r.order_id = o.order_id) < 7 "
                    "ORDER BY o.window_end, o.order_id",
                    (now,),
                )
            ]
            conn.commit()
        for oid in order_ids:
            for _ in RUNS:
                outcome = in_transaction(conn, partial(run_settlement, order_id=oid, as_of=now, force=force))
                if outcome.status != "settled":
                    break
                outcomes.append(outcome)
                if force:
                    break
    return outcomes


def stored_run(conn: psycopg.Connection, order_id: str, run: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT as_of, policy_version, inputs_sha256, lines, result, clock FROM ledger.settlement_runs "
        "WHERE order_id = %s AND run = %s",
        (order_id, run),
    ).fetchone()
    if row is None:
        raise not_found(f"run {run} of order {order_id}")
    return {
        "order_id": order_id,
        "run": run,
        "as_of": row[0].astimezone(UTC),
        "policy_version": row[1],
        "inputs_sha256": bytes(row[2]).hex(),
        "lines_pence": row[3],
        "result": row[4],
        "clock": row[5],  # the clock the run was made under (None: made before runs recorded it)
    }


def ledger_lines_for_order(conn: psycopg.Connection, order_id: str, upto_run: str | None = None) -> dict[str, int]:
    """Net amount per settlement line as the ledger holds it (payments minus reversals)."""
    out = dict.fromkeys(("utilisation", "availability", "shortfall", "supplier_compensation"), 0)
    allowed = RUNS if upto_run is None else RUNS[: RUNS.index(upto_run) + 1]
    for tid, amount in conn.execute(
        "SELECT id, amount FROM ledger.entries WHERE id LIKE %s AND kind = 'single'", (f"settle:{order_id}:%",)
    ):
        parts = tid.split(":")  # settle:<order>:<run>:<line>[:reversal]
        run, line = parts[2], parts[3]
        if run not in allowed or line not in out:
            continue
        out[line] += -amount if len(parts) == 5 and parts[4] == "reversal" else amount
    return out
