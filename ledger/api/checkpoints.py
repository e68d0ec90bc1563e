"""Routes: the ledger's public key, signed checkpoints and the chain head (ledger/checkpoints.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ledger import checkpoints
from ledger.api.deps import LedgerRoute, Runtime, Who, read, tx
from ledger.errors import LedgerError

router = APIRouter(route_class=LedgerRoute)


@router.get("/checkpoints/public-key")
def get_public_key(rt: Runtime) -> dict[str, str]:
    return {
        "algorithm": "Ed25519",
        "key_id": rt.keypair.unique_key_id,
        "public_key_b64": rt.keypair.signing_public_key_b64,
    }


@router.get("/checkpoints/latest")
def get_latest_checkpoint(rt: Runtime) -> dict[str, Any]:
    cp = read(rt, lambda c: checkpoints.get_checkpoint(c))
    if cp is None:
        raise LedgerError("not_found", "no checkpoint yet", status=404)
    return cp


@router.get("/checkpoints/{height}")
def get_checkpoint(height: int, rt: Runtime) -> dict[str, Any]:
    cp = read(rt, lambda c: checkpoints.get_checkpoint(c, height))
    if cp is None:
        raise LedgerError("not_found", f"no checkpoint at height {height}", status=404)
    return cp


@router.post("/checkpoints")
def post_checkpoint(rt: Runtime, who: Who) -> JSONResponse:
    cp = tx(rt, lambda c: checkpoints.create_checkpoint(c, rt.keypair, publish_dir=checkpoints.default_publish_dir()))
    if cp is None:
        raise LedgerError("empty_ledger", "the chain is empty; nothing to sign", status=409)
    return JSONResponse(cp, status_code=201)


@router.get("/chain/head")
def get_chain_head(rt: Runtime) -> dict[str, Any]:
    return read(rt, checkpoints.chain_head)
