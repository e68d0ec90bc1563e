"""kernel/config.py reads only the documented variable names (README "Settings"), never a field's own name."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.config import Settings

# A value for every field that the type accepts, so a leak would be picked up, not refused.
_VALUES = {
    "database_url": "postgresql://leak@127.0.0.1:1/leak",
    "redis_url": "redis://127.0.0.1:1/9",
    "home": "/leaked/home",
    "celery_queue": "leak-queue",
    "log_level": "DEBUG",
    "db_pool_size": "99",
    "log_json": "true",
    "participant": "leak",
    "subscriber_id": "leak.example.com",
    "subscriber_url": "http://leak.example.com",
    "registry_url": "http://leak.example.com/registry",
    "gateway_url": "http://leak.example.com/gateway",
    "ledger_url": "http://leak.example.com/ledger",
    "ledger_api_key": "flk_leak",
    "default_supplier_id": "leak-supplier",
    "city_code": "GB-LEAK",
    "country_code": "LEK",
    "providers_file": "/leaked/providers.json",
    "grid_signal_source": "replay",
    "auto_subscribe": "true",
    "example_providers": "7",
    "registry_operator_token": "leak-token",
    "signature_validity_s": "1",
    "clock_skew_s": "1",
    "registry_cache_ttl_s": "1",
    "message_ttl_s": "1",
    "delivery_ttl_s": "1",
    "redeliver_after_s": "1.5",
    "sweep_interval_s": "1.5",
    "clock_start": "2020-01-01T00:00:00Z",
    "clock_speed": "3",
    "clock_anchor": "2020-01-01T00:00:00Z",
}


def _clear_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    for field in Settings.model_fields.values():
        assert field.alias, "every setting has its documented variable name as alias"
        monkeypatch.delenv(field.alias, raising=False)
        monkeypatch.delenv(field.alias.lower(), raising=False)


def _value(name: str) -> str:
    """A value the field's type accepts (settings added later get one from their default's type)."""
    if name in _VALUES:
        return _VALUES[name]
    default = Settings.model_fields[name].default
    if isinstance(default, bool):
        return "true" if not default else "false"
    if isinstance(default, int):
        return str(default + 7)
    if isinstance(default, float):
        return str(default + 1.5)
    return "leak"


def test_every_field_gets_a_value_here() -> None:
    for name in Settings.model_fields:
        assert _value(name)


@pytest.mark.parametrize("case", [str.upper, str.lower])
def test_field_names_in_the_environment_are_ignored(monkeypatch: pytest.MonkeyPatch, case: object) -> None:
    _clear_documented(monkeypatch)
    for name in Settings.model_fields:
        value = _value(name)
        if case(name) != Settings.model_fields[name].alias:  # type: ignore[operator]  # DATABASE_URL is both
            monkeypatch.setenv(case(name), value)  # type: ignore[operator]
    # the shell's own HOME, LOG_LEVEL, CITY_CODE … and the short names a field might be confused with
    for name in ("HOME", "LOG_LEVEL", "DATABASE", "CITY", "COUNTRY", "PARTICIPANT", "QUEUE", "REDIS"):
        monkeypatch.setenv(name, "/leaked/home" if name == "HOME" else "leak")
    defaults = Settings.model_construct()  # the declared defaults, nothing read
    s = Settings()
    for name in Settings.model_fields:
        assert getattr(s, name) == getattr(defaults, name), f"{name} was read from the environment"
    assert s.home == Path(".flexmarket")
    assert s.log_level == "INFO" and s.city_code == "GB-R13" and s.database_url is None


def test_documented_names_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_documented(monkeypatch)
    for name in Settings.model_fields:
        alias = Settings.model_fields[name].alias
        assert alias
        monkeypatch.setenv(alias, _value(name))
    s = Settings()
    assert s.home == Path("/leaked/home") and s.log_level == "DEBUG" and s.city_code == "GB-LEAK"
    assert s.database_url == _VALUES["database_url"] and s.redis_url == _VALUES["redis_url"]
    assert s.db_pool_size == 99 and s.log_json is True and s.example_providers == 7
    assert s.clock_speed == 3.0 and s.clock_start is not None
