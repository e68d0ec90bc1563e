"""The BAP's app in process (TestClient) on a database of this module's own, with one API key per role.

Nothing leaves the process: the registry and gateway URLs point where nothing listens (a search then counts
only toward its own acceptance, bap/router.py `_fan_out_of`), and the Celery hand-off of committed outbox
rows is replaced by a list (`app.state.enqueued` in tests), so no task reaches Redis."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from bap import auth
from bap.permissions import Role
from kernel import db
from kernel.config import reset_settings
from kernel.db import session_scope

NOWHERE = "http://127.0.0.1:9"  # the discard port: connections are refused at once


@dataclass(frozen=True)
class Keys:
    """A key per role, plus a second aggregator's (another company's)."""

    operator: str
    aggregator: str
    viewer: str
    other_aggregator: str

    def of(self, role: Role) -> str:
        return str(getattr(self, role.value))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_key(role: Role, aggregator_id: str | None = None, label: str = "test") -> str:
    with session_scope("bap") as s:
        return auth.create_api_key(s, role, aggregator_id=aggregator_id, label=label)


@pytest.fixture(scope="module")
def bap_db(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = db.create_database(pg_server_url, "fm_bap")
    db.upgrade(url)
    home = tmp_path_factory.mktemp("bap-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATABASE_URL", url)
        mp.setenv("FLEXMARKET_HOME", str(home))
        mp.setenv("FLEXMARKET_SUBSCRIBER_ID", "bap.test.flexmarket.local")
        mp.setenv("FLEXMARKET_SUBSCRIBER_URL", f"{NOWHERE}/beckn")
        mp.setenv("FLEXMARKET_GATEWAY_URL", NOWHERE)
        mp.setenv("FLEXMARKET_REGISTRY_URL", NOWHERE)
        mp.delenv("FLEXMARKET_LEDGER_URL", raising=False)
        reset_settings()
        db.dispose_engines()
        try:
            yield url
        finally:
            db.dispose_engines()
            reset_settings()
    db.drop_database(pg_server_url, url)


@pytest.fixture(scope="module")
def keys(bap_db: str) -> Keys:
    return Keys(
        operator=make_key(Role.OPERATOR),
        aggregator=make_key(Role.AGGREGATOR, "agg-a"),
        viewer=make_key(Role.VIEWER),
        other_aggregator=make_key(Role.AGGREGATOR, "agg-b"),
    )


@pytest.fixture(scope="module")
def client(bap_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    import bap.router
    from bap.main import create_app

    enqueued: list[int] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bap.router, "send_delivery", lambda _schema, ids, countdown=None: enqueued.extend(ids))
        app = create_app()
        app.state.enqueued = enqueued
        with TestClient(app, raise_server_exceptions=False) as c:
            yield c
