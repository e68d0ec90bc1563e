"""The one Celery application. Workers on any number of hosts share one Redis and one PostgreSQL:
tasks carry ids only and read their state from the database, so any worker can run any task.

Start a worker with `flexmarket worker`, the scheduler of periodic tasks with `flexmarket beat`.
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from celery.signals import worker_process_init, worker_ready

from kernel import clock
from kernel.config import get_settings
from kernel.db import dispose_engines
from kernel.process import freeze_startup_objects

# Each participant's Celery tasks live in its own `tasks.py` (domain layout).
TASK_MODULES = ["beckn.tasks", "gateway.tasks", "bap.tasks", "bpp.tasks", "ledger.tasks"]


def market_interval(real: timedelta) -> timedelta:
    """A period of market work (expiry, settlement) in market time: on a simulated clock running k× faster
    it comes k× more often in real time, so a replayed day settles on the same market schedule (≥ 1 s)."""
    return max(real / clock.speed(), timedelta(seconds=1))


BEAT_SCHEDULE = {
    # Re-enqueue outbox rows stuck in PENDING (worker crash, Redis restart) — ../shared/DESIGN.md.
    "outbox-sweep": {"task": "beckn.sweep_outboxes", "schedule": timedelta(seconds=get_settings().sweep_interval_s)},
    # Signed checkpoint of the ledger's chain head.
    "ledger-checkpoint": {"task": "ledger.checkpoint", "schedule": timedelta(minutes=5)},
    # Expire Compute Flex Tokens whose validity window has ended.
    "ledger-expire-cfts": {"task": "ledger.expire_cfts", "schedule": market_interval(timedelta(minutes=1))},
    # Settle delivery windows that have closed (idempotent: re-running is a no-op).
    "ledger-settle-due": {"task": "ledger.settle_due", "schedule": market_interval(timedelta(minutes=5))},
    # Order outcomes (the ledger's settlement runs) flow back to the BPP's orders and, signed, to their buyers.
    "bpp-sync-outcomes": {
        "task": "bpp.sync_outcomes",
        "schedule": market_interval(timedelta(seconds=get_settings().outcome_sync_interval_s)),
    },
    # Every BPP agent re-plans from the current market time; offers are re-published or withdrawn (bpp/replan.py).
    "bpp-replan": {
        "task": "bpp.replan",
        "schedule": market_interval(timedelta(seconds=get_settings().replan_interval_s)),
    },
    # BPP providers' Compute Flex Token series created, minted and published (bpp/cft_market.py; idempotent).
    "bpp-publish-cft": {"task": "bpp.publish_cft", "schedule": market_interval(timedelta(minutes=5))},
    # The grid orchestrator's procurements take a step (transport time: collecting ends on the message TTL).
    "bap-procurements": {"task": "bap.procurements_tick", "schedule": timedelta(seconds=1)},
    # The orchestrator buys the Compute Flex Tokens its policy finds cheap (bap/token_policy.py).
    "bap-tokens": {"task": "bap.consider_tokens", "schedule": market_interval(timedelta(minutes=5))},
    # The orchestrator's grid signals (carbon, prices) from FLEXMARKET_GRID_SIGNAL_SOURCE.
    "bap-signals": {
        "task": "bap.poll_signals",
        "schedule": market_interval(timedelta(seconds=get_settings().grid_signal_poll_s)),
    },
    # Compare every order across the BAP's, the BPP's and the ledger's books; alert on each difference.
    "bap-reconcile": {"task": "bap.reconcile", "schedule": market_interval(timedelta(days=1))},
}


PARTICIPANT_QUEUES = ("registry", "gateway", "bap", "bpp", "ledger")


def queue_for(participant: str | None = None) -> str:
    """Each participant's tasks have a queue of their own, so each organisation can run its own
    workers (`flexmarket worker --participants bpp`); one worker may also consume them all."""
    base = get_settings().celery_queue
    return f"{base}.{participant}" if participant else base


def all_queues() -> list[str]:
    return [queue_for(None)] + [queue_for(p) for p in PARTICIPANT_QUEUES]


def route_task(name: str, args: tuple, kwargs: dict, options: dict, task: object = None, **_: object) -> dict:
    # beckn.* tasks serve every participant: their first argument names the participant's schema.
    if name.startswith("beckn.") and args and args[0] in PARTICIPANT_QUEUES:
        return {"queue": queue_for(str(args[0]))}
    prefix = name.split(".", 1)[0]
    if prefix in PARTICIPANT_QUEUES:
        return {"queue": queue_for(prefix)}
    return {"queue": queue_for(None)}


def make_celery() -> Celery:
    settings = get_settings()
    broker = settings.redis_url or "redis://127.0.0.1:6379/0"
    app = Celery("flexmarket", broker=broker, include=TASK_MODULES)
    app.conf.update(
        task_default_queue=settings.celery_queue,
        task_ignore_result=True,
        task_acks_late=True,  # a task whose worker dies is redelivered, not lost
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 300},
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        beat_schedule=BEAT_SCHEDULE,
        task_routes=(route_task,),
    )
    return app


celery_app = make_celery()


@worker_process_init.connect
def _reset_after_fork(**_: object) -> None:
    # Pooled DB connections must not be shared across forked worker processes.
    dispose_engines()


@worker_ready.connect
def _freeze_startup_objects(**_: object) -> None:
    # The task modules import the scheduler's numeric stack: keep it out of every garbage collection.
    freeze_startup_objects()
