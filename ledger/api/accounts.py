"""Routes: open a chart account, read an account and a balance as of an instant (ledger/accounts_db.py)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime

from kernel import clock
from ledger import accounts_db
from ledger.api.deps import Body, LedgerRoute, Runtime, Text, Who, read, require_read, tx
from schemas import limits

router = APIRouter(route_class=LedgerRoute)


class AccountIn(Body):
    name: Text


@router.post("/accounts")
def post_account(body: AccountIn, rt: Runtime, who: Who) -> JSONResponse:
    return JSONResponse(tx(rt, lambda c: accounts_db.create_account(c, body.name)), status_code=201)


@router.get("/accounts")
def list_accounts(
    rt: Runtime,
    who: Who,
    ledger: Annotated[str | None, Query(max_length=200)] = None,
    owner_kind: Annotated[str | None, Query(max_length=50)] = None,
    owner_id: Annotated[str | None, Query(max_length=200)] = None,
    prefix: Annotated[str | None, Query(max_length=200)] = None,
    after: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=limits.MAX_PAGE_SIZE)] = 100,
) -> dict[str, Any]:
    """Accounts with balances this key may read (admin, finance: all; a participant: its own), by name;
    page with `after` = the previous page's `next_after`."""
    return read(
        rt,
        lambda c: accounts_db.list_accounts(
            c,
            role=who.role,
            participant_id=who.participant_id,
            ledger=ledger,
            owner_kind=owner_kind,
            owner_id=owner_id,
            prefix=prefix,
            after=after,
            limit=limit,
        ),
    )


@router.get("/accounts/{name}")
def get_account(name: str, rt: Runtime, who: Who) -> dict[str, Any]:
    require_read(who, name)
    return read(rt, lambda c: accounts_db.account_info(c, name))


@router.get("/balances/{name}")
def get_balance(
    name: str, rt: Runtime, who: Who, as_of: Annotated[AwareDatetime | None, Query()] = None
) -> dict[str, Any]:
    require_read(who, name)
    at = clock.now() if as_of is None else as_of.astimezone(UTC)
    return read(rt, lambda c: accounts_db.balance_as_of(c, name, at))
