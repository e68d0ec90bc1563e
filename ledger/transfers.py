"""Double-entry transfer rules over plain data (TigerBeetle's model; no database here).

An account belongs to one ledger (`GBP` in pence, or `CFT:<series>` in tokens). A transfer debits one
account and credits another of the same ledger by a positive integer amount
(../shared/reference/ledger-design.md "Double entry", "Two-phase transfers", "Linked batches",
"Idempotency"). Every transfer event is one journal entry:

- `single`  — posts immediately: debit.debits_posted += a, credit.credits_posted += a.
- `pending` — reserves: debits_pending / credits_pending += a, optionally until `timeout_us`.
- `post`    — resolves a pending transfer, fully or partially: releases the whole reserved amount and
              posts `amount` (≤ reserved; default all of it).
- `void`    — resolves a pending transfer by releasing it; the entry's amount is the released amount.
- `expire`  — like void, appended by the system once the timeout has passed.
A pending transfer resolves at most once (also enforced by a unique index in the database).

Account flags (checked after every transfer, inside the same transaction as the lock on the rows):
- DEBITS_MUST_NOT_EXCEED_CREDITS (1): debits_posted + debits_pending ≤ credits_posted — a holding or a
  revenue account can never go negative.
- CREDITS_MUST_NOT_EXCEED_DEBITS (2): the mirror image, for debit-normal accounts (penalties).
- max_net_debit: debits_posted + debits_pending − credits_posted ≤ limit — e.g. a CFT issuance account
  cannot mint beyond the declared capacity.

A request is a list of transfers applied atomically (a linked batch: all or nothing). Idempotency: the
caller chooses every transfer id; a request whose ids all exist with the same content returns the
stored entries unchanged; an id that exists with different content is a conflict (HTTP 409).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from grid.money import MAX_SAFE_INTEGER
from ledger.canonical import encode_entry
from ledger.errors import LedgerError

FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS = 1
FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS = 2

KINDS = ("single", "pending", "post", "void", "expire")
RESOLUTION_KINDS = frozenset({"post", "void", "expire"})
MAX_BALANCE = 2**63 - 1  # PostgreSQL bigint
MAX_MEMO_LEN = 500
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}\Z")


class TransferError(LedgerError):
    """A refused transfer: `code` is stable for programs, `message` is for people, `status` is HTTP."""

    def __init__(self, code: str, message: str, *, status: int = 422, transfer_id: str | None = None) -> None:
        super().__init__(code, message, status=status, transfer_id=transfer_id)
        self.transfer_id = transfer_id


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    ledger: str
    flags: int = 0
    max_net_debit: int | None = None


@dataclass(slots=True)
class Balance:
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def copy(self) -> Balance:
        return Balance(self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending)

    @property
    def net_posted(self) -> int:
        """credits − debits: positive means the ledger owes the account holder (tokens held, revenue)."""
        return self.credits_posted - self.debits_posted

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending)


@dataclass(frozen=True, slots=True)
class TransferSpec:
    """What a caller asks for. Post/void name `pending_id` and may omit accounts and ledger."""

    id: str
    kind: str = "single"
    ledger: str | None = None
    debit_account: str | None = None
    credit_account: str | None = None
    amount: int | None = None
    pending_id: str | None = None
    timeout_us: int | None = None
    memo: str = ""


@dataclass(frozen=True, slots=True)
class Entry:
    """One immutable journal entry, as hashed into the chain."""

    id: str
    ledger: str
    debit_account: str
    credit_account: str
    amount: int
    kind: str
    pending_id: str | None
    timeout_us: int | None
    time_us: int
    memo: str

    def canonical(self) -> bytes:
        return encode_entry(
            id=self.id,
            ledger=self.ledger,
            debit=self.debit_account,
            credit=self.credit_account,
            amount=self.amount,
            kind=self.kind,
            pending_id=self.pending_id,
            timeout_us=self.timeout_us,
            time_us=self.time_us,
            memo=self.memo,
        )

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "ledger": self.ledger,
            "debit_account": self.debit_account,
            "credit_account": self.credit_account,
            "amount": self.amount,
            "kind": self.kind,
            "pending_id": self.pending_id,
            "timeout_us": self.timeout_us,
            "time_us": self.time_us,
            "memo": self.memo,
        }


@dataclass
class Outcome:
    """Result of one request: `created` entries were appended, or the request already `exists`."""

    status: str  # "created" | "exists"
    entries: list[Entry] = field(default_factory=list)


@dataclass
class LedgerState:
    """The slice of the ledger a batch needs: accounts, locked balances, and known entries."""

    accounts: Mapping[str, Account]
    balances: dict[str, Balance]
    entries: dict[str, Entry]  # by id: stored entries relevant to the batch plus ones created in it
    resolved: dict[str, str]  # pending_id -> id of the resolving entry


def _check_static(spec: TransferSpec) -> None:
    tid = spec.id
    if not isinstance(tid, str) or not ID_PATTERN.match(tid):
        raise TransferError(
            "id_invalid",
            f"transfer id {tid!r} must be 1-200 characters from [A-Za-z0-9._:@/+=-], starting with a letter or digit",
            transfer_id=str(tid),
        )
    if spec.kind not in KINDS:
        raise TransferError("kind_invalid", f"kind must be one of {', '.join(KINDS)}", transfer_id=tid)
    if not isinstance(spec.memo, str) or len(spec.memo) > MAX_MEMO_LEN:
        raise TransferError("memo_invalid", f"memo must be text of at most {MAX_MEMO_LEN} characters", transfer_id=tid)
    if "\x00" in spec.memo or not _encodable(spec.memo):
        raise TransferError("memo_invalid", "memo must be valid Unicode without NUL characters", transfer_id=tid)
    for name in (spec.ledger, spec.debit_account, spec.credit_account, spec.pending_id):
        if name is not None and (
            not isinstance(name, str) or len(name) > 300 or not _encodable(name) or "\x00" in name
        ):
            raise TransferError(
                "name_invalid", f"{name!r} is not a valid ledger, account or transfer name", transfer_id=tid
            )
    if spec.amount is not None:
        if type(spec.amount) is not int or spec.amount <= 0:
            raise TransferError(
                "amount_not_positive", f"amount must be a positive integer, got {spec.amount!r}", transfer_id=tid
            )
        if spec.amount > MAX_SAFE_INTEGER:
            raise TransferError("amount_too_large", f"amount must not exceed {MAX_SAFE_INTEGER}", transfer_id=tid)
    if spec.kind in ("single", "pending"):
        if spec.amount is None:
            raise TransferError(
                "amount_not_positive", "amount is required and must be a positive integer", transfer_id=tid
            )
        if not spec.debit_account or not spec.credit_account or not spec.ledger:
            raise TransferError(
                "missing_field", "ledger, debit_account and credit_account are required", transfer_id=tid
            )
        if spec.debit_account == spec.credit_account:
            raise TransferError("accounts_must_differ", "debit and credit account must differ", transfer_id=tid)
        if spec.pending_id is not None:
            raise TransferError("pending_id_not_allowed", f"a {spec.kind} transfer has no pending_id", transfer_id=tid)
        if spec.kind == "single" and spec.timeout_us is not None:
            raise TransferError("timeout_not_allowed", "only pending transfers have a timeout", transfer_id=tid)
        if spec.timeout_us is not None and (
            type(spec.timeout_us) is not int or not 0 < spec.timeout_us <= MAX_SAFE_INTEGER
        ):  # the canonical entry carries it as an exact JSON integer (ledger/canonical.py)
            raise TransferError(
                "timeout_invalid",
                f"timeout_us must be a positive integer of microseconds up to {MAX_SAFE_INTEGER}, got "
                f"{spec.timeout_us!r}",
                transfer_id=tid,
            )
    else:
        if not spec.pending_id:
            raise TransferError("missing_field", f"a {spec.kind} transfer needs pending_id", transfer_id=tid)
        if spec.timeout_us is not None:
            raise TransferError("timeout_not_allowed", "only pending transfers have a timeout", transfer_id=tid)
        if spec.kind != "post" and spec.amount is not None:
            raise TransferError(
                "amount_not_allowed", f"a {spec.kind} releases the whole pending amount; omit amount", transfer_id=tid
            )


def _encodable(text: str) -> bool:
    if text.isascii():  # the common case, and much cheaper than encoding
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _same_content(spec: TransferSpec, entry: Entry, state: LedgerState) -> bool:
    if spec.kind != entry.kind or spec.memo != entry.memo:
        return False
    if spec.kind in ("single", "pending"):
        return (
            spec.ledger == entry.ledger
            and spec.debit_account == entry.debit_account
            and spec.credit_account == entry.credit_account
            and spec.amount == entry.amount
            and spec.timeout_us == entry.timeout_us
        )
    if spec.pending_id != entry.pending_id:
        return False
    for given, stored in (
        (spec.ledger, entry.ledger),
        (spec.debit_account, entry.debit_account),
        (spec.credit_account, entry.credit_account),
    ):
        if given is not None and given != stored:
            return False
    if spec.kind == "post":
        pending = state.entries.get(entry.pending_id or "")
        wanted = spec.amount if spec.amount is not None else (pending.amount if pending else None)
        return wanted == entry.amount
    return True


def _check_limits(account: Account, bal: Balance, tid: str) -> None:
    if (
        bal.debits_posted > MAX_BALANCE
        or bal.credits_posted > MAX_BALANCE
        or bal.debits_pending > MAX_BALANCE
        or bal.credits_pending > MAX_BALANCE
    ):
        raise TransferError("balance_overflow", f"account {account.name} would overflow", transfer_id=tid)
    if account.flags & FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS and (
        bal.debits_posted + bal.debits_pending > bal.credits_posted
    ):
        raise TransferError(
            "exceeds_credits",
            f"account {account.name} would be overdrawn: debits {bal.debits_posted + bal.debits_pending} "
            f"would exceed credits {bal.credits_posted}",
            status=409,
            transfer_id=tid,
        )
    if account.flags & FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS and (
        bal.credits_posted + bal.credits_pending > bal.debits_posted
    ):
        raise TransferError(
            "exceeds_debits",
            f"account {account.name}: credits {bal.credits_posted + bal.credits_pending} would exceed "
            f"debits {bal.debits_posted}",
            status=409,
            transfer_id=tid,
        )
    if account.max_net_debit is not None and (
        bal.debits_posted + bal.debits_pending - bal.credits_posted > account.max_net_debit
    ):
        raise TransferError(
            "exceeds_limit",
            f"account {account.name} would exceed its limit of {account.max_net_debit} "
            f"(net debits would be {bal.debits_posted + bal.debits_pending - bal.credits_posted})",
            status=409,
            transfer_id=tid,
        )


def _account(state: LedgerState, name: str, tid: str) -> Account:
    acc = state.accounts.get(name)
    if acc is None:
        raise TransferError("unknown_account", f"account {name!r} does not exist", transfer_id=tid)
    return acc


def apply_request(
    specs: Sequence[TransferSpec], state: LedgerState, now_us: int, time_us: int | None = None
) -> Outcome:
    """Apply one linked request to `state` atomically, or raise TransferError leaving it untouched.

    `now_us` is the instant the rules use (timeouts); `time_us` stamps the new entries (default now_us)
    — they differ only when a caller replays a simulated clock (the demo, tests).

    `state.balances` must hold every touched account (the caller locked those rows); `state.entries`
    must hold every stored entry whose id is in `specs` and every pending entry they name.
    """
    if not specs:
        raise TransferError("empty_request", "a request needs at least one transfer")
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise TransferError("duplicate_id", "a transfer id appears twice in one request")
    for spec in specs:
        _check_static(spec)

    existing = [state.entries.get(s.id) for s in specs]
    if any(e is not None for e in existing):
        for spec, entry in zip(specs, existing, strict=True):
            if entry is None:
                raise TransferError(
                    "id_conflict",
                    "part of this linked request already exists "
                    f"(transfer {spec.id} does not): resubmit the original request unchanged",
                    status=409,
                    transfer_id=spec.id,
                )
            if not _same_content(spec, entry, state):
                raise TransferError(
                    "id_conflict",
                    f"transfer {spec.id} already exists with different content",
                    status=409,
                    transfer_id=spec.id,
                )
        return Outcome("exists", [e for e in existing if e is not None])

    stamp = now_us if time_us is None else time_us
    scratch: dict[str, Balance] = {}
    created: dict[str, Entry] = {}
    resolved_here: dict[str, str] = {}

    def bal(name: str) -> Balance:
        b = scratch.get(name)
        if b is None:
            base = state.balances.get(name)
            if base is None:
                raise RuntimeError(f"balance row for {name} was not loaded and locked")
            b = scratch[name] = base.copy()
        return b

    entries: list[Entry] = []
    for spec in specs:
        tid = spec.id
        if spec.kind in ("single", "pending"):
            debit = _account(state, spec.debit_account or "", tid)
            credit = _account(state, spec.credit_account or "", tid)
            if debit.ledger != credit.ledger or debit.ledger != spec.ledger:
                raise TransferError(
                    "ledger_mismatch",
                    f"ledger {spec.ledger}: account {debit.name} is in {debit.ledger}, "
                    f"{credit.name} is in {credit.ledger}",
                    transfer_id=tid,
                )
            amount = spec.amount or 0
            if spec.kind == "pending" and spec.timeout_us is not None and spec.timeout_us <= now_us:
                raise TransferError(
                    "timeout_in_past", "a pending transfer's timeout must be in the future", transfer_id=tid
                )
            db, cb = bal(debit.name), bal(credit.name)
            if spec.kind == "single":
                db.debits_posted += amount
                cb.credits_posted += amount
            else:
                db.debits_pending += amount
                cb.credits_pending += amount
            _check_limits(debit, db, tid)
            _check_limits(credit, cb, tid)
            entry = Entry(
                tid, debit.ledger, debit.name, credit.name, amount, spec.kind, None, spec.timeout_us, stamp, spec.memo
            )
        else:
            pid = spec.pending_id or ""
            pending = created.get(pid) or state.entries.get(pid)
            if pending is None or pending.kind != "pending":
                raise TransferError("pending_not_found", f"no pending transfer with id {pid!r}", transfer_id=tid)
            resolver = resolved_here.get(pid) or state.resolved.get(pid)
            if resolver is not None:
                raise TransferError(
                    "pending_already_resolved",
                    f"pending transfer {pid} was already resolved by {resolver}",
                    status=409,
                    transfer_id=tid,
                )
            for given, actual, what in (
                (spec.ledger, pending.ledger, "ledger"),
                (spec.debit_account, pending.debit_account, "debit_account"),
                (spec.credit_account, pending.credit_account, "credit_account"),
            ):
                if given is not None and given != actual:
                    raise TransferError(
                        "pending_mismatch",
                        f"{what} {given!r} differs from the pending transfer's {actual!r}",
                        transfer_id=tid,
                    )
            expired = pending.timeout_us is not None and pending.timeout_us <= now_us
            if spec.kind == "expire":
                if not expired:
                    raise TransferError(
                        "pending_not_expired", f"pending transfer {pid} has not timed out", status=409, transfer_id=tid
                    )
            elif expired:
                raise TransferError(
                    "pending_expired",
                    f"pending transfer {pid} timed out and can no longer be "
                    f"{'posted' if spec.kind == 'post' else 'voided'}",
                    status=409,
                    transfer_id=tid,
                )
            reserved = pending.amount
            amount = reserved if spec.kind != "post" or spec.amount is None else spec.amount
            if amount > reserved:
                raise TransferError(
                    "exceeds_pending_amount",
                    f"cannot post {amount}: pending transfer {pid} reserved {reserved}",
                    transfer_id=tid,
                )
            debit = _account(state, pending.debit_account, tid)
            credit = _account(state, pending.credit_account, tid)
            db, cb = bal(debit.name), bal(credit.name)
            db.debits_pending -= reserved
            cb.credits_pending -= reserved
            if spec.kind == "post":
                db.debits_posted += amount
                cb.credits_posted += amount
            _check_limits(debit, db, tid)
            _check_limits(credit, cb, tid)
            resolved_here[pid] = tid
            entry = Entry(
                tid,
                pending.ledger,
                pending.debit_account,
                pending.credit_account,
                amount,
                spec.kind,
                pid,
                None,
                stamp,
                spec.memo,
            )
        created[tid] = entry
        entries.append(entry)

    # Commit the scratch state only now: a refused transfer above left `state` untouched.
    for name, b in scratch.items():
        state.balances[name] = b
    state.entries.update(created)
    state.resolved.update(resolved_here)
    return Outcome("created", entries)


def balances_from_entries(entries: Sequence[Entry]) -> dict[str, Balance]:
    """Recompute every balance from the journal alone (the invariant `balance = Σ entries`)."""
    out: dict[str, Balance] = {}
    by_id = {e.id: e for e in entries}

    def b(name: str) -> Balance:
        return out.setdefault(name, Balance())

    for e in entries:
        d, c = b(e.debit_account), b(e.credit_account)
        if e.kind == "single":
            d.debits_posted += e.amount
            c.credits_posted += e.amount
        elif e.kind == "pending":
            d.debits_pending += e.amount
            c.credits_pending += e.amount
        else:
            reserved = by_id[e.pending_id or ""].amount
            d.debits_pending -= reserved
            c.credits_pending -= reserved
            if e.kind == "post":
                d.debits_posted += e.amount
                c.credits_posted += e.amount
    return out


def with_time(entry: Entry, time_us: int) -> Entry:
    return replace(entry, time_us=time_us)
