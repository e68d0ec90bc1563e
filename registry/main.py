"""The registry's FastAPI app (`flexmarket serve registry`)."""

from __future__ import annotations

from fastapi import FastAPI

from beckn.webapp import add_body_guard, create_base_app
from registry.router import router


def create_app() -> FastAPI:
    app = create_base_app(
        "registry",
        "flexmarket registry",
        "Beckn network registry: participants and their Ed25519 signing keys (core 1.1 /subscribe, /lookup).",
    )
    app.include_router(router)
    add_body_guard(app, "/subscribe", "/lookup", "/admin/")  # schemas/limits.py, before the body is parsed
    return app
