"""The network registry: participants and their Ed25519 public keys (/subscribe, /lookup).

Not one of the design's fixed folders (../shared/DESIGN.md puts it beside the gateway); it gets its own
domain package so a newcomer finds it in one hop."""
