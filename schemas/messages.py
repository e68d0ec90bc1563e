"""The `message` object of each Beckn action (transaction.yaml paths)."""

from __future__ import annotations

from schemas.core import BecknModel, Catalog, Descriptor, Intent, Order
from schemas.limits import Identifier


class SearchMessage(BecknModel):
    intent: Intent | None = None


class OrderMessage(BecknModel):
    order: Order


class StatusMessage(BecknModel):
    order_id: Identifier


class CancelMessage(BecknModel):
    order_id: Identifier
    cancellation_reason_id: str | None = None
    descriptor: Descriptor | None = None


class UpdateMessage(BecknModel):
    update_target: str
    order: Order


class OnSearchMessage(BecknModel):
    catalog: Catalog


MESSAGE_MODELS: dict[str, type[BecknModel]] = {
    "search": SearchMessage,
    "select": OrderMessage,
    "init": OrderMessage,
    "confirm": OrderMessage,
    "status": StatusMessage,
    "cancel": CancelMessage,
    "update": UpdateMessage,
    "on_search": OnSearchMessage,
    "on_select": OrderMessage,
    "on_init": OrderMessage,
    "on_confirm": OrderMessage,
    "on_status": OrderMessage,
    "on_cancel": OrderMessage,
    "on_update": OrderMessage,
}


def message_model(action: str) -> type[BecknModel]:
    return MESSAGE_MODELS[action]
