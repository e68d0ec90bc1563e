"""Routes: client transfers through the group committer, and a transfer with its inclusion proof
(ledger/transfers_db.py, ledger/checkpoints.py)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, Field

from ledger import accounts as acct
from ledger import transfers_db
from ledger.agreements import agreement_in_memo
from ledger.api.deps import Amount, Body, LedgerRoute, Runtime, Text, Who, created, read, tx
from ledger.api_keys import Principal
from ledger.checkpoints import inclusion_proof
from ledger.db import us
from ledger.errors import LedgerError, forbidden
from ledger.transfers import TransferSpec
from schemas import limits

router = APIRouter(route_class=LedgerRoute)


class TransferIn(Body):
    id: Text
    kind: Literal["single", "pending", "post", "void"] = "single"
    ledger: Text | None = None
    debit_account: Text | None = None
    credit_account: Text | None = None
    amount: Amount | None = None
    pending_id: Text | None = None
    expires_at: AwareDatetime | None = None  # pending only: when the reservation times out
    memo: limits.FreeText = ""

    def spec(self) -> TransferSpec:
        if self.kind in ("single", "pending") and self.ledger not in (None, acct.GBP):
            raise LedgerError("ledger_not_allowed", "generic transfers move GBP; tokens move through /api/v1/cft/…")
        if self.pending_id and self.pending_id.startswith(transfers_db.RESERVED_PREFIXES):
            raise LedgerError("id_reserved", "the ledger's own pending transfers are resolved by settlement")
        if agreement_in_memo(self.memo) is not None:  # only an order's own entries may name its agreement
            raise LedgerError("memo_reserved", "memo: the [agreement …] tag is written by the ledger only", status=400)
        return TransferSpec(
            self.id,
            self.kind,
            self.ledger,
            self.debit_account,
            self.credit_account,
            self.amount,
            self.pending_id,
            None if self.expires_at is None else us(self.expires_at),
            self.memo,
        )


class BatchIn(Body):
    transfers: Annotated[list[TransferIn], Field(min_length=1, max_length=1000)]


@router.post("/transfers")
def post_transfer(body: TransferIn, rt: Runtime, who: Who) -> JSONResponse:
    spec = body.spec()
    transfers_db.check_client_transfer_ids([spec])
    res = rt.committer.submit([spec]).raise_for_error()
    return created(transfers_db.transfer_result_json(res))


@router.post("/transfers/batch")
def post_transfer_batch(body: BatchIn, rt: Runtime, who: Who) -> JSONResponse:
    specs = [t.spec() for t in body.transfers]
    transfers_db.check_client_transfer_ids(specs)
    res = rt.committer.submit(specs).raise_for_error()
    return created(transfers_db.transfer_result_json(res))


def _require_transfer_reader(who: Principal, t: dict[str, Any]) -> None:
    if not (
        acct.can_read(t["debit_account"], who.role, who.participant_id)
        or acct.can_read(t["credit_account"], who.role, who.participant_id)
    ):
        raise forbidden("this transfer touches none of your accounts")


@router.get("/transfers/{transfer_id}")
def get_transfer(transfer_id: str, rt: Runtime, who: Who) -> dict[str, Any]:
    t = read(rt, lambda c: transfers_db.get_transfer(c, transfer_id))
    _require_transfer_reader(who, t)
    return t


@router.get("/transfers/{transfer_id}/proof")
def get_transfer_proof(transfer_id: str, rt: Runtime, who: Who) -> dict[str, Any]:
    t = read(rt, lambda c: transfers_db.get_transfer(c, transfer_id))
    _require_transfer_reader(who, t)
    return tx(rt, lambda c: inclusion_proof(c, transfer_id, rt.keypair))
