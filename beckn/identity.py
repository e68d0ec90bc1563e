"""A participant's identity on the network: subscriber id, role, callback URL and keys.

Stored as $FLEXMARKET_HOME/identities/<subscriber_id>.json so that every process of the participant
(its web process and any Celery worker on any host sharing that folder) signs with the same key.
"""

from __future__ import annotations

import json
import os
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

from beckn.errors import Role
from beckn.keys import KeyPair
from kernel.config import get_settings


@dataclass(frozen=True)
class Identity:
    subscriber_id: str
    role: Role
    url: str  # callback base URL: "<url>/<action>"
    keys: KeyPair
    _: KW_ONLY
    domain: str = "deg:flexibility"
    city_code: str = "GB-R13"
    country_code: str = "GBR"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def unique_key_id(self) -> str:
        return self.keys.unique_key_id

    def to_json(self) -> dict:
        return {
            "subscriber_id": self.subscriber_id,
            "role": self.role.value,
            "url": self.url,
            "domain": self.domain,
            "city_code": self.city_code,
            "country_code": self.country_code,
            "extra": self.extra,
            "keys": self.keys.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict) -> Identity:
        return cls(
            subscriber_id=data["subscriber_id"],
            role=Role(data["role"]),
            url=data["url"],
            keys=KeyPair.from_json(data["keys"]),
            domain=data.get("domain", "deg:flexibility"),
            city_code=data.get("city_code", "GB-R13"),
            country_code=data.get("country_code", "GBR"),
            extra=data.get("extra", {}),
        )


def identities_dir(home: Path) -> Path:
    return home / "identities"


def _path(home: Path, subscriber_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in subscriber_id)
    return identities_dir(home) / f"{safe}.json"


def save_identity(home: Path, identity: Identity) -> Path:
    path = _path(home, identity.subscriber_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(identity.to_json(), fh, indent=2)
    os.replace(tmp, path)
    return path


_cache: dict[tuple[Path, str], Identity] = {}


def load_identity(home: Path, subscriber_id: str) -> Identity:
    ident = _cache.get((home, subscriber_id))  # hot path: no filesystem call when the path is known
    if ident is not None:
        return ident
    key = (home.resolve(), subscriber_id)
    ident = _cache.get(key)
    if ident is None:
        path = _path(home, subscriber_id)
        if not path.exists():
            raise LookupError(f"no identity for {subscriber_id!r} under {identities_dir(home)}")
        ident = Identity.from_json(json.loads(path.read_text()))
        _cache[key] = ident
    _cache[(home, subscriber_id)] = ident
    return ident


def load_or_create_identity(
    home: Path,
    subscriber_id: str,
    role: Role,
    url: str,
    *,
    city_code: str = "GB-R13",
    country_code: str = "GBR",
    domain: str = "deg:flexibility",
) -> Identity:
    """Existing identity (keys kept, URL/location refreshed) or a new one with fresh keys."""
    path = _path(home, subscriber_id)
    if path.exists():
        old = Identity.from_json(json.loads(path.read_text()))
        keys, extra = old.keys, old.extra
    else:
        keys, extra = KeyPair.generate(), {}
    ident = Identity(
        subscriber_id, role, url, keys, domain=domain, city_code=city_code, country_code=country_code, extra=extra
    )
    save_identity(home, ident)
    _cache[(home.resolve(), subscriber_id)] = _cache[(home, subscriber_id)] = ident
    return ident


def own_identity(role: Role) -> Identity:
    """This process's identity as its settings name it (FLEXMARKET_SUBSCRIBER_ID, _SUBSCRIBER_URL, _CITY,
    _COUNTRY), its keys under FLEXMARKET_HOME made on first start."""
    settings = get_settings()
    if not settings.subscriber_id or not settings.subscriber_url:
        raise RuntimeError("FLEXMARKET_SUBSCRIBER_ID and FLEXMARKET_SUBSCRIBER_URL must name this participant")
    return load_or_create_identity(
        settings.home,
        settings.subscriber_id,
        role,
        settings.subscriber_url,
        city_code=settings.city_code,
        country_code=settings.country_code,
    )
