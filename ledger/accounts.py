"""The chart of accounts (../shared/DESIGN.md "Ledger chart of accounts"), as pure naming rules.

| ledger        | account                          | flags / limit                        | owner            |
|---------------|----------------------------------|--------------------------------------|------------------|
| GBP (pence)   | bap:<id>:cash                    | none (negative = the BAP owes)       | bap <id>         |
|               | provider:<id>:revenue            | debits must not exceed credits       | provider <id>    |
|               | provider:<id>:penalties          | credits must not exceed debits       | provider <id>    |
|               | supplier:<id>:compensation       | debits must not exceed credits       | supplier <id>    |
|               | pot:supplier-compensation        | none (a debit balance is what the    | (finance)        |
|               |                                  | mutualised pot recovers from         |                  |
|               |                                  | suppliers pro rata to final demand)  |                  |
|               | escrow:<order>                   | debits must not exceed credits       | (finance)        |
| CFT:<series>  | issuance:<provider>:<series>     | net debits ≤ the series' max tokens  | provider         |
| (tokens,      | holding:<participant>:<series>   | debits must not exceed credits       | participant      |
|  1 = 1 MWh)   | redeemed:<provider>:<series>     | debits must not exceed credits       | provider         |
|               | expired:<provider>:<series>      | debits must not exceed credits       | provider         |
|               | listing:<listing>:<series>       | debits must not exceed credits       | (finance; the    |
|               |                                  | (escrow of a secondary-market        |  listing's       |
|               |                                  | listing: its tokens still for sale)  |  seller acts)    |

Deviation from DESIGN.md, with reason: CFT accounts carry the series as a suffix and every series is
its own ledger `CFT:<series>`. A token is a right against one provider within one validity window,
so tokens of different series are not fungible; making each series a ledger lets the generic
"same ledger" rule refuse a transfer that would mix them. Balances are read as credits − debits
(positive: tokens held, revenue owed to the provider; an issuance account is negative by the number
of tokens minted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ledger.transfers import FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS, FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS

GBP = "GBP"
POT = "pot:supplier-compensation"
PARTICIPANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}\Z")


class AccountNameError(ValueError):
    pass


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not PARTICIPANT_ID.match(value):
        raise AccountNameError(
            f"{what} {value!r} must be 1-128 characters from [A-Za-z0-9._@-], starting with a letter or digit"
        )
    return value


def cft_ledger(series_id: str) -> str:
    return f"CFT:{check_id(series_id, 'series_id')}"


def bap_cash(bap_id: str) -> str:
    return f"bap:{check_id(bap_id, 'bap_id')}:cash"


def provider_revenue(provider_id: str) -> str:
    return f"provider:{check_id(provider_id, 'provider_id')}:revenue"


def provider_penalties(provider_id: str) -> str:
    return f"provider:{check_id(provider_id, 'provider_id')}:penalties"


def supplier_compensation(supplier_id: str) -> str:
    return f"supplier:{check_id(supplier_id, 'supplier_id')}:compensation"


def escrow(order_id: str) -> str:
    return f"escrow:{check_id(order_id, 'order_id')}"


def issuance(provider_id: str, series_id: str) -> str:
    return f"issuance:{check_id(provider_id, 'provider_id')}:{check_id(series_id, 'series_id')}"


def holding(participant_id: str, series_id: str) -> str:
    return f"holding:{check_id(participant_id, 'participant_id')}:{check_id(series_id, 'series_id')}"


def redeemed(provider_id: str, series_id: str) -> str:
    return f"redeemed:{check_id(provider_id, 'provider_id')}:{check_id(series_id, 'series_id')}"


def expired(provider_id: str, series_id: str) -> str:
    return f"expired:{check_id(provider_id, 'provider_id')}:{check_id(series_id, 'series_id')}"


def listing(listing_id: str, series_id: str) -> str:
    """The escrow of one secondary-market listing (ledger/listings.py): the tokens still for sale."""
    return f"listing:{check_id(listing_id, 'listing_id')}:{check_id(series_id, 'series_id')}"


@dataclass(frozen=True)
class AccountSpec:
    name: str
    ledger: str
    flags: int
    owner_kind: str | None  # bap | provider | supplier | participant | None (finance only)
    owner_id: str | None
    max_net_debit: int | None = None


def describe(name: str) -> AccountSpec:
    """Ledger, flags and owner of a chart account name; raises AccountNameError for anything else."""
    parts = name.split(":") if isinstance(name, str) else []
    try:
        if name == POT:
            return AccountSpec(name, GBP, 0, None, None)
        if len(parts) == 3 and parts[0] == "bap" and parts[2] == "cash":
            return AccountSpec(name, GBP, 0, "bap", check_id(parts[1], "bap_id"))
        if len(parts) == 3 and parts[0] == "provider" and parts[2] == "revenue":
            return AccountSpec(
                name, GBP, FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS, "provider", check_id(parts[1], "provider_id")
            )
        if len(parts) == 3 and parts[0] == "provider" and parts[2] == "penalties":
            return AccountSpec(
                name, GBP, FLAG_CREDITS_MUST_NOT_EXCEED_DEBITS, "provider", check_id(parts[1], "provider_id")
            )
        if len(parts) == 3 and parts[0] == "supplier" and parts[2] == "compensation":
            return AccountSpec(
                name, GBP, FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS, "supplier", check_id(parts[1], "supplier_id")
            )
        if len(parts) == 2 and parts[0] == "escrow":
            check_id(parts[1], "order_id")
            return AccountSpec(name, GBP, FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS, None, None)
        if len(parts) == 3 and parts[0] in ("issuance", "holding", "redeemed", "expired"):
            owner, series = check_id(parts[1], "participant_id"), check_id(parts[2], "series_id")
            flags = 0 if parts[0] == "issuance" else FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS
            kind = "participant" if parts[0] == "holding" else "provider"
            return AccountSpec(name, f"CFT:{series}", flags, kind, owner)
        if len(parts) == 3 and parts[0] == "listing":
            check_id(parts[1], "listing_id")
            series = check_id(parts[2], "series_id")
            return AccountSpec(name, f"CFT:{series}", FLAG_DEBITS_MUST_NOT_EXCEED_CREDITS, None, None)
    except AccountNameError as exc:
        raise AccountNameError(f"account {name!r}: {exc}") from exc
    raise AccountNameError(
        f"account {name!r} is not in the chart of accounts (bap:<id>:cash, provider:<id>:revenue, "
        "provider:<id>:penalties, supplier:<id>:compensation, pot:supplier-compensation, escrow:<order>, "
        "issuance|holding|redeemed|expired:<participant>:<series>, listing:<listing>:<series>)"
    )


def can_read(name: str, role: str, participant_id: str | None) -> bool:
    """Access rule for statements and balances: finance/admin read everything; a provider, BAP or
    supplier key reads only accounts it owns (CFT holdings by participant id)."""
    if role in ("admin", "finance"):
        return True
    try:
        spec = describe(name)
    except AccountNameError:
        return False
    if spec.owner_id is None or participant_id is None:
        return False
    if spec.owner_kind == "participant":
        return spec.owner_id == participant_id
    return spec.owner_kind == role and spec.owner_id == participant_id
