"""Fixtures shared by the BPP's database tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from beckn.errors import Role
from beckn.identity import load_or_create_identity
from bpp.models import Order
from kernel.config import reset_settings
from kernel.db import session_scope

T0 = datetime(2026, 11, 24, 16, 0, tzinfo=UTC)


@pytest.fixture()
def order_id(isolated_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An ACCEPTED order for 100 kW, 16:00–17:00 on T0, on a BPP identity of the test's own database."""
    monkeypatch.setenv("FLEXMARKET_HOME", str(tmp_path))
    reset_settings()
    load_or_create_identity(tmp_path, "bpp.test", Role.BPP, "http://127.0.0.1:9/p")
    with session_scope("bpp") as s:
        o = Order(
            id=str(uuid.uuid4()),
            bpp_id="bpp.test",
            bap_id="bap.test",
            bap_uri="http://127.0.0.1:9/beckn",
            transaction_id=str(uuid.uuid4()),
            provider_id="p",
            item_id="i",
            power_kw=100,
            window_start=T0,
            window_end=T0 + timedelta(hours=1),
            meter_id="M",
            settlement_method="P415",
            price_gbp_per_mwh=100,
            state="ACCEPTED",
            city_code="GB-R13",
            country_code="GBR",
        )
        s.add(o)
        return o.id
