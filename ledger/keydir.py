"""The key directory the ledger checks signed Beckn messages against (ledger/agreements.py): the
network's registry, through the same cached client every receiver uses (beckn/registry_client.py)."""

from __future__ import annotations

from beckn import http
from beckn.registry_client import RegistryError, worker_registry
from ledger.agreements import RegisteredKey
from ledger.errors import LedgerError


class RegistryKeys:
    """Signers' keys from the registry (FLEXMARKET_REGISTRY_URL); an unreachable registry is a 503."""

    def key(self, subscriber_id: str, unique_key_id: str) -> RegisteredKey | None:
        registry = worker_registry()
        try:
            record = http.run_with_client(lambda client: registry.key_for(client, subscriber_id, unique_key_id))
        except (RegistryError, TimeoutError, OSError) as exc:
            raise LedgerError("registry_unavailable", f"the registry could not be asked: {exc}", status=503) from exc
        if record is None:
            return None
        return RegisteredKey(
            subscriber_id=record.subscriber_id,
            unique_key_id=record.unique_key_id,
            participant_type=record.type,
            public_key=record.public_key,
            valid_from=record.valid_from,
            valid_until=record.valid_until,
        )
