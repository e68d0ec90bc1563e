"""The ledger's HTTP API: `router = APIRouter()`, every path under /api/v1 (mounted by ledger/main.py,
and mountable into any other FastAPI app — errors are formatted by the route class, not the app).

Each area's routes are in the module named like its use-case module (ledger/api/orders.py →
ledger/orders.py, …); ledger/api/deps.py holds what they share (route class, runtime, authentication,
transaction helpers, request-body base). This module only assembles them, in the order below (the order
of the OpenAPI document, and of matching: /checkpoints/latest before /checkpoints/{height}).

Authentication: `Authorization: Bearer flk_<key id>_<secret>` (or `X-API-Key: …`). Keys are created
with `flexmarket ledger apikey create --role ROLE [--participant ID]` (ledger/cli.py) or by an admin
key with POST /api/v1/apikeys. Roles: admin (everything), finance (reads everything, runs settlement,
transfers, prices, checkpoints), provider / bap / supplier (bound to one participant id: reads only its
own accounts; a provider posts metering for its meters and mints/sells its tokens — a sale only with the
buyer's signed Beckn confirm for it; a BAP registers the orders it confirmed — only with its signed confirm
and the provider platform's signed on_confirm — and transfers/redeems the tokens it holds), meter_operator
(bound to the host supplier or an independent meter operator: registers Ed25519 keys and posts readings
signed with them, ledger/meter_data.py).

Every refusal is a 4xx JSON body `{"error": {"code": "…", "message": "…", …}}` and writes nothing.
Quantities carry units in their names; decimals may be JSON numbers or strings (strings are exact):
kW and kWh to 3 decimals (W, Wh), £/MWh to 5 decimals (milli-pence), £ to 2 decimals (pence).

Signed Beckn messages travel as {"body_base64": <the exact bytes>, "authorization": <the BECKN-006
header>}; the ledger checks each against the registry's key for the signer, valid at the signature's
`created` time (ledger/agreements.py), and stores it beside what it backs (ledger.agreements).

Endpoints (examples in the module docstring of ledger/main.py):
  POST /api/v1/orders                         register a confirmed order: {"confirm", "on_confirm", "supplier_id",
                                              …}; its terms are the signed on_confirm's (idempotent by order id)
  POST /api/v1/orders/{order_id}/amend        an accepted update: {"on_update"} signed by the order's platform
  POST /api/v1/orders/{order_id}/cancel       cancel before the window opens
  GET  /api/v1/orders/{order_id}              terms, agreement hash and settlement runs
  GET  /api/v1/orders/{order_id}/agreement    the signed confirm and on_confirm (and on_updates), to re-verify
                                              offline (the order's BAP and provider, finance, admin)
  POST /api/v1/metering                       half-hourly kWh for one meter (provider: stored self_reported;
                                              signed kWh, negative = net export)
  GET  /api/v1/metering/{meter_id}?from=&to= the reading per half hour that settlement would use (the meter
                                              operator's first, then the latest version) with its kind
  POST /api/v1/metering/signed                a meter operator's readings, Ed25519-signed over the RFC 8785
                                              bytes of `payload` (stored meter_operator; settlement prefers them)
  POST /api/v1/meter-data-keys                register a meter operator's Ed25519 public key
  GET  /api/v1/meter-data-keys                its keys ; POST /api/v1/meter-data-keys/{key_id}/revoke
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
                                              (sell: with the buyer's signed "confirm"; transfer: the holder's
                                              own key, and the receiver's signed "confirm" when it has a price)
  POST /api/v1/cft/listings                   the key's participant lists tokens at a price per token (escrowed)
  GET  /api/v1/cft/listings?series_id=&seller_id=&state=open|all ; GET /api/v1/cft/listings/{id}
  POST /api/v1/cft/listings/{id}/buy          a BAP buys: {"id", "tokens", "confirm"} — tokens and cash in one
                                              append, with its signed confirm; POST …/{id}/cancel (the seller)
  GET  /api/v1/statements/{account}?from=&to=&format=json|csv
  GET  /api/v1/checkpoints/latest | /{height} | /public-key ; POST /api/v1/checkpoints
  GET  /api/v1/chain/head ; GET /api/v1/verify
  POST /api/v1/apikeys (admin)
  GET  /api/v1/healthz
"""

from __future__ import annotations

from fastapi import APIRouter

from beckn.webapp import CLIENT_API_RESPONSES
from ledger.api import (
    accounts,
    api_keys,
    checkpoints,
    health,
    listings,
    metering,
    orders,
    policies,
    prices,
    settlement_runs,
    statements,
    tokens,
    transfers,
    verify,
)
from ledger.api.deps import LedgerRoute, close_runtimes, get_runtime

__all__ = ["close_runtimes", "get_runtime", "router"]

router = APIRouter(prefix="/api/v1", route_class=LedgerRoute, tags=["ledger"], responses=CLIENT_API_RESPONSES)
for _area in (
    orders,
    metering,
    prices,
    policies,
    settlement_runs,
    transfers,
    accounts,
    tokens,
    listings,
    statements,
    checkpoints,
    verify,
    api_keys,
    health,
):
    router.include_router(_area.router)
