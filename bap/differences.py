"""The comparison at the heart of reconciliation: one order as the BAP, the BPP and the ledger each hold it,
and every way the three copies differ.

Pure: plain snapshots in, differences out (mypy --strict; no framework, database or HTTP client). Gathering
the snapshots and keeping the alerts is bap/reconcile.py.

What must agree, per order (absent parties are reported once, as `presence`, and skipped otherwise):
- presence: the BPP holds every order the BAP holds and the other way round; the ledger holds every order
  accepted or beyond, and none still CREATED (a CANCELLED order may or may not have reached it);
- state: the BAP's and the BPP's state are the same; the ledger's view of it — CANCELLED when it cancelled
  the order, the outcome state (schemas/outcome.py) once a settlement run was made — holds for both. A
  registered order without runs only rules out outcomes the ledger has not established;
- power_kw, window, price_gbp_per_mwh: the same in every book that holds the order;
- delivered_energy_kwh, settled_amount_pence: the BAP's and the BPP's are the ledger's latest run's (none
  before the first run).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from schemas.outcome import OUTCOME_STATES, RANK, LedgerOutcome

KW_TOLERANCE = 1e-6  # the ledger holds W (integers); the BAP and BPP hold kW as floats
PRICE_TOLERANCE_GBP_PER_MWH = 1e-6
ENERGY_TOLERANCE_KWH = 5e-4  # half the Wh the outcome is rounded to


class Kind(StrEnum):
    PRESENCE = "presence"
    STATE = "state"
    POWER_KW = "power_kw"
    WINDOW = "window"
    PRICE = "price_gbp_per_mwh"
    DELIVERED = "delivered_energy_kwh"
    AMOUNT = "settled_amount_pence"


@dataclass(frozen=True)
class PartyOrder:
    """The BAP's or the BPP's copy of an order."""

    state: str
    power_kw: float
    window_start: datetime
    window_end: datetime
    price_gbp_per_mwh: float | None
    delivered_energy_kwh: float | None = None
    settled_amount_pence: int | None = None


@dataclass(frozen=True)
class LedgerOrder:
    """The ledger's copy: its current terms (amendments applied), whether it cancelled it, and the outcome
    of its latest settlement run (None before the first)."""

    power_kw: float
    window_start: datetime
    window_end: datetime
    price_gbp_per_mwh: float
    cancelled: bool
    outcome: LedgerOutcome | None = None
    # Paid with Compute Flex Tokens: the ledger holds the redemption's obligation (`cft-<order id>`) at no
    # money price (the utilisation was prepaid with the tokens), so its price is not compared with the offer's.
    paid_with_tokens: bool = False

    @property
    def state(self) -> str:
        if self.cancelled:
            return "CANCELLED"
        return self.outcome.state if self.outcome else "REGISTERED"


@dataclass(frozen=True)
class Difference:
    order_id: str
    kind: Kind
    bap: str | None  # each book's value as text; None: the book holds no value (or not the order)
    bpp: str | None
    ledger: str | None


# -- one order -----------------------------------------------------------------------------------------------
def compare(
    order_id: str, bap: PartyOrder | None, bpp: PartyOrder | None, ledger: LedgerOrder | None
) -> list[Difference]:
    """Every difference between the three copies of one order (module docstring)."""
    presence = _presence(order_id, bap, bpp, ledger)
    if presence is not None:
        return [presence]
    assert bap is not None and bpp is not None  # _presence reported any party missing
    out = [_state(order_id, bap, bpp, ledger)]
    out += _terms(order_id, bap, bpp, ledger)
    out += _outcome(order_id, bap, bpp, ledger)
    return [d for d in out if d is not None]


def _present(x: object | None) -> str:
    return "present" if x is not None else "absent"


def _ledger_expected(state: str) -> bool | None:
    """Whether the ledger must hold an order in this state (None: it may or may not)."""
    if state == "CANCELLED":
        return None
    return state in RANK  # ACCEPTED and beyond: registered for settlement; CREATED and drafts: not


def _presence(
    order_id: str, bap: PartyOrder | None, bpp: PartyOrder | None, ledger: LedgerOrder | None
) -> Difference | None:
    party = bap or bpp
    expected = _ledger_expected(party.state) if party is not None else True
    ledger_wrong = expected is not None and expected != (ledger is not None)
    if bap is None or bpp is None or ledger_wrong:
        return Difference(order_id, Kind.PRESENCE, _present(bap), _present(bpp), _present(ledger))
    return None


def _state(order_id: str, bap: PartyOrder, bpp: PartyOrder, ledger: LedgerOrder | None) -> Difference | None:
    agree = bap.state == bpp.state and (ledger is None or _ledger_allows(ledger, bap.state))
    return None if agree else Difference(order_id, Kind.STATE, bap.state, bpp.state, ledger.state if ledger else None)


def _ledger_allows(ledger: LedgerOrder, state: str) -> bool:
    if ledger.cancelled or state == "CANCELLED":
        return ledger.cancelled and state == "CANCELLED"
    if ledger.outcome is not None:
        return state == ledger.outcome.state
    # Registered, no run yet: the window's own states stand (COMPLETED when it closes is provisional).
    return state == "COMPLETED" or state not in OUTCOME_STATES


def _differ(
    order_id: str,
    kind: Kind,
    values: Sequence[tuple[str, object | None]],
    same: Callable[[object | None, object | None], bool],
    show: Callable[[object | None], str | None],
) -> Difference | None:
    """A difference when any book's value is not `same` as the first's (`values`: the books holding the order)."""
    first = values[0][1]
    if all(same(first, v) for _, v in values[1:]):
        return None
    shown = {who: show(v) for who, v in values}
    return Difference(order_id, kind, shown.get("bap"), shown.get("bpp"), shown.get("ledger"))


def _close(tolerance: float) -> Callable[[object | None, object | None], bool]:
    def same(a: object | None, b: object | None) -> bool:
        if a is None or b is None:
            return a is None and b is None
        assert isinstance(a, (int, float)) and isinstance(b, (int, float))
        return abs(float(a) - float(b)) <= tolerance

    return same


def _number(v: object | None) -> str | None:
    """A value as text: integers as they are, kW and kWh to the thousandth of a watt(-hour), without noise."""
    if v is None or not isinstance(v, float):
        return None if v is None else str(v)
    return f"{v:.6f}".rstrip("0").rstrip(".")


def _window(v: object | None) -> str | None:
    if v is None:
        return None
    assert isinstance(v, tuple)
    return f"{v[0].isoformat()}/{v[1].isoformat()}"


def _equal(a: object | None, b: object | None) -> bool:
    return a == b


def _terms(order_id: str, bap: PartyOrder, bpp: PartyOrder, ledger: LedgerOrder | None) -> list[Difference | None]:
    def of(
        pick: Callable[[PartyOrder | LedgerOrder], object | None], *, ledger_too: bool = True
    ) -> list[tuple[str, object | None]]:
        books: list[tuple[str, PartyOrder | LedgerOrder]] = [("bap", bap), ("bpp", bpp)]
        if ledger is not None and ledger_too:
            books.append(("ledger", ledger))
        return [(who, pick(book)) for who, book in books]

    money_price = ledger is None or not ledger.paid_with_tokens

    return [
        _differ(order_id, Kind.POWER_KW, of(lambda o: o.power_kw), _close(KW_TOLERANCE), _number),
        _differ(order_id, Kind.WINDOW, of(lambda o: (o.window_start, o.window_end)), _equal, _window),
        _differ(
            order_id,
            Kind.PRICE,
            of(lambda o: o.price_gbp_per_mwh, ledger_too=money_price),
            _close(PRICE_TOLERANCE_GBP_PER_MWH),
            _number,
        ),
    ]


def _outcome(order_id: str, bap: PartyOrder, bpp: PartyOrder, ledger: LedgerOrder | None) -> list[Difference | None]:
    if ledger is None:
        return []
    outcome = ledger.outcome
    delivered = None if outcome is None else float(outcome.delivered_energy_kwh)
    amount = None if outcome is None else outcome.settled_amount_pence
    return [
        _differ(
            order_id,
            Kind.DELIVERED,
            [("bap", bap.delivered_energy_kwh), ("bpp", bpp.delivered_energy_kwh), ("ledger", delivered)],
            _close(ENERGY_TOLERANCE_KWH),
            _number,
        ),
        _differ(
            order_id,
            Kind.AMOUNT,
            [("bap", bap.settled_amount_pence), ("bpp", bpp.settled_amount_pence), ("ledger", amount)],
            _close(0),
            _number,
        ),
    ]


# -- every order ---------------------------------------------------------------------------------------------
def compare_books(
    bap: Mapping[str, PartyOrder], bpp: Mapping[str, PartyOrder], ledger: Mapping[str, LedgerOrder]
) -> list[Difference]:
    """Every difference across the three books, by order id then kind (an order in any book is compared)."""
    out: list[Difference] = []
    for order_id in sorted(set(bap) | set(bpp) | set(ledger)):
        out += compare(order_id, bap.get(order_id), bpp.get(order_id), ledger.get(order_id))
    return out
