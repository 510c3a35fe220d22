"""What every command shares: its error type, its runtime, JSON and progress on the terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from pipelines.services.runtime import Runtime


class CliError(Exception):
    """An error already phrased for the user; the command exits non-zero with it."""


def user_errors() -> tuple[type[BaseException], ...]:
    """What the command line prints as one ``error:`` line (exit 2), never a traceback."""
    from pipelines.services.errors import user_errors as service_errors

    return (CliError, *service_errors())


def quiet_flow_failures() -> None:
    """Before a command runs a flow: fail at once when ``PREFECT_API_URL`` does not answer;
    Prefect's reports of runs that failed on a user error stay quiet (see :mod:`.logs`)."""
    from pipelines.cli.logs import quiet_flow_failures as quiet
    from pipelines.cluster import check_prefect_api

    check_prefect_api()
    quiet(user_errors())


def runtime() -> Runtime:
    """The command's runtime: settings from the environment, the database migrated to head."""
    from pipelines.services.runtime import open_runtime
    from pipelines.settings import Settings

    return open_runtime(Settings())


def emit_json(obj: Any) -> None:
    """One JSON object on one line: the last line of stdout."""
    sys.stdout.flush()
    typer.echo(json.dumps(obj, ensure_ascii=False, sort_keys=True, default=str))


def echo_failed_chunks(chunks: Sequence[Mapping[str, Any]], unit: str) -> None:
    """One stderr line per chunk that failed on the cluster (``unit``: what its items are)."""
    for c in chunks:
        typer.echo(f"chunk {c['chunk']} ({c['images']} {unit}) failed: {c['reason']}", err=True)


def exit_if_chunks_failed(chunks: Sequence[object], advice: str) -> None:
    """Exit 1 when chunks failed on the cluster, saying what to do (``advice``)."""
    if chunks:
        typer.echo(f"{len(chunks)} chunk(s) failed: {advice}", err=True)
        raise typer.Exit(1)


@contextmanager
def progress_bar(label: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr; a no-op callback when disabled or not a terminal and short."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    if not enabled:
        yield lambda done, total: None
        return
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
