"""Route: an account statement as JSON or CSV (ledger/statements.py, ledger/statement_csv.py)."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import AwareDatetime

from ledger.api.deps import LedgerRoute, Runtime, Who, require_read, tx
from ledger.statement_csv import statement_csv
from ledger.statements import statement

router = APIRouter(route_class=LedgerRoute)


@router.get("/statements/{account}")
def get_statement(
    account: str,
    rt: Runtime,
    who: Who,
    *,
    from_: Annotated[AwareDatetime, Query(alias="from")],
    to: Annotated[AwareDatetime, Query()],
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    require_read(who, account)
    doc = tx(rt, lambda c: statement(c, account, from_.astimezone(UTC), to.astimezone(UTC), rt.keypair))
    if format == "csv":
        return PlainTextResponse(statement_csv(doc), media_type="text/csv")
    return JSONResponse(doc)
