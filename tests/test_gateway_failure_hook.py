"""gateway/service.py `fan_out_failed` takes the rows the outbox gives its failure hook, which may be LeasedRows
(sent straight after writing, with no `action` column): it reads what each was from the message itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from beckn.outbox import LeasedRow
from gateway import service


def leased(action: str) -> LeasedRow:
    body = json.dumps({"context": {"action": action, "bap_id": "bap.example", "transaction_id": "t-1"}}).encode()
    now = datetime.now(UTC)
    return LeasedRow(
        1,
        "gw.example",
        "http://bpp.example/search",
        body,
        forwarded_authorization=None,
        expires_at=now,
        next_attempt_at=now,
    )


def test_a_leased_on_search_that_failed_is_nobody_elses_to_hear(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(service, "subscribers_sync", lambda **kw: [])
    monkeypatch.setattr(service, "_report_to_bap", lambda *a, **kw: reported.append((a, kw)))
    service.fan_out_failed(None, [(leased("on_search"), "refused")])  # type: ignore[arg-type]
    assert reported == []


def test_a_leased_search_that_failed_is_reported_to_its_bap(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(service, "subscribers_sync", lambda **kw: [])
    monkeypatch.setattr(service, "_report_to_bap", lambda *a, **kw: reported.append((a, kw)))
    service.fan_out_failed(None, [(leased("search"), "HTTP 400 bad")])  # type: ignore[arg-type]
    [(args, kw)] = reported
    assert args[2]["transaction_id"] == "t-1" and "HTTP 400 bad" in kw["error"]
