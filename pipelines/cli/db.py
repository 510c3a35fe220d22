"""``siamid db upgrade|downgrade|current``: the schema, by Alembic migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from pipelines.settings import Settings

app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Create or migrate the database schema (SQLite by default, PostgreSQL by URL)."""
    from pipelines import migrations
    from pipelines.services.runtime import safe_url

    settings = Settings()
    settings.ensure_dirs()
    migrations.upgrade(settings.db_url, revision)
    typer.echo(f"database at {revision}: {safe_url(settings.db_url)}")


@app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")],
) -> None:
    """Migrate the schema down to REVISION (``base`` drops everything siamid created)."""
    from pipelines import migrations

    migrations.downgrade(Settings().db_url, revision)
    typer.echo(f"database at {revision}")


@app.command("current")
def db_current() -> None:
    """Show the database's revision and the newest one available."""
    from pipelines import migrations
    from storage.db import make_engine

    url = Settings().db_url
    engine = make_engine(url)
    typer.echo(
        f"current: {migrations.current_revision(engine)}  head: {migrations.head_revision(url)}"
    )
