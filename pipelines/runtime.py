"""What every command opens: settings, the database (migrated to head) and a session factory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pipelines import migrations
from pipelines.settings import Settings
from siamese.images import DecodeLimits
from storage.db import make_engine, session_factory

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        self.settings.ensure_dirs()
        engine = make_engine(self.settings.db_url)
        migrations.ensure_schema(engine, self.settings.db_url)
        return engine

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return session_factory(self.engine)

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(
            min_side=self.settings.min_image_side, max_pixels=self.settings.max_image_pixels
        )


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
