"""Beckn protocol mechanics shared by every participant: signing (BECKN-006), envelopes, the
request pipeline, the registry client, and durable delivery (outbox/inbox)."""
