"""The grid orchestrator's Beckn application platform (BAP): aggregators use its client API to find,
order and track load reduction; it signs every Beckn message and stores every callback."""
