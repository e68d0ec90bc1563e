"""The gateway's FastAPI app (`flexmarket serve gateway`)."""

from __future__ import annotations

from fastapi import FastAPI

from beckn.errors import Role
from beckn.identity import own_identity
from beckn.onboarding import subscribe
from beckn.pipeline import BecknPipeline, prefixed_route
from beckn.registry_client import RegistryClient
from beckn.tasks import send_processing
from beckn.webapp import create_base_app
from gateway import service
from gateway.router import router
from kernel.config import get_settings


def create_app() -> FastAPI:
    settings = get_settings()
    if not settings.subscriber_id or not settings.subscriber_url:
        raise RuntimeError("FLEXMARKET_SUBSCRIBER_ID and FLEXMARKET_SUBSCRIBER_URL must be set for the gateway")
    app = create_base_app(
        "gateway",
        "flexmarket gateway",
        "Beckn gateway: fans search out to matching BPPs and relays on_search to the BAP.",
    )
    app.state.identity = own_identity(Role.BG)
    if settings.auto_subscribe:
        subscribe(app.state.identity, settings.registry_url, ["*"], settings.registry_operator_token)
    app.state.pipeline = BecknPipeline(
        participant="gateway",
        role=Role.BG,
        schema="gateway",
        handlers=service.HANDLERS,
        registry=RegistryClient(settings.registry_url, settings.registry_cache_ttl_s),
        clock_skew_s=settings.clock_skew_s,
        enqueue_processing=send_processing,
        relay_only=True,
        savepoint_actions=(),  # acceptance checks only read: no savepoints in a shared transaction
    )
    app.include_router(router)
    app.state.beckn_route = prefixed_route("/", app.state.identity, service.HANDLERS)
    return app
