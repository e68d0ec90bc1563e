"""The ledger's own HTTP service: `create_app()` → FastAPI app serving ledger/api/ (`ledger.api.router`).

Run it with `uvicorn --factory ledger.main:create_app` (DATABASE_URL set; keys under
$FLEXMARKET_HOME/keys/ledger.json, generated on first start of a ledger without checkpoints; with checkpoints
and no key file the service refuses to start, naming the file; `flexmarket ledger rotate-key` rotates it).

Example payloads (amounts in the units their names carry):

  POST /api/v1/orders   (BAP key of the BAP that signed the confirm, or admin)
    {"confirm":    {"body_base64": "<the confirm's exact bytes>",    "authorization": "Signature keyId=…"},
     "on_confirm": {"body_base64": "<the on_confirm's exact bytes>", "authorization": "Signature keyId=…"},
     "supplier_id": "supplier-a", "policy_version": "p415-v1"}
    (order id, provider, BAP, meter, window, kW, price, settlement method, transaction and acceptance time
     are the signed on_confirm's; optional beside them: "availability_price_gbp_per_mw_h", "resource_type")
    → 201 {"status": "created", "declared_periods": ["2026-12-01/35", …], "rejected_periods": [],
           "reserve_pence": 30000, "agreement_sha256": "…"}
           (the same body again → 200 "exists"; other messages or terms for the order → 409;
            a bad signature, unknown key, signer or terms mismatch → 422 naming the message and field)
  POST /api/v1/orders/ord-1/amend   {"on_update": {"body_base64": "…", "authorization": "…"}}
  GET  /api/v1/orders/ord-1/agreement → {"agreement_sha256", "confirm": {"body_base64", "authorization",
        "signer", "key_id", "sha256"}, "on_confirm": {…}, "amendments": [{"reference", "on_update": {…}}]}

  POST /api/v1/metering   (provider key; stored self_reported; negative kWh = net export)
    {"meter_id": "MTR-001", "readings": [{"period_start": "2026-12-01T17:00:00Z", "energy_kwh": "812.5"}]}
  POST /api/v1/metering/signed   (meter_operator key; stored meter_operator, preferred by settlement)
    {"payload": {"format": "flexmarket.meter-readings.v1", "meter_id": "MTR-001", "correction": false,
                 "readings": [{"period_start": "2026-12-01T17:00:00Z", "energy_kwh": "790"}]},
     "key_id": "mdk-…", "signature": "<base64 Ed25519 over the RFC 8785 bytes of payload>"}

  POST /api/v1/transfers   (finance/admin key; the caller chooses the id)
    {"id": "adj-2026-001", "ledger": "GBP", "debit_account": "bap:grid-orch:cash",
     "credit_account": "provider:dc-north:revenue", "amount": 1250, "memo": "goodwill"}
    pending: add "kind": "pending", "expires_at": "…"; then {"id": "…", "kind": "post", "pending_id": "…",
    "amount": 900} or {"id": "…", "kind": "void", "pending_id": "…"}.
  POST /api/v1/transfers/batch  {"transfers": [ … ]}  — linked: all or nothing.

  POST /api/v1/settlement/run  (finance)  {}  or  {"order_id": "ord-1"}
  GET  /api/v1/statements/provider:dc-north:revenue?from=2026-12-01T00:00:00Z&to=2026-12-02T00:00:00Z&format=csv

  POST /api/v1/cft/series {"series_id": "dcn-2026w49", "provider_id": "dc-north",
        "valid_from": "…", "valid_to": "…", "declared_capacity_kw": "2000"}
  POST /api/v1/cft/mint {"id": "m1", "series_id": "dcn-2026w49", "tokens": 10}
  POST /api/v1/cft/sell {"id": "s1", "series_id": "dcn-2026w49", "buyer_id": "grid-orch", "tokens": 4,
        "price_gbp": "1200.00", "confirm": {"body_base64": "…", "authorization": "…"}}
        (the buyer's signed confirm: provider.id dc-north, one item dcn-2026w49 with quantity.selected.count 4,
         quote.price {"currency": "GBP", "value": "1200.00"})
  POST /api/v1/cft/redeem {"id": "r1", "series_id": "dcn-2026w49", "holder_id": "grid-orch", "tokens": 2,
        "period_start": "…", "period_end": "…", "meter_id": "MTR-001", "supplier_id": "supplier-a"}
  POST /api/v1/cft/listings  (grid-orch's key)  {"id": "l1", "series_id": "dcn-2026w49", "tokens": 2,
        "price_gbp_per_token": "320.00"}
  POST /api/v1/cft/listings/l1/buy  (another BAP's key)  {"id": "b1", "tokens": 1, "confirm": {…}}
        (its signed confirm: provider.id grid-orch, one item dcn-2026w49 with count 1, quote.price "320.00")
  POST /api/v1/cft/listings/l1/cancel  (grid-orch's key)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from beckn.webapp import add_body_guard, add_ops_routes, add_unavailable_handlers
from kernel.logging import configure_logging
from ledger.api import close_runtimes, get_runtime, router


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        get_runtime()  # start-up refuses here if the signing key is missing where checkpoints exist
        yield
        close_runtimes()

    configure_logging("ledger")
    app = FastAPI(title="flexmarket ledger", version="1", lifespan=lifespan)
    add_ops_routes(app, "ledger")
    add_unavailable_handlers(app)
    app.include_router(router)
    add_body_guard(app, "/api/")  # 413 over 1 MiB, deep JSON and NUL refused before parsing (schemas/limits.py)
    return app
