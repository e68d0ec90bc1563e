"""The ledger's HTTP API: `router = APIRouter()`, every path under /api/v1 (mounted by ledger/main.py,
and mountable into any other FastAPI app — errors are formatted by the route class, not the app).

Authentication: `Authorization: Bearer flk_<key id>_<secret>` (or `X-API-Key: …`). Keys are created
with `flexmarket ledger apikey create --role ROLE [--participant ID]` (ledger/cli.py) or by an admin
key with POST /api/v1/apikeys. Roles: admin (everything), finance (reads everything, runs settlement,
transfers, prices, checkpoints), provider / bap / supplier (bound to one participant id: reads only its
own accounts; a provider posts metering for its meters and mints/sells its tokens; a BAP registers its
orders and trades/redeems the tokens it holds).

Every refusal is a 4xx JSON body `{"error": {"code": "…", "message": "…", …}}` and writes nothing.
Quantities carry units in their names; decimals may be JSON numbers or strings (strings are exact):
kW and kWh to 3 decimals (W, Wh), £/MWh to 5 decimals (milli-pence), £ to 2 decimals (pence).

Endpoints (examples in the module docstring of ledger/main.py):
  POST /api/v1/orders                         register a confirmed order (idempotent by order_id)
  POST /api/v1/orders/{order_id}/cancel       cancel before the window opens
  GET  /api/v1/orders/{order_id}              terms and settlement runs
  POST /api/v1/metering                       half-hourly kWh for one meter
  POST /api/v1/prices                         imbalance / market index prices (£/MWh)
  POST /api/v1/policies                       publish a settlement policy version
  POST /api/v1/settlement/run                 run what is due (or one order's next run)
  GET  /api/v1/settlement/{order_id}/{run}    a stored run with per-period detail
  POST /api/v1/transfers                      one transfer (single | pending | post | void)
  POST /api/v1/transfers/batch                a linked batch (all or nothing)
  GET  /api/v1/transfers/{id}                 one transfer; GET …/{id}/proof its inclusion proof
  POST /api/v1/accounts                       open a chart account (admin)
  GET  /api/v1/accounts/{name}                account with current balances
  GET  /api/v1/balances/{name}?as_of=         balance as of an instant
  POST /api/v1/cft/series | mint | sell | transfer | redeem ; GET /api/v1/cft/series/{id}
  GET  /api/v1/statements/{account}?from=&to=&format=json|csv
  GET  /api/v1/checkpoints/latest | /{height} | /public-key ; POST /api/v1/checkpoints
  GET  /api/v1/chain/head ; GET /api/v1/verify
  POST /api/v1/apikeys (admin)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from datetime import UTC
from decimal import Decimal
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

from grid.money import QuantityError, decimal_to_units, gbp_per_mwh_to_millipence
from grid.periods import PeriodError
from kernel import clock
from ledger import accounts as acct
from ledger import service as svc
from ledger.errors import LedgerError, forbidden
from ledger.settlement import DEFAULT_POLICY, OrderTerms
from ledger.transfers import TransferSpec


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
                return _error(
                    422, {"code": "invalid_request", "message": message or "invalid request", "details": details}
                )
            except psycopg.errors.CheckViolation as exc:  # a DB guard caught what validation missed
                return _error(409, {"code": "constraint_violation", "message": str(exc).splitlines()[0]})
            except psycopg.errors.DataError as exc:
                return _error(422, {"code": "invalid_value", "message": str(exc).splitlines()[0]})

        return route


router = APIRouter(prefix="/api/v1", route_class=LedgerRoute, tags=["ledger"])


# --- runtime: pooled connections, the group committer, the signing key -------------------------------


class LedgerRuntime:
    def __init__(self, url: str) -> None:
        from psycopg_pool import ConnectionPool

        from ledger.store import GroupCommitter

        self.url = url
        self.conninfo = svc.conninfo(url)
        self.pool = ConnectionPool(
            self.conninfo, min_size=1, max_size=16, open=True, name="ledger", kwargs={"autocommit": True}
        )
        self.committer = GroupCommitter(self.conninfo)  # one connection: see its docstring
        self.keypair = svc.ledger_keypair()

    def close(self) -> None:
        self.committer.close()
        self.pool.close()


_runtimes: dict[str, LedgerRuntime] = {}
_runtime_lock = threading.Lock()


def get_runtime() -> LedgerRuntime:
    from kernel import db

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
    rt: Runtime,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> svc.Principal:
    token = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    with rt.pool.connection() as conn:
        principal = svc.authenticate(conn, token)
    if principal is None:
        raise LedgerError("unauthorized", "a valid API key is required (Authorization: Bearer flk_…)", status=401)
    return principal


Who = Annotated[svc.Principal, Depends(get_principal)]


def _tx(rt: LedgerRuntime, fn: Callable[[psycopg.Connection], Any]) -> Any:
    with rt.pool.connection() as conn:
        return svc.in_transaction(conn, fn)


def _read(rt: LedgerRuntime, fn: Callable[[psycopg.Connection], Any]) -> Any:
    with rt.pool.connection() as conn:
        return fn(conn)


def _created(body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=201 if body.get("status") == "created" else 200)


def _require_read(who: svc.Principal, account: str) -> None:
    if not acct.can_read(account, who.role, who.participant_id):
        raise forbidden(f"a {who.role} key for {who.participant_id} may not read {account}")


# --- request bodies -----------------------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


Text = Annotated[str, Field(min_length=1, max_length=200)]
Tokens = Annotated[StrictInt, Field(gt=0)]


class OrderIn(Body):
    order_id: Text
    transaction_id: Text
    provider_id: Text
    bap_id: Text
    meter_id: Text
    supplier_id: Text
    window_start: AwareDatetime
    window_end: AwareDatetime
    contracted_kw: Decimal
    price_gbp_per_mwh: Decimal
    availability_price_gbp_per_mw_h: Decimal | None = None
    settlement_method: Literal["P415", "CFT"] = "P415"
    resource_type: Literal["compute", "storage"] = "compute"
    confirmed_at: AwareDatetime
    policy_version: Text = DEFAULT_POLICY

    def terms(self) -> OrderTerms:
        meter = self.meter_id.removeprefix("der://")
        return OrderTerms(
            self.order_id,
            self.provider_id,
            self.bap_id,
            meter,
            self.supplier_id,
            self.window_start.astimezone(UTC),
            self.window_end.astimezone(UTC),
            decimal_to_units(self.contracted_kw, 3, "contracted_kw"),
            gbp_per_mwh_to_millipence(self.price_gbp_per_mwh, "price_gbp_per_mwh"),
            None
            if self.availability_price_gbp_per_mw_h is None
            else gbp_per_mwh_to_millipence(self.availability_price_gbp_per_mw_h, "availability_price_gbp_per_mw_h"),
            self.settlement_method,
            self.resource_type,
            self.confirmed_at.astimezone(UTC),
            self.policy_version,
        )


class CancelIn(Body):
    reason: Annotated[str, Field(max_length=500)] = ""


class ReadingIn(Body):
    period_start: AwareDatetime
    energy_kwh: Decimal


class MeteringIn(Body):
    meter_id: Text
    readings: Annotated[list[ReadingIn], Field(min_length=1, max_length=svc.MAX_READINGS_PER_REQUEST)]
    correction: bool = False
    provider_id: Text | None = None  # admin keys only: the owner of a meter seen for the first time


class PriceIn(Body):
    period_start: AwareDatetime
    imbalance_price_gbp_per_mwh: Decimal | None = None
    market_index_price_gbp_per_mwh: Decimal | None = None


class PricesIn(Body):
    source: Text
    prices: Annotated[list[PriceIn], Field(min_length=1, max_length=50_000)]


class PolicyIn(Body):
    version: Text
    params: dict[str, Any]


class SettlementRunIn(Body):
    order_id: Text | None = None
    as_of: AwareDatetime | None = None
    force: bool = False


class TransferIn(Body):
    id: Text
    kind: Literal["single", "pending", "post", "void"] = "single"
    ledger: Text | None = None
    debit_account: Text | None = None
    credit_account: Text | None = None
    amount: StrictInt | None = None
    pending_id: Text | None = None
    expires_at: AwareDatetime | None = None  # pending only: when the reservation times out
    memo: Annotated[str, Field(max_length=500)] = ""

    def spec(self) -> TransferSpec:
        if self.kind in ("single", "pending") and self.ledger not in (None, acct.GBP):
            raise LedgerError("ledger_not_allowed", "generic transfers move GBP; tokens move through /api/v1/cft/…")
        if self.pending_id and self.pending_id.startswith(svc.RESERVED_PREFIXES):
            raise LedgerError("id_reserved", "the ledger's own pending transfers are resolved by settlement")
        return TransferSpec(
            self.id,
            self.kind,
            self.ledger,
            self.debit_account,
            self.credit_account,
            self.amount,
            self.pending_id,
            None if self.expires_at is None else svc.us(self.expires_at),
            self.memo,
        )


class BatchIn(Body):
    transfers: Annotated[list[TransferIn], Field(min_length=1, max_length=1000)]


class AccountIn(Body):
    name: Text


class SeriesIn(Body):
    series_id: Text
    provider_id: Text
    valid_from: AwareDatetime
    valid_to: AwareDatetime
    declared_capacity_kw: Decimal


class MintIn(Body):
    id: Text
    series_id: Text
    tokens: Tokens


class SellIn(Body):
    id: Text
    series_id: Text
    buyer_id: Text
    tokens: Tokens
    price_gbp: Decimal = Decimal(0)


class CftTransferIn(Body):
    id: Text
    series_id: Text
    from_id: Text
    to_id: Text
    tokens: Tokens
    price_gbp: Decimal = Decimal(0)


class RedeemIn(Body):
    id: Text
    series_id: Text
    holder_id: Text
    tokens: Tokens
    period_start: AwareDatetime
    period_end: AwareDatetime
    meter_id: Text
    supplier_id: Text
    policy_version: Text = DEFAULT_POLICY


class ApiKeyIn(Body):
    role: Literal["admin", "finance", "provider", "bap", "supplier"]
    participant_id: Text | None = None
    label: Annotated[str, Field(max_length=200)] = ""


# --- orders, metering, prices, policies, settlement -------------------------------------------------------


@router.post("/orders")
def post_order(body: OrderIn, rt: Runtime, who: Who) -> JSONResponse:
    who.require_participant("bap", body.bap_id)
    terms = body.terms()
    return _created(_tx(rt, lambda c: svc.register_order(c, terms, body.transaction_id, svc.utcnow())))


@router.post("/orders/{order_id}/cancel")
def cancel_order(order_id: str, rt: Runtime, who: Who, body: CancelIn | None = None) -> JSONResponse:
    terms, _ = _read(rt, lambda c: svc.load_order(c, order_id))
    who.require_participant("bap", terms.bap_id)
    reason = body.reason if body else ""
    return _created(_tx(rt, lambda c: svc.cancel_order(c, order_id, svc.utcnow(), reason)))


def _require_order_reader(who: svc.Principal, terms: OrderTerms) -> None:
    if who.role in ("admin", "finance"):
        return
    if (who.role, who.participant_id) not in (("bap", terms.bap_id), ("provider", terms.provider_id)):
        raise forbidden("only the order's BAP, its provider and finance can read it")


@router.get("/orders/{order_id}")
def get_order(order_id: str, rt: Runtime, who: Who) -> dict[str, Any]:
    terms, _ = _read(rt, lambda c: svc.load_order(c, order_id))
    _require_order_reader(who, terms)
    return _read(rt, lambda c: svc.order_summary(c, order_id))


@router.post("/metering")
def post_metering(body: MeteringIn, rt: Runtime, who: Who) -> JSONResponse:
    if who.role == "provider":
        if body.provider_id not in (None, who.participant_id):
            raise forbidden("a provider key posts metering only for its own meters")
        provider = who.participant_id
    elif who.role == "admin":
        provider = body.provider_id
    else:
        raise forbidden("metering is posted with the provider's key")
    readings = [
        svc.Reading(r.period_start.astimezone(UTC), decimal_to_units(r.energy_kwh, 3, "energy_kwh"))
        for r in body.readings
    ]
    meter = body.meter_id.removeprefix("der://")
    return _created(
        _tx(
            rt,
            lambda c: svc.ingest_metering(
                c, meter, readings, provider_id=provider, now=svc.utcnow(), correction=body.correction
            ),
        )
    )


@router.post("/prices")
def post_prices(body: PricesIn, rt: Runtime, who: Who) -> dict[str, Any]:
    who.require("admin", "finance")

    def pence(v: Decimal | None, what: str) -> int | None:
        return None if v is None else gbp_per_mwh_to_millipence(v, what)

    rows = [
        svc.PriceRow(
            p.period_start.astimezone(UTC),
            pence(p.imbalance_price_gbp_per_mwh, "imbalance price"),
            pence(p.market_index_price_gbp_per_mwh, "market index price"),
        )
        for p in body.prices
    ]
    return _tx(rt, lambda c: svc.ingest_prices(c, rows, body.source, svc.utcnow()))


@router.post("/policies")
def post_policy(body: PolicyIn, rt: Runtime, who: Who) -> JSONResponse:
    who.require("admin")
    return _created(_tx(rt, lambda c: svc.create_policy(c, body.version, body.params)))


@router.get("/policies/{version}")
def get_policy(version: str, rt: Runtime, who: Who) -> dict[str, Any]:
    policy = _tx(rt, lambda c: svc.get_policy(c, version))
    return {"version": version, "params": policy.to_json()}


@router.post("/settlement/run")
def post_settlement_run(body: SettlementRunIn, rt: Runtime, who: Who) -> dict[str, Any]:
    """Run every settlement run due now (or at `as_of`, which may not be in the future)."""
    who.require("admin", "finance")
    now = svc.utcnow()
    as_of = now if body.as_of is None else body.as_of.astimezone(UTC)
    if as_of > now + svc.CLOCK_SKEW:
        raise LedgerError("as_of_in_future", "settlement cannot be run as of a future instant")
    if body.order_id is not None:
        _read(rt, lambda c: svc.load_order(c, body.order_id or ""))
    outcomes = svc.settle_due(
        rt.url, as_of, order_ids=None if body.order_id is None else [body.order_id], force=body.force
    )
    return {"as_of": svc.iso(as_of), "runs": [o.as_json() for o in outcomes]}


@router.get("/settlement/{order_id}/{run}")
def get_settlement_run(order_id: str, run: str, rt: Runtime, who: Who) -> dict[str, Any]:
    terms, _ = _read(rt, lambda c: svc.load_order(c, order_id))
    _require_order_reader(who, terms)
    out = _read(rt, lambda c: svc.stored_run(c, order_id, run))
    out["as_of"] = svc.iso(out["as_of"])
    return out


# --- transfers and accounts -------------------------------------------------------------------------------


@router.post("/transfers")
def post_transfer(body: TransferIn, rt: Runtime, who: Who) -> JSONResponse:
    who.require("admin", "finance")
    spec = body.spec()
    svc.check_client_transfer_ids([spec])
    res = rt.committer.submit([spec]).raise_for_error()
    return _created(svc.transfer_result_json(res))


@router.post("/transfers/batch")
def post_transfer_batch(body: BatchIn, rt: Runtime, who: Who) -> JSONResponse:
    who.require("admin", "finance")
    specs = [t.spec() for t in body.transfers]
    svc.check_client_transfer_ids(specs)
    res = rt.committer.submit(specs).raise_for_error()
    return _created(svc.transfer_result_json(res))


def _require_transfer_reader(who: svc.Principal, t: dict[str, Any]) -> None:
    if not (
        acct.can_read(t["debit_account"], who.role, who.participant_id)
        or acct.can_read(t["credit_account"], who.role, who.participant_id)
    ):
        raise forbidden("this transfer touches none of your accounts")


@router.get("/transfers/{transfer_id}")
def get_transfer(transfer_id: str, rt: Runtime, who: Who) -> dict[str, Any]:
    t = _read(rt, lambda c: svc.get_transfer(c, transfer_id))
    _require_transfer_reader(who, t)
    return t


@router.get("/transfers/{transfer_id}/proof")
def get_transfer_proof(transfer_id: str, rt: Runtime, who: Who) -> dict[str, Any]:
    t = _read(rt, lambda c: svc.get_transfer(c, transfer_id))
    _require_transfer_reader(who, t)
    return _tx(rt, lambda c: svc.inclusion_proof(c, transfer_id, rt.keypair))


@router.post("/accounts")
def post_account(body: AccountIn, rt: Runtime, who: Who) -> JSONResponse:
    who.require("admin")
    return JSONResponse(_tx(rt, lambda c: svc.create_account(c, body.name)), status_code=201)


@router.get("/accounts/{name}")
def get_account(name: str, rt: Runtime, who: Who) -> dict[str, Any]:
    _require_read(who, name)
    return _read(rt, lambda c: svc.account_info(c, name))


@router.get("/balances/{name}")
def get_balance(
    name: str, rt: Runtime, who: Who, as_of: Annotated[AwareDatetime | None, Query()] = None
) -> dict[str, Any]:
    _require_read(who, name)
    at = svc.utcnow() if as_of is None else as_of.astimezone(UTC)
    return _read(rt, lambda c: svc.balance_as_of(c, name, at))


# --- compute flex tokens -----------------------------------------------------------------------------------


def _series_provider(rt: LedgerRuntime, series_id: str) -> str:
    return _read(rt, lambda c: svc.series_info(c, series_id))["provider_id"]


@router.post("/cft/series")
def post_series(body: SeriesIn, rt: Runtime, who: Who) -> JSONResponse:
    who.require_participant("provider", body.provider_id)
    capacity_w = decimal_to_units(body.declared_capacity_kw, 3, "declared_capacity_kw")
    return _created(
        _tx(
            rt,
            lambda c: svc.create_series(
                c,
                body.series_id,
                body.provider_id,
                body.valid_from.astimezone(UTC),
                body.valid_to.astimezone(UTC),
                capacity_w,
                svc.utcnow(),
            ),
        )
    )


@router.get("/cft/series/{series_id}")
def get_series(series_id: str, rt: Runtime, who: Who) -> dict[str, Any]:
    return _read(rt, lambda c: svc.series_info(c, series_id))


@router.post("/cft/mint")
def post_mint(body: MintIn, rt: Runtime, who: Who) -> JSONResponse:
    who.require_participant("provider", _series_provider(rt, body.series_id))
    return _created(_tx(rt, lambda c: svc.mint(c, body.id, body.series_id, body.tokens, svc.utcnow())))


@router.post("/cft/sell")
def post_sell(body: SellIn, rt: Runtime, who: Who) -> JSONResponse:
    provider = _series_provider(rt, body.series_id)
    who.require_participant("provider", provider)
    price = decimal_to_units(body.price_gbp, 2, "price_gbp")
    return _created(
        _tx(
            rt,
            lambda c: svc.trade(c, body.id, body.series_id, provider, body.buyer_id, body.tokens, price, svc.utcnow()),
        )
    )


@router.post("/cft/transfer")
def post_cft_transfer(body: CftTransferIn, rt: Runtime, who: Who) -> JSONResponse:
    if who.role != "admin" and who.participant_id != body.from_id:
        raise forbidden("only the holder can transfer its tokens")
    price = decimal_to_units(body.price_gbp, 2, "price_gbp")
    return _created(
        _tx(
            rt,
            lambda c: svc.trade(c, body.id, body.series_id, body.from_id, body.to_id, body.tokens, price, svc.utcnow()),
        )
    )


@router.post("/cft/redeem")
def post_redeem(body: RedeemIn, rt: Runtime, who: Who) -> JSONResponse:
    if who.role != "admin" and who.participant_id != body.holder_id:
        raise forbidden("only the holder can redeem its tokens")
    return _created(
        _tx(
            rt,
            lambda c: svc.redeem(
                c,
                body.id,
                body.series_id,
                body.holder_id,
                body.tokens,
                body.period_start.astimezone(UTC),
                body.period_end.astimezone(UTC),
                body.meter_id.removeprefix("der://"),
                body.supplier_id,
                svc.utcnow(),
                body.policy_version,
            ),
        )
    )


# --- statements, checkpoints, verification, keys --------------------------------------------------------------


@router.get("/statements/{account}")
def get_statement(
    account: str,
    rt: Runtime,
    who: Who,
    from_: Annotated[AwareDatetime, Query(alias="from")],
    to: Annotated[AwareDatetime, Query()],
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    _require_read(who, account)
    doc = _tx(rt, lambda c: svc.statement(c, account, from_.astimezone(UTC), to.astimezone(UTC), rt.keypair))
    if format == "csv":
        return PlainTextResponse(svc.statement_csv(doc), media_type="text/csv")
    return JSONResponse(doc)


@router.get("/checkpoints/public-key")
def get_public_key(rt: Runtime) -> dict[str, str]:
    return {
        "algorithm": "Ed25519",
        "key_id": rt.keypair.unique_key_id,
        "public_key_b64": rt.keypair.signing_public_key_b64,
    }


@router.get("/checkpoints/latest")
def get_latest_checkpoint(rt: Runtime) -> dict[str, Any]:
    cp = _read(rt, lambda c: svc.get_checkpoint(c))
    if cp is None:
        raise LedgerError("not_found", "no checkpoint yet", status=404)
    return cp


@router.get("/checkpoints/{height}")
def get_checkpoint(height: int, rt: Runtime) -> dict[str, Any]:
    cp = _read(rt, lambda c: svc.get_checkpoint(c, height))
    if cp is None:
        raise LedgerError("not_found", f"no checkpoint at height {height}", status=404)
    return cp


@router.post("/checkpoints")
def post_checkpoint(rt: Runtime, who: Who) -> JSONResponse:
    who.require("admin", "finance")
    cp = _tx(rt, lambda c: svc.create_checkpoint(c, rt.keypair, publish_dir=svc.default_publish_dir()))
    if cp is None:
        raise LedgerError("empty_ledger", "the chain is empty; nothing to sign", status=409)
    return JSONResponse(cp, status_code=201)


@router.get("/chain/head")
def get_chain_head(rt: Runtime) -> dict[str, Any]:
    return _read(rt, svc.chain_head)


@router.get("/verify")
def get_verify(rt: Runtime, who: Who) -> dict[str, Any]:
    who.require("admin", "finance")
    with rt.pool.connection() as conn:
        report = svc.verify_ledger(conn, rt.keypair.signing_public_key_b64)
    chain = report.chain
    return {
        "ok": report.ok,
        "summary": report.summary(),
        "entry_count": chain.entry_count,
        "link_count": chain.link_count,
        "head_hash": chain.head_hash.hex(),
        "problem": None if chain.problem is None else chain.problem.message,
        "problems": report.problems,
        "seconds": round(report.seconds, 3),
    }


@router.post("/apikeys")
def post_apikey(body: ApiKeyIn, rt: Runtime, who: Who) -> JSONResponse:
    who.require("admin")
    token = _tx(rt, lambda c: svc.create_api_key(c, body.role, body.participant_id, body.label))
    return JSONResponse({"api_key": token, "role": body.role, "participant_id": body.participant_id}, status_code=201)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "time": clock.wall_now().isoformat(), "market_time": clock.now().isoformat()}
