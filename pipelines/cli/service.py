"""``siamid api`` (serve the HTTP API) and ``siamid apikey create|list|revoke``.

uvicorn, FastAPI and the services are imported inside the commands, so ``siamid --help`` stays
quick. The service itself is :func:`pipelines.api.app.create_app`; this module only starts it.
"""

from __future__ import annotations

import copy
import logging
from enum import StrEnum
from typing import Annotated, Any

import typer

from pipelines.cli.logs import PROGRESS_LOGGERS
from pipelines.cli.options import DetectorOpt, JsonOpt
from pipelines.cli.output import emit_json, runtime

logger = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class Scope(StrEnum):
    read = "read"
    write = "write"


app = typer.Typer()
apikey_app = typer.Typer(
    help="Keys of the HTTP API: stored hashed, a new key is shown once.", no_args_is_help=True
)


@app.command("api")
def api_cmd(
    host: Annotated[
        str | None, typer.Option(help="Interface to bind (default 127.0.0.1, SIAMID_API_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port (default 8000, SIAMID_API_PORT).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Server processes, each with the index loaded (default 1)."),
    ] = None,
    no_ui: Annotated[
        bool,
        typer.Option(
            "--no-ui", help="Leave out the web console under /ui/ (SIAMID_API_UI=0): API only."
        ),
    ] = False,
    detector: DetectorOpt = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log",
            help="uvicorn's line per request (default off, SIAMID_API_ACCESS_LOG).",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (FastAPI + uvicorn); OpenAPI docs at /docs, web console at /ui/."""
    import os

    import uvicorn

    from pipelines.api.settings import ApiSettings

    api = ApiSettings()
    host = host or api.host
    port = api.port if port is None else port
    workers = workers or api.workers
    if no_ui:
        # The app is built by each worker from the environment (uvicorn's factory).
        os.environ["SIAMID_API_UI"] = "0"
    runtime()  # create or migrate the database once, before any worker starts
    if host not in LOCAL_HOSTS:
        logger.warning(
            "listening on %s: other machines can reach the API, and keys travel in clear "
            "text; put it behind a TLS proxy",
            host,
        )
    uvicorn.run(
        "pipelines.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=api.access_log if access_log is None else access_log,
        log_config=log_config(),
        timeout_graceful_shutdown=30,
    )


def log_config() -> dict[str, Any]:
    """uvicorn's logging plus siamid's progress loggers at INFO on its handler, so that every
    worker process (each configures logging anew) reports index swaps and jobs."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for name in PROGRESS_LOGGERS:
        config["loggers"][name] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


@apikey_app.command("create")
def apikey_create(
    scope: Annotated[
        Scope, typer.Option(help="read: identify, search, list; write: also enrol, remove.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Create a key; it is printed once (under "key" with --json) and only its hash is kept."""
    from pipelines.services.apikeys import create_api_key

    new = create_api_key(runtime().sessions, scope.value)
    typer.echo(
        f"created key {new.info.id} ({new.info.prefix}, scope {new.info.scope}); store it now, "
        "it is not shown again:",
        err=True,
    )
    if as_json:
        emit_json({**new.info.as_dict(), "key": new.token})
    else:
        typer.echo(new.token)


@apikey_app.command("list")
def apikey_list(as_json: JsonOpt = False) -> None:
    """List keys: id, prefix, scope, created and revoked times (never the keys themselves)."""
    from pipelines.services.apikeys import list_api_keys

    keys = list_api_keys(runtime().sessions)
    for k in keys:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "active"
        typer.echo(
            f"[{k.id}] {k.prefix}  {k.scope:5}  created {k.created_at:%Y-%m-%d %H:%M}  {state}"
        )
    typer.echo(f"{sum(k.active for k in keys)} active of {len(keys)} keys")
    if as_json:
        emit_json({"keys": [k.as_dict() for k in keys]})


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[int, typer.Argument(metavar="ID", help="The key's id (`apikey list`).")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key: requests carrying it get 401 from then on."""
    from pipelines.services.apikeys import revoke_api_key

    info = revoke_api_key(runtime().sessions, key_id)
    typer.echo(f"revoked key {info.id} ({info.prefix})")
    if as_json:
        emit_json(info.as_dict())
