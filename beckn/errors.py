"""Beckn error codes and the exception every pipeline step raises to NACK a message.

BPP codes 30000–50004 are those of BECKN-005 (Error Codes, Draft-01). BECKN-005 lists BPP codes
only; for the gateway (10xxx) and BAP (20xxx) we follow the same numbering scheme used across Beckn
networks: x0000 generic invalid request, x0001 invalid signature, x0002 stale request.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    BAP = "BAP"
    BPP = "BPP"
    BG = "BG"


@dataclass(frozen=True)
class Code:
    code: str
    message: str


# Per-role generic codes: invalid request / invalid signature / stale request / invalid context.
_GENERIC: dict[Role, dict[str, Code]] = {
    Role.BG: {
        "invalid_request": Code("10000", "Bad or invalid request"),
        "invalid_signature": Code("10001", "Invalid signature"),
        "invalid_city": Code("10002", "Invalid city code"),
        "stale": Code("10003", "Stale request"),
        "not_found": Code("10004", "Receiver not found"),
    },
    Role.BAP: {
        "invalid_request": Code("20000", "Invalid request"),
        "invalid_signature": Code("20001", "Invalid signature"),
        "stale": Code("20002", "Stale request"),
        "provider_not_found": Code("20003", "Provider not found"),
        "item_not_found": Code("20005", "Item not found"),
        "invalid_response": Code("20006", "Invalid response"),
        "invalid_order_state": Code("20007", "Invalid order state"),
        "not_found": Code("20008", "Transaction not found"),
    },
    Role.BPP: {
        "invalid_request": Code("30000", "Invalid request error"),
        "provider_not_found": Code("30001", "Provider not found"),
        "location_not_found": Code("30002", "Provider location not found"),
        "item_not_found": Code("30004", "Item not found"),
        "fulfillment_unavailable": Code("30008", "Fulfillment unavailable"),
        "order_not_found": Code("30010", "Order not found"),
        "invalid_cancellation_reason": Code("30011", "Invalid cancellation reason"),
        "invalid_update_target": Code("30012", "Invalid update_target"),
        "update_inconsistency": Code("30013", "Update inconsistency"),
        "invalid_signature": Code("30016", "Invalid signature"),
        "stale": Code("30022", "Stale request"),
        "internal_error": Code("31001", "Internal error"),  # processing failed for good (beckn.processing)
        "business": Code("40000", "Business error"),
        "action_not_applicable": Code("40001", "Action not applicable"),
        "quantity_unavailable": Code("40002", "Item quantity unavailable"),
        "quote_unavailable": Code("40003", "Quote unavailable"),
        "payment_not_supported": Code("40004", "Payment not supported"),
        "policy": Code("50000", "Policy error"),
        "cancellation_not_possible": Code("50001", "Cancellation not possible"),
        "update_not_possible": Code("50002", "Updation not possible"),
    },
}


def code_for(role: Role, kind: str) -> Code:
    table = _GENERIC[role]
    return table.get(kind) or table["invalid_request"]


class BecknError(Exception):
    """Raised by any pipeline step or handler: becomes a NACK with a Beckn error code.

    `kind` is role-independent (e.g. "invalid_signature", "item_not_found"); the pipeline maps it to
    the receiving role's numeric code. `http_status` follows the spec: 400 for malformed input,
    401 for signature failures, 200 + NACK for business refusals of a well-formed request.
    """

    def __init__(
        self,
        kind: str,
        message: str,
        http_status: int = 400,
        paths: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.http_status = http_status
        self.paths = paths
        self.retry_after_s = retry_after_s  # → a Retry-After header (429 throttled, 503 unavailable)
