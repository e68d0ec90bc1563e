"""What every route of the ledger's HTTP API shares: the route class that turns refusals into JSON 4xx,
the runtime (pooled connections, the group committer, the signing key), authentication by API key,
the transaction helpers, the read permissions and the base of the request bodies.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from psycopg_pool import ConnectionPool
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt

from beckn.keys import KeyPair
from grid.money import QuantityError
from grid.periods import PeriodError
from kernel import db
from ledger import accounts as acct
from ledger.api import permissions
from ledger.api_keys import Principal, authenticate
from ledger.checkpoints import ledger_keypair
from ledger.db import connection, conninfo, in_transaction
from ledger.errors import LedgerError, forbidden
from ledger.group_commit import GroupCommitter
from ledger.settlement import OrderTerms
from schemas import limits


def _error(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"error": body}, status_code=status)


class LedgerRoute(APIRoute):
    """Turns every refusal into a JSON 4xx, wherever the router is mounted."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except LedgerError as exc:
                return _error(exc.status, exc.as_dict())
            except (QuantityError, PeriodError, acct.AccountNameError) as exc:
                return _error(422, {"code": "invalid_value", "message": str(exc)})
            except RequestValidationError as exc:
                details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
                message = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in details[:5])
                return _error(  # 400 naming the field, as at every participant (beckn/webapp.py)
                    400, {"code": "invalid_request", "message": message or "invalid request", "details": details}
                )
            except psycopg.errors.CheckViolation as exc:  # a DB guard caught what validation missed
                return _error(409, {"code": "constraint_violation", "message": str(exc).splitlines()[0]})
            except psycopg.errors.DataError as exc:
                return _error(422, {"code": "invalid_value", "message": str(exc).splitlines()[0]})

        return route


# --- runtime: pooled connections, the group committer, the signing key -------------------------------


class LedgerRuntime:
    def __init__(self, url: str) -> None:
        self.url = url
        self.conninfo = conninfo(url)
        # Refuses (LedgerKeyError naming the file) when the key file is missing but checkpoints exist.
        with connection(url) as conn:
            ledger_keypair(conn=conn)
        self.pool = ConnectionPool(
            self.conninfo, min_size=1, max_size=16, open=True, name="ledger", kwargs={"autocommit": True}
        )
        self.committer = GroupCommitter(self.conninfo)  # one connection: see its docstring

    @property
    def keypair(self) -> KeyPair:
        """Read from its file on each use (no database unless the file is missing), so a `flexmarket ledger
        rotate-key` takes effect without a restart."""
        return ledger_keypair()

    def close(self) -> None:
        self.committer.close()
        self.pool.close()


_runtimes: dict[str, LedgerRuntime] = {}
_runtime_lock = threading.Lock()


def get_runtime() -> LedgerRuntime:
    url = db.database_url()
    with _runtime_lock:
        rt = _runtimes.get(url)
        if rt is None:
            rt = _runtimes[url] = LedgerRuntime(url)
        return rt


def close_runtimes() -> None:
    with _runtime_lock:
        for rt in _runtimes.values():
            rt.close()
        _runtimes.clear()


Runtime = Annotated[LedgerRuntime, Depends(get_runtime)]


def get_principal(
    request: Request,
    rt: Runtime,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Principal:
    """The key's principal, once the permission table (ledger/api/permissions.py) lets its role call this
    route: 401 without a valid key, 403 naming the roles that may."""
    token = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    with rt.pool.connection() as conn:
        principal = authenticate(conn, token)
    if principal is None:
        raise LedgerError("unauthorized", "a valid API key is required (Authorization: Bearer flk_…)", status=401)
    path = getattr(request.scope.get("route"), "path_format", request.url.path)
    access = permissions.access_for(request.method, path)
    why = permissions.refusal(principal.role, access, permissions.hint_for(request.method, path, principal.role))
    if why is not None:
        raise LedgerError("role_forbidden" if access is not None else "no_permission_entry", why, status=403)
    return principal


Who = Annotated[Principal, Depends(get_principal)]


def tx(rt: LedgerRuntime, fn: Callable[[psycopg.Connection], Any]) -> Any:
    """`fn(conn)` in a transaction on a pooled connection (retried on unique-key races)."""
    with rt.pool.connection() as conn:
        return in_transaction(conn, fn)


def read(rt: LedgerRuntime, fn: Callable[[psycopg.Connection], Any]) -> Any:
    """`fn(conn)` on a pooled autocommit connection (reads)."""
    with rt.pool.connection() as conn:
        return fn(conn)


def created(body: dict[str, Any]) -> JSONResponse:
    """201 for something new, 200 when it already existed (idempotent requests)."""
    return JSONResponse(body, status_code=201 if body.get("status") == "created" else 200)


def require_read(who: Principal, account: str) -> None:
    if not acct.can_read(account, who.role, who.participant_id):
        raise forbidden(f"a {who.role} key for {who.participant_id} may not read {account}")


def require_order_reader(who: Principal, terms: OrderTerms) -> None:
    if who.role in ("admin", "finance"):
        return
    if (who.role, who.participant_id) not in (("bap", terms.bap_id), ("provider", terms.provider_id)):
        raise forbidden("only the order's BAP, its provider and finance can read it")


# --- request bodies -----------------------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# One-line text of 1-200 characters (ids, names, sources): no NUL or control character (schemas/limits.py).
Text = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(limits.one_line)]
Tokens = Annotated[StrictInt, Field(gt=0, le=limits.MAX_SAFE_INTEGER)]
Amount = Annotated[StrictInt, Field(ge=-limits.MAX_SAFE_INTEGER, le=limits.MAX_SAFE_INTEGER)]
