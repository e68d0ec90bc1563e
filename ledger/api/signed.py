"""What the routes that take signed Beckn messages share: the request field of one signed message and
the key directory its signature is checked against (the registry; tests override `key_directory`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from pydantic import Field

from ledger.agreements import MAX_AUTHORIZATION_CHARS, MAX_MESSAGE_BYTES, KeyDirectory, SignedMessage
from ledger.api.deps import Body
from ledger.keydir import RegistryKeys


class SignedMessageIn(Body):
    """One Beckn message as it travelled: its exact bytes (base64) and its BECKN-006 Authorization header."""

    body_base64: Annotated[str, Field(min_length=4, max_length=(MAX_MESSAGE_BYTES + 2) // 3 * 4)]
    authorization: Annotated[str, Field(min_length=1, max_length=MAX_AUTHORIZATION_CHARS)]

    def signed(self, field: str) -> SignedMessage:
        return SignedMessage.from_base64(self.body_base64, self.authorization, field=field)


def key_directory() -> KeyDirectory:
    """The registry, through the worker's cached registry client."""
    return RegistryKeys()


Keys = Annotated[KeyDirectory, Depends(key_directory)]
