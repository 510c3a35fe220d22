"""Re-embedding on a schedule: the embed flow served as a Prefect deployment with a cron."""

from __future__ import annotations

import os
from typing import Any

from pipelines.services.errors import SiamidError


class NoPrefectServerError(SiamidError):
    def __init__(self) -> None:
        super().__init__(
            "`siamid serve` needs a running Prefect server: start one with `prefect server "
            "start` and export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )


def embed_deployment(*, cron: str, name: str) -> Any:
    """The deployment object: the embed flow with a cron schedule (no server needed to build)."""
    from prefect.schedules import Cron

    from pipelines.flows.embed import embed_flow

    try:
        schedule = Cron(cron)
    except ValueError as exc:
        raise SiamidError(f"--cron {cron!r} is not a valid cron expression: {exc}") from None
    return embed_flow.to_deployment(
        name=name,
        schedules=[schedule],
        description="Embed new gallery images, drop removed ones, publish a new index version.",
    )


def prefect_api_url() -> str | None:
    """The Prefect server the deployment registers with (``PREFECT_API_URL``), if any."""
    from prefect.settings import PREFECT_API_URL

    return os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value() or None


def serve_embed(*, cron: str, name: str) -> None:
    if prefect_api_url() is None:
        raise NoPrefectServerError()
    from prefect import serve

    serve(embed_deployment(cron=cron, name=name))
