"""The BPP's FastAPI app (`flexmarket serve bpp`): hosts one or more BPP platforms read from
FLEXMARKET_PROVIDERS_FILE; each platform has its own subscriber id, key and URL path."""

from __future__ import annotations

import json

import structlog
from fastapi import FastAPI

from beckn.errors import Role
from beckn.identity import Identity, load_or_create_identity
from beckn.onboarding import subscribe
from beckn.pipeline import BecknPipeline
from beckn.registry_client import RegistryClient
from beckn.tasks import send_processing
from beckn.webapp import create_base_app
from bpp import admin, cft_market, service
from bpp.catalog import PlatformConfig, example_config, load_config
from bpp.router import router
from kernel.celery_app import celery_app
from kernel.config import get_settings
from kernel.db import session_scope

log = structlog.get_logger(__name__)


def platform_identity(platform: PlatformConfig, base_url: str) -> Identity:
    settings = get_settings()
    return load_or_create_identity(
        settings.home,
        platform.subscriber_id,
        Role.BPP,
        f"{base_url.rstrip('/')}/{platform.slug}",
        city_code=platform.city_codes[0],
        country_code=platform.country_code,
    )


def create_app() -> FastAPI:
    settings = get_settings()
    if settings.providers_file is None:
        raise RuntimeError("FLEXMARKET_PROVIDERS_FILE must name the providers catalog file")
    if not settings.subscriber_url:
        raise RuntimeError("FLEXMARKET_SUBSCRIBER_URL must be the BPP's public base URL")
    if not settings.providers_file.exists() and settings.example_providers:
        settings.providers_file.parent.mkdir(parents=True, exist_ok=True)
        settings.providers_file.write_text(
            json.dumps(
                example_config(
                    settings.example_providers,
                    city_code=settings.city_code,
                    base_subscriber=settings.subscriber_id or "bpp.flexmarket.local",
                ),
                indent=2,
            )
        )
    platforms = load_config(settings.providers_file)

    def startup(app: FastAPI) -> None:
        with session_scope("bpp") as s:
            for p in platforms:  # with the providers that joined through the admin API and have not left
                service.sync_platform(s, admin.hosted(s, p))
        if any(pr.cft_series for p in platforms for pr in p.providers):
            try:  # the token series are created and minted on the ledger by a worker (bpp/cft_market.py)
                celery_app.send_task("bpp.publish_cft")
            except Exception:
                log.warning("could not enqueue bpp.publish_cft; beat publishes the token series")

    app = create_base_app(
        "bpp",
        "flexmarket BPP",
        "Beckn provider platform hosting data-centre flexibility providers. Beckn actions are served at "
        "`/{platform}/{search|select|init|confirm|status|cancel|update}`.",
        on_startup=startup,
    )
    app.state.platforms = {p.slug: platform_identity(p, settings.subscriber_url) for p in platforms}
    app.state.platform_configs = {p.slug: p for p in platforms}
    if settings.auto_subscribe:
        for p in platforms:
            subscribe(
                app.state.platforms[p.slug], settings.registry_url, list(p.city_codes), settings.registry_operator_token
            )
    app.state.pipeline = BecknPipeline(
        participant="bpp",
        role=Role.BPP,
        schema="bpp",
        handlers=cft_market.HANDLERS,  # token orders, then bpp/service.py
        registry=RegistryClient(settings.registry_url, settings.registry_cache_ttl_s),
        clock_skew_s=settings.clock_skew_s,
        enqueue_processing=send_processing,
        savepoint_actions=(),  # acceptance checks only read: no savepoints in a shared transaction
    )
    app.include_router(admin.router)
    app.include_router(router)
    hosted = app.state.platforms

    def beckn_route(path: str) -> tuple[str, Identity] | None:
        slug, _, action = path[1:].partition("/")
        identity = hosted.get(slug)
        return (action, identity) if identity is not None and action in service.HANDLERS else None

    app.state.beckn_route = beckn_route
    return app
