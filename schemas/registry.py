"""Registry API bodies (../shared/reference/beckn/core-v1.1.1/api/registry/build/registry.yaml)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import StringConstraints, model_validator

from schemas.core import BecknModel, City, Country, Location
from schemas.limits import PRINTABLE_PATTERN, CountryCode, Identifier, Name, Uri

KeyText = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=PRINTABLE_PATTERN)]  # its column
SubscriberType = Literal["BAP", "BPP", "BG"]
Status = Literal["INITIATED", "UNDER_SUBSCRIPTION", "SUBSCRIBED", "EXPIRED", "UNSUBSCRIBED", "INVALID_SSL"]


class Subscription(BecknModel):
    """A Subscription as /subscribe takes it and /lookup returns it.

    `key_id` is the spec's name for the key's id; `unique_key_id` (the BECKN-006 keyId part) is
    accepted as a synonym and always returned as well.
    """

    subscriber_id: Name | None = None
    url: Uri | None = None
    type: SubscriberType | None = None
    domain: Name | None = None
    location: Location | None = None
    key_id: Name | None = None
    unique_key_id: Name | None = None
    signing_public_key: KeyText | None = None
    encr_public_key: KeyText | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    status: Status | None = None
    nonce: Name | None = None
    created: datetime | None = None
    updated: datetime | None = None

    @model_validator(mode="after")
    def _key_id_synonym(self) -> Subscription:
        if self.key_id is None and self.unique_key_id is not None:
            self.key_id = self.unique_key_id
        elif self.unique_key_id is None and self.key_id is not None:
            self.unique_key_id = self.key_id
        return self

    @property
    def city_code(self) -> str | None:
        return self.location.city.code if self.location and self.location.city else None

    @property
    def country_code(self) -> str | None:
        return self.location.country.code if self.location and self.location.country else None


def location(city_code: str | None, country_code: str | None) -> Location:
    return Location(
        city=City(code=city_code) if city_code else None,
        country=Country(code=country_code) if country_code else None,
    )


# Filters accepted by /lookup beyond the Subscription shape (flat conveniences).
class LookupRequest(Subscription):
    city: Identifier | None = None
    country: CountryCode | None = None
