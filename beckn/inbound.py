"""What a receiving participant's handlers get: an inbound Beckn message that passed every step of the
pipeline (beckn/steps.py), and the verdict they give on it (beckn/pipeline.py dispatches)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from beckn.identity import Identity
from schemas.core import Context, Error


@dataclass(frozen=True)
class Verified:
    """Who signed: always the original sender; plus the gateway when the message was relayed."""

    sender_id: str
    sender_key_id: str
    sender_url: str
    gateway_id: str | None = None
    gateway_key_id: str | None = None


@dataclass(kw_only=True)
class Inbound:
    action: str
    raw: bytes
    payload: dict[str, Any]
    context: Context
    message: BaseModel | None
    error: Error | None
    receiver: Identity
    verified: Verified
    authorization: str
    gateway_authorization: str | None

    @property
    def ctx(self) -> dict[str, Any]:
        return self.payload["context"]


@dataclass(frozen=True)
class Accepted:
    """A handler's verdict: whether a Celery task must still process the message."""

    process_async: bool


Handler = Callable[[Session, Inbound, int], Accepted]
