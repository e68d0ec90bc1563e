"""The `flexmarket` command line (typer + rich)."""

from __future__ import annotations

import typer

app = typer.Typer(help="flexmarket: a Beckn flexibility marketplace with a hash-chained settlement ledger.",
                  no_args_is_help=True)

db_app = typer.Typer(help="Database migrations (alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Migrate the database (DATABASE_URL, or the embedded server) to REVISION."""
    from flexmarket import db
    from flexmarket.embedded import ensure_services

    ensure_services()
    db.upgrade(revision=revision)


def main() -> None:
    app()
