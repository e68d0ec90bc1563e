"""Property-based fuzzing of the ledger's HTTP API from its own OpenAPI document (schemathesis): requests
that fit the schema and requests that do not, in-process through the ASGI app against the real database,
with an admin key and without one. Not one may get a 5xx. Bounded: FUZZ_EXAMPLES per operation, no
shrinking beyond hypothesis' own, no deadline (the machine may be loaded)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ledger.api_keys import create_api_key
from ledger.db import connection
from ledger.main import create_app

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

FUZZ_EXAMPLES = 20  # per operation; ~35 operations → the whole run takes ~20-40 s on 2 loaded cores


@pytest.fixture(scope="module")
def app(ledger_url: str) -> Iterator[Any]:
    application = create_app()
    with TestClient(application):  # runs the lifespan (closes the runtime's pools at the end)
        yield application


@pytest.fixture(scope="module")
def admin(ledger_url: str) -> dict[str, str]:
    with connection(ledger_url) as conn, conn.transaction():
        key = create_api_key(conn, "admin")
    return {"Authorization": f"Bearer {key}"}


def test_ledger_api_never_answers_5xx(app: Any, admin: dict[str, str]) -> None:
    config = SchemathesisConfig.from_dict(
        {"phases": {"coverage": {"enabled": False}, "examples": {"enabled": False}, "stateful": {"enabled": False}}}
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    operations = [op for op in (r.ok() for r in schema.get_all_operations()) if op.path.startswith("/api/")]
    assert len(operations) > 20
    failures: list[str] = []
    for op in operations:
        strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

        @given(case=strategy, authenticated=st.booleans())
        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=bool(os.environ.get("CI")),  # CI: a fixed sequence; elsewhere new inputs each run
        )
        def probe(case: Any, authenticated: bool) -> None:
            response = case.call(headers=admin if authenticated else {})
            if response.status_code >= 500:
                failures.append(f"{case.operation.label}: {response.status_code} for {case.as_curl_command()}")

        probe()
    assert not failures, "\n".join(failures[:10])
