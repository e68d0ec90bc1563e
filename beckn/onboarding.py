"""Self-onboarding at start-up (FLEXMARKET_AUTO_SUBSCRIBE): a participant POSTs its Subscription to the
registry's /subscribe, signed with the key it registers (proof of possession). With the operator token
(FLEXMARKET_REGISTRY_OPERATOR_TOKEN) it is SUBSCRIBED at once; without, it waits for approval."""

from __future__ import annotations

import time
import uuid

import httpx
import structlog

from beckn import envelope, signing
from beckn.identity import Identity

log = structlog.get_logger(__name__)


def subscribe(
    identity: Identity, registry_url: str, cities: list[str], operator_token: str | None = None, wait_s: float = 60.0
) -> str:
    """Returns the registry's status; retries while the registry is not up yet."""
    statuses = []
    for city in cities:
        body = envelope.dumps(
            {
                "subscriber_id": identity.subscriber_id,
                "url": identity.url,
                "type": identity.role.value,
                "domain": identity.domain,
                "location": {"city": {"code": city}, "country": {"code": identity.country_code}},
                "key_id": identity.unique_key_id,
                "signing_public_key": identity.keys.signing_public_key_b64,
                "encr_public_key": identity.keys.encryption_public_key_b64,
                "nonce": str(uuid.uuid4()),
            }
        )
        deadline = time.monotonic() + wait_s
        while True:
            headers = {
                "Content-Type": "application/json",
                "Authorization": signing.authorization_header(
                    body, identity.keys.signing_private_key, identity.subscriber_id, identity.unique_key_id
                ),
            }
            if operator_token:
                headers["X-Operator-Token"] = operator_token
            try:
                r = httpx.post(f"{registry_url.rstrip('/')}/subscribe", content=body, headers=headers, timeout=5)
                if r.status_code == 200:
                    statuses.append(r.json()["status"])
                    break
                raise RuntimeError(f"registry refused {identity.subscriber_id}: {r.status_code} {r.text}")
            except httpx.HTTPError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"registry at {registry_url} unreachable: {exc}") from exc
                time.sleep(1.0)
    status = "SUBSCRIBED" if all(s == "SUBSCRIBED" for s in statuses) else "UNDER_SUBSCRIPTION"
    log.info("subscribed to the registry", subscriber_id=identity.subscriber_id, status=status)
    return status
