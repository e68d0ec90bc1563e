"""The Beckn gateway (BG): fans `search` out to every subscribed BPP that serves the domain and
location, and relays each `on_search` back to the BAP named in the context."""
