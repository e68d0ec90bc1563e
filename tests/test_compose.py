"""docker-compose.yml is checked without Docker: every service command is a real `flexmarket` entry
point whose options parse, every variable it sets is a known setting, and the workers can be scaled
out against the one Redis and one PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from flexmarket.cli import app
from kernel.config import Settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def flexmarket_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if (s.get("command") or [None])[0] == "flexmarket"}


class BadCommand(Exception):
    pass


def resolve(argv: list[str]) -> Any:
    """Walk the CLI like a shell would and parse the options; raises if anything is unknown."""
    cmd = get_command(app)
    args = list(argv)
    ctx = cmd.make_context("flexmarket", [], resilient_parsing=True)
    while hasattr(cmd, "list_commands"):  # a command group (typer vendors its own click)
        if not args:
            raise BadCommand(f"{argv} names a group, not a command")
        name = args.pop(0)
        sub = cmd.get_command(ctx, name)
        if sub is None:
            raise BadCommand(f"no command {name!r} in {argv}")
        cmd = sub
        ctx = type(ctx)(cmd, parent=ctx, info_name=name)
    try:
        cmd.make_context(cmd.name, args)
    except Exception as exc:  # the vendored click's UsageError family
        raise BadCommand(f"{argv}: {exc}") from exc
    return cmd


def test_resolve_rejects_what_does_not_exist() -> None:
    with pytest.raises(BadCommand, match="no command"):
        resolve(["flexmarket-nope"])
    with pytest.raises(BadCommand, match="colour"):
        resolve(["serve", "bap", "--colour", "blue"])
    with pytest.raises(BadCommand):
        resolve(["registry"])


def test_every_command_is_a_real_entry_point(compose: dict[str, Any]) -> None:
    services = flexmarket_services(compose)
    assert {"registry", "gateway", "bap", "ledger", "worker", "beat", "migrate"} <= set(services)
    assert sum(1 for n in services if n.startswith("bpp")) >= 2
    for svc in services.values():
        resolve(svc["command"][1:])


def test_every_variable_is_a_known_setting(compose: dict[str, Any]) -> None:
    known = {f.alias for f in Settings.model_fields.values()}
    for name, svc in flexmarket_services(compose).items():
        unknown = set(svc.get("environment", {})) - known
        assert not unknown, f"{name} sets unknown variables {unknown}"


def test_workers_scale_against_one_redis_and_one_postgres(compose: dict[str, Any]) -> None:
    services = flexmarket_services(compose)
    worker = services["worker"]
    assert worker["command"][1] == "worker" and "--beat" not in worker["command"]
    assert worker.get("deploy", {}).get("replicas", 1) >= 2
    beats = [n for n, s in services.items() if s["command"][1] == "beat" or "--beat" in s["command"]]
    assert beats == ["beat"], "exactly one process may run Celery beat"
    urls = {(s["environment"]["DATABASE_URL"], s["environment"]["REDIS_URL"]) for s in services.values()}
    assert len(urls) == 1
    db_url, redis_url = urls.pop()
    assert "@postgres:" in db_url and redis_url.startswith("redis://redis:")
    assert compose["services"]["postgres"]["image"] == "postgres:16"
    assert compose["services"]["redis"]["image"] == "redis:7"


def test_each_bpp_has_its_own_identity(compose: dict[str, Any]) -> None:
    bpps = [s for n, s in flexmarket_services(compose).items() if n.startswith("bpp")]
    ids = [s["environment"]["FLEXMARKET_SUBSCRIBER_ID"] for s in bpps]
    files = [s["environment"]["FLEXMARKET_PROVIDERS_FILE"] for s in bpps]
    assert len(set(ids)) == len(ids) and len(set(files)) == len(files)


def test_dockerfile_copies_every_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for pkg in ("flexmarket", "beckn", "schemas", "registry", "gateway", "bap", "bpp", "ledger", "migrations"):
        assert f"COPY {pkg} {pkg}" in text
        assert (ROOT / pkg).is_dir()
