"""Database access shared by every participant.

One PostgreSQL database, one schema per participant (registry, gateway, bap, bpp, ledger) — see
../shared/DESIGN.md "Processes". A participant's engine sets `search_path` to its own schema, so its
tables are declared without a schema and it cannot reach another participant's tables by accident.
In production each participant may point DATABASE_URL at a database of its own; nothing changes.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import psycopg
from sqlalchemy import Engine, create_engine
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from kernel.config import get_settings

if TYPE_CHECKING:
    from alembic.config import Config

SCHEMAS = ("registry", "gateway", "bap", "bpp", "ledger")


class Base(DeclarativeBase):
    """Declarative base for every participant's tables (declared without a schema)."""


def sqlalchemy_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (libpq style) and select the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"DATABASE_URL must be a PostgreSQL URL, got {url!r}")


def libpq_url(url: str) -> str:
    """The same URL for raw psycopg (no SQLAlchemy driver suffix)."""
    return "postgresql://" + sqlalchemy_url(url).removeprefix("postgresql+psycopg://")


def pool_size() -> int:
    """Connections each engine keeps (FLEXMARKET_DB_POOL_SIZE; a worker sets it to its thread count)."""
    return get_settings().db_pool_size


_engines: dict[tuple[str, str], Engine] = {}
_lock = threading.Lock()


def database_url() -> str:
    url = get_settings().database_url
    if not url:
        raise RuntimeError("DATABASE_URL is not set (the CLI starts an embedded PostgreSQL when it is unset)")
    return url


def get_engine(schema: str, url: str | None = None) -> Engine:
    """A pooled engine whose connections see only `schema` (plus pg_catalog)."""
    if schema not in SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}")
    url = url or database_url()
    key = (schema, url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = create_engine(
                sqlalchemy_url(url),
                # Callers bound their own concurrency to pool_size() (beckn/pipeline.py), so connections are
                # reused instead of opened and closed per request; recycled rather than pinged per checkout.
                pool_size=pool_size(),
                max_overflow=4,
                pool_recycle=300,
                connect_args={"options": f"-csearch_path={schema}"},
            )
            _engines[key] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (after fork, at shutdown, in tests)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()


_factories: dict[int, sessionmaker[Session]] = {}


def session_factory(schema: str, url: str | None = None) -> sessionmaker[Session]:
    # One sessionmaker per engine: building one costs more than the short transactions it opens.
    engine = get_engine(schema, url)
    factory = _factories.get(id(engine))
    if factory is None or factory.kw.get("bind") is not engine:
        factory = _factories[id(engine)] = sessionmaker(bind=engine, expire_on_commit=False)
    return factory


def raw(session: Session) -> psycopg.Connection:
    """The psycopg connection under `session`, in the session's transaction. The Beckn hot path
    (inbox, outbox) runs plain SQL on it: compiling SQLAlchemy statements cost more CPU per message
    than the statements themselves took in PostgreSQL."""
    conn = session.connection().connection.driver_connection
    assert isinstance(conn, psycopg.Connection)
    return conn


# What a lost or unreachable database raises (a restart, a failover, pg_terminate_backend, an exhausted pool):
# the request was not at fault and may be retried later. psycopg's OperationalError also covers
# serialization failures and cancelled statements, for which "retry later" is the right answer too.
UNAVAILABLE: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def unavailable(exc: BaseException) -> bool:
    """`exc`, or an exception it was raised from, says the database is unavailable right now."""
    chain: BaseException | None = exc
    seen: set[int] = set()
    while chain is not None and id(chain) not in seen:
        if isinstance(chain, UNAVAILABLE):
            return True
        seen.add(id(chain))
        chain = chain.__cause__ or chain.__context__
    return False


@contextmanager
def session_scope(schema: str, url: str | None = None) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error — never a half-written row."""
    session = session_factory(schema, url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


# alembic is imported inside the three functions below, not at the top: every process imports this module,
# and only `flexmarket db upgrade`, the runner and tests migrate (keeps `flexmarket --help` and workers light).
def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url or database_url()).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def conninfo_to_url(conninfo: str) -> str:
    """libpq conninfo (key=value or URL) → a postgresql:// URL, as DATABASE_URL holds it."""
    info = psycopg.conninfo.conninfo_to_dict(conninfo)
    user = quote(str(info.get("user", "postgres")))
    password = info.get("password")
    auth = f"{user}:{quote(str(password))}@" if password else f"{user}@"
    host = str(info.get("host", "127.0.0.1"))
    port = info.get("port")
    dbname = info.get("dbname", "postgres")
    if host.startswith("/"):  # unix socket (the embedded server)
        return f"postgresql://{auth}/{dbname}?host={quote(host)}" + (f"&port={port}" if port else "")
    return f"postgresql://{auth}{host}{':' + str(port) if port else ''}/{dbname}"


def create_database(server_url: str, prefix: str) -> str:
    """A new empty database on the server of `server_url`, named <prefix>_<random>; returns its URL.
    Tests and benchmarks use one each so that concurrent runs never see each other's rows."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(libpq_url(server_url))
    info["dbname"] = name
    return conninfo_to_url(psycopg.conninfo.make_conninfo("", **info))


def drop_database(server_url: str, url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(libpq_url(url))["dbname"]
    dispose_engines()
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
