"""The root of the ``siamid`` command line: global options, the groups, and the one place where
errors become ``error: ...`` and exit 2."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pipelines.cli import (
    data,
    db,
    evaluation,
    gallery,
    identification,
    indexing,
    service,
    training,
)
from pipelines.cli.logs import configure_logging
from pipelines.cli.output import user_errors

app = typer.Typer(
    name="siamid",
    help="Open-set face identification with Siamese networks, FAISS and Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(db.app, name="db")
app.add_typer(gallery.app, name="gallery")
app.add_typer(data.app, name="data")
app.add_typer(service.apikey_app, name="apikey")
for commands in (training.app, indexing.app, identification.app, evaluation.app, service.app):
    app.add_typer(commands)  # their commands sit at the top level: `siamid train`, ...


@app.callback()
def _options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug lines and Prefect's own logs.")
    ] = False,
) -> None:
    from pipelines.settings import prefect_defaults

    configure_logging(verbose)
    prefect_defaults(verbose=verbose)  # before any command imports Prefect


def main() -> None:
    from pipelines.services.errors import fault_message

    configure_logging(verbose=False)
    try:
        app()
    except user_errors() as exc:
        message = str(exc.args[0]) if isinstance(exc, LookupError) and exc.args else str(exc)
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
    except Exception as exc:  # a full disk or a database that is down: one line, not a bug
        if (message := fault_message(exc)) is None:
            raise
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
