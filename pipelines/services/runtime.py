"""What every command opens: settings, the database (migrated to head) and a session factory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pipelines import migrations
from pipelines.services.errors import DatabaseError, first_line
from pipelines.services.models import EncoderCache
from pipelines.settings import Settings
from siamese.images import DecodeLimits
from storage.db import make_engine, session_factory

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Owns the engine, the session factory and the encoder cache for as long as it lives."""

    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

        self.settings.ensure_dirs()
        url = self.settings.db_url
        try:
            engine = make_engine(url, busy_timeout_s=self.settings.sqlite_busy_seconds)
            migrations.ensure_schema(engine, url)
        except (OperationalError, ArgumentError, NoSuchModuleError) as exc:
            raise DatabaseError(
                f"cannot use the database {safe_url(url)}: {first_line(exc)}; check "
                "SIAMID_DATABASE_URL (and that its server is running)"
            ) from None
        return engine

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.engine)

    @cached_property
    def encoders(self) -> EncoderCache:
        return EncoderCache()

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(
            min_side=self.settings.min_image_side, max_pixels=self.settings.max_image_pixels
        )


def safe_url(url: str) -> str:
    """The URL with its password hidden (for messages and logs)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def open_runtime(settings: Settings | None = None) -> Runtime:
    settings = settings or Settings()
    apply_thread_settings(settings)
    return Runtime(settings)


def apply_thread_settings(settings: Settings) -> int:
    """Set torch's intra-op threads when configured; returns the count in force (recorded)."""
    import torch  # deferred: `siamid --help` should not pay for importing torch

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    return torch.get_num_threads()


_PROCESS_RUNTIMES: dict[tuple[str, str], Runtime] = {}


def process_runtime() -> Runtime:
    """The runtime this process shares between tasks, one per (home, database).

    Prefect tasks (and Dask workers) open what they need from ids and paths; sharing the
    runtime keeps one engine and one encoder cache per process instead of one per task, so a
    model is loaded once per process and model version.
    """
    settings = Settings()
    key = (str(settings.home_dir), settings.db_url)
    if key not in _PROCESS_RUNTIMES:
        _PROCESS_RUNTIMES[key] = open_runtime(settings)
    return _PROCESS_RUNTIMES[key]
