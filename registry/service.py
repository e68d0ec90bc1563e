"""Registry use cases: onboarding (operator add, /subscribe + approval, key rotation) and lookup."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from beckn import signing
from beckn.keys import KeyError_, public_key_from_b64
from kernel import clock
from kernel.config import get_settings
from registry.models import Coverage, Subscriber, SubscriberKey
from schemas.registry import LookupRequest, Subscription

DEFAULT_KEY_VALIDITY = timedelta(days=365)


class RegistryRequestError(ValueError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class NewSubscriber:
    subscriber_id: str
    type: str
    url: str
    domain: str
    cities: list[str]
    country_code: str
    unique_key_id: str
    signing_public_key: str
    encr_public_key: str | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None


def _check(new: NewSubscriber) -> None:
    if new.type not in ("BAP", "BPP", "BG"):
        raise RegistryRequestError(f"type must be BAP, BPP or BG, not {new.type!r}")
    if not new.url.startswith(("http://", "https://")):
        raise RegistryRequestError(f"url must be an http(s) URL, got {new.url!r}")
    if not new.cities:
        raise RegistryRequestError("at least one city code is required")
    try:
        public_key_from_b64(new.signing_public_key)
    except KeyError_ as exc:
        raise RegistryRequestError(f"signing_public_key: {exc}") from exc
    if new.valid_from and new.valid_until and new.valid_until <= new.valid_from:
        raise RegistryRequestError("valid_until must be after valid_from")


def upsert(session: Session, new: NewSubscriber, status: str) -> Subscriber:
    """Create or update a subscriber, its coverage and one key (rotation keeps the others)."""
    _check(new)
    now = clock.wall_now()
    sub = session.get(Subscriber, new.subscriber_id, options=[selectinload(Subscriber.coverage)])
    if sub is None:
        sub = Subscriber(subscriber_id=new.subscriber_id, type=new.type, url=new.url, status=status)
        session.add(sub)
    else:
        if sub.type != new.type:
            raise RegistryRequestError(f"{new.subscriber_id} is registered as {sub.type}, not {new.type}", 409)
        sub.url = new.url
        if status == "SUBSCRIBED":
            sub.status = status
    have = {(c.domain, c.city_code, c.country_code) for c in sub.coverage}
    for city in new.cities:
        if (new.domain, city, new.country_code) not in have:
            sub.coverage.append(Coverage(domain=new.domain, city_code=city, country_code=new.country_code))
    key = session.get(SubscriberKey, (new.subscriber_id, new.unique_key_id))
    if key is not None and key.signing_public_key != new.signing_public_key:
        raise RegistryRequestError(f"key id {new.unique_key_id} already holds a different public key", 409)
    if key is None:
        session.add(
            SubscriberKey(
                subscriber_id=new.subscriber_id,
                unique_key_id=new.unique_key_id,
                signing_public_key=new.signing_public_key,
                encr_public_key=new.encr_public_key,
                valid_from=new.valid_from or now,
                valid_until=new.valid_until or now + DEFAULT_KEY_VALIDITY,
                status=status,
            )
        )
    elif status == "SUBSCRIBED":
        key.status = status
    session.flush()
    return sub


def subscribe(session: Session, body: Subscription, raw_body: bytes, authorization: str | None, operator: bool) -> str:
    """POST /subscribe. The request must be signed with the key it registers (proof of possession),
    or with an already-subscribed key of the same subscriber (rotation: approved at once). Otherwise
    the subscription waits as UNDER_SUBSCRIPTION until an operator approves it; a request carrying the
    operator token is approved immediately."""
    missing = [
        f
        for f in ("subscriber_id", "url", "type", "domain", "key_id", "signing_public_key")
        if getattr(body, f) in (None, "")
    ]
    if missing:
        raise RegistryRequestError(f"missing fields: {', '.join(missing)}")
    if not body.city_code or not body.country_code:
        raise RegistryRequestError("location.city.code and location.country.code are required")
    try:
        params = signing.parse_authorization(authorization)
    except signing.SignatureError as exc:
        raise RegistryRequestError(f"subscribe must be signed (BECKN-006): {exc}", 401) from exc
    if params.subscriber_id != body.subscriber_id:
        raise RegistryRequestError("keyId subscriber does not match subscriber_id", 401)
    assert body.subscriber_id and body.key_id and body.signing_public_key  # checked above
    rotation = False
    if params.unique_key_id == body.key_id:
        verify_key = body.signing_public_key
    else:
        existing = session.get(SubscriberKey, (body.subscriber_id, params.unique_key_id))
        if existing is None or existing.status != "SUBSCRIBED":
            raise RegistryRequestError("signed with a key this registry does not know", 401)
        verify_key, rotation = existing.signing_public_key, True
    try:
        signing.verify(params, raw_body, public_key_from_b64(verify_key))
    except (signing.SignatureError, KeyError_) as exc:
        raise RegistryRequestError(f"signature refused: {exc}", 401) from exc
    status = "SUBSCRIBED" if (operator or rotation) else "UNDER_SUBSCRIPTION"
    upsert(
        session,
        NewSubscriber(
            subscriber_id=body.subscriber_id,
            type=str(body.type),
            url=str(body.url),
            domain=str(body.domain),
            cities=[body.city_code],
            country_code=body.country_code,
            unique_key_id=body.key_id,
            signing_public_key=body.signing_public_key,
            encr_public_key=body.encr_public_key,
            valid_from=body.valid_from,
            valid_until=body.valid_until,
        ),
        status,
    )
    return status


def approve(session: Session, subscriber_id: str) -> Subscriber:
    sub = session.get(Subscriber, subscriber_id, options=[selectinload(Subscriber.keys)])
    if sub is None:
        raise RegistryRequestError(f"unknown subscriber {subscriber_id!r}", 404)
    sub.status = "SUBSCRIBED"
    for key in sub.keys:
        if key.status == "UNDER_SUBSCRIPTION":
            key.status = "SUBSCRIBED"
    session.flush()
    return sub


def lookup(session: Session, req: LookupRequest) -> list[dict[str, Any]]:
    """Subscriptions (one per subscriber × coverage × key) matching every filter given.

    A key is listed as SUBSCRIBED only when both it and its subscriber are; `status` filters on that.
    """
    city = req.city or req.city_code
    country = req.country or req.country_code
    q = (
        select(Subscriber, Coverage, SubscriberKey)
        .join(Coverage, Coverage.subscriber_id == Subscriber.subscriber_id)
        .join(SubscriberKey, SubscriberKey.subscriber_id == Subscriber.subscriber_id)
    )
    if req.subscriber_id:
        q = q.where(Subscriber.subscriber_id == req.subscriber_id)
    if req.type:
        q = q.where(Subscriber.type == req.type)
    if req.domain:
        q = q.where(Coverage.domain == req.domain)
    if city:
        q = q.where(Coverage.city_code.in_([city, "*"]))
    if country:
        q = q.where(Coverage.country_code == country)
    if req.key_id:
        q = q.where(SubscriberKey.unique_key_id == req.key_id)
    rows = []
    for sub, cov, key in session.execute(q.order_by(Subscriber.subscriber_id, SubscriberKey.valid_from.desc())):
        status = (
            "SUBSCRIBED"
            if (sub.status == "SUBSCRIBED" and key.status == "SUBSCRIBED")
            else (sub.status if sub.status != "SUBSCRIBED" else key.status)
        )
        if req.status and status != req.status:
            continue
        rows.append(
            {
                "subscriber_id": sub.subscriber_id,
                "url": sub.url,
                "type": sub.type,
                "domain": cov.domain,
                "location": {"city": {"code": cov.city_code}, "country": {"code": cov.country_code}},
                "key_id": key.unique_key_id,
                "unique_key_id": key.unique_key_id,
                "signing_public_key": key.signing_public_key,
                "encr_public_key": key.encr_public_key,
                "valid_from": key.valid_from.isoformat(),
                "valid_until": key.valid_until.isoformat(),
                "status": status,
                "created": sub.created.isoformat() if sub.created else None,
                "updated": sub.updated.isoformat() if sub.updated else None,
            }
        )
    return rows


def list_subscribers(session: Session) -> list[Subscriber]:
    return list(
        session.scalars(
            select(Subscriber)
            .options(selectinload(Subscriber.coverage), selectinload(Subscriber.keys))
            .order_by(Subscriber.subscriber_id)
        )
    )


def operator_token() -> str:
    """The operator's approval token: FLEXMARKET_REGISTRY_OPERATOR_TOKEN, else one generated once
    under FLEXMARKET_HOME (mode 0600) and shared by the registry process and the CLI."""
    settings = get_settings()
    if settings.registry_operator_token:
        return settings.registry_operator_token
    path = settings.home / "registry-operator-token"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token
