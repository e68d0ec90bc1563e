"""How the BPP reads the ledger's HTTP API: with each hosted provider's own ledger key (role `provider`, which
reads exactly that provider's orders, runs and meters), from the JSON file `FLEXMARKET_LEDGER_PROVIDER_KEYS_FILE`
(`{"<provider id>": "flk_…"}`; `flexmarket up` writes it, readable by its owner only).

Used by bpp/outcomes.py (settlement outcomes) and bpp/metered_history.py (a site's metered history).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx


class LedgerReadError(RuntimeError):
    """The ledger could not be read (unreachable, or refused the key)."""


def load_provider_keys(path: Path | None) -> dict[str, str]:
    """Provider id → ledger API key, from the keys file (none when unset)."""
    if path is None:
        return {}
    try:
        keys = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LedgerReadError(f"FLEXMARKET_LEDGER_PROVIDER_KEYS_FILE {path}: {exc}") from exc
    if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
        raise LedgerReadError(f"FLEXMARKET_LEDGER_PROVIDER_KEYS_FILE {path}: must map provider ids to keys")
    return keys


class LedgerReader:
    """GETs under the ledger's /api/v1 with one key: the JSON body, None for a 404, LedgerReadError otherwise."""

    def __init__(self, client: httpx.Client, base_url: str) -> None:
        self.client = client
        self.api = f"{base_url.rstrip('/')}/api/v1"

    def get(self, path: str, key: str, params: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        try:
            r = self.client.get(f"{self.api}{path}", params=params, headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:
            raise LedgerReadError(f"ledger unreachable: {exc}") from exc
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise LedgerReadError(f"ledger answered {r.status_code} for {path}: {r.text[:200]}")
        try:
            body: dict[str, Any] = r.json()
        except ValueError as exc:
            raise LedgerReadError(f"ledger answered {path} with something that is not JSON") from exc
        return body
