"""The BAP's FastAPI app (`flexmarket serve bap`)."""

from __future__ import annotations

from fastapi import FastAPI

from bap import dashboard, reconcile, service
from bap import metrics as orchestrator_metrics
from bap.backpressure import SEARCHES
from bap.orchestrator_router import orchestrator
from bap.router import api, beckn_router
from beckn.errors import Role
from beckn.identity import own_identity
from beckn.onboarding import subscribe
from beckn.pipeline import BecknPipeline, prefixed_route
from beckn.registry_client import RegistryClient
from beckn.tasks import send_processing
from beckn.webapp import add_body_guard, create_base_app
from kernel.config import get_settings


def create_app() -> FastAPI:
    settings = get_settings()
    if not settings.subscriber_id or not settings.subscriber_url or not settings.gateway_url:
        raise RuntimeError(
            "the BAP needs FLEXMARKET_SUBSCRIBER_ID, FLEXMARKET_SUBSCRIBER_URL and FLEXMARKET_GATEWAY_URL"
        )
    app = create_base_app(
        "bap",
        "flexmarket BAP (grid orchestrator)",
        "Client API for aggregators: search the Beckn network for data-centre flexibility, choose offers, "
        "and order and track load reduction. Every call becomes a signed Beckn message; callbacks arrive at "
        "/beckn/on_*.",
    )
    app.state.identity = own_identity(Role.BAP)
    app.state.gateway_url = settings.gateway_url
    if settings.auto_subscribe:
        subscribe(app.state.identity, settings.registry_url, [settings.city_code], settings.registry_operator_token)
    app.state.registry = RegistryClient(settings.registry_url, settings.registry_cache_ttl_s)
    SEARCHES.limit, SEARCHES.timeout_s = settings.bap_max_searches_in_flight, settings.message_ttl_s
    app.state.pipeline = BecknPipeline(
        participant="bap",
        role=Role.BAP,
        schema="bap",
        handlers=service.HANDLERS,
        registry=app.state.registry,
        clock_skew_s=settings.clock_skew_s,
        enqueue_processing=send_processing,
        # on_search refuses only before it writes; the order callbacks change ORM state first
        savepoint_actions=frozenset(service.HANDLERS) - {"on_search"},
    )
    app.include_router(api)
    app.include_router(orchestrator)
    dashboard.mount(app)  # the operator dashboard at /dashboard (bap/dashboard.py)
    reconcile.register_metrics()  # the reconciliation alerts on /metrics (read from their table at each scrape)
    orchestrator_metrics.register_metrics()  # procurements and grid signals (bap/metrics.py)
    add_body_guard(app, "/api/")  # 413 over 1 MiB, deep JSON and NUL refused before parsing (schemas/limits.py)
    app.include_router(beckn_router)
    app.state.beckn_route = prefixed_route("/beckn/", app.state.identity, service.HANDLERS)
    return app
