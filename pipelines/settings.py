"""One settings object for the whole tool, read from ``SIAMID_*`` environment variables."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from faces.methods import DEFAULT_DETECTION, DETECTION_METHODS, check_method


class Settings(BaseSettings):
    """``SIAMID_HOME`` holds the SQLite database, checkpoints, vectors, indexes and reports."""

    model_config = SettingsConfigDict(env_prefix="SIAMID_", extra="ignore")

    home: Path = Field(default=Path("./siamid-data"), description="where siamid keeps its files")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite under SIAMID_HOME; "
        "postgresql+psycopg://user:pass@host/db works",
    )
    min_image_side: int = Field(default=16, ge=1, description="smaller images are rejected")
    max_image_pixels: int = Field(
        default=50_000_000, ge=1, description="larger images are rejected (decompression bombs)"
    )
    torch_threads: int = Field(default=0, ge=0, description="0 = torch's default")
    sqlite_busy_seconds: float = Field(
        default=60.0,
        gt=0,
        description="how long a SQLite writer waits for another one before 'database is locked'",
    )
    gallery_growth_warning: float = Field(
        default=1.5, gt=1.0, description="warn when the gallery grew this much since calibration"
    )
    detector: str = Field(
        default=DEFAULT_DETECTION,
        description=f"face detector: {' | '.join(DETECTION_METHODS)} (a change re-detects)",
    )

    detect_workers: int | None = Field(
        default=None,
        ge=0,
        description="DataLoader processes that decode photos and prepare them for face "
        "detection (HOG, the CNN's pyramids) while the CNN runs; 0 = in this process; "
        "unset: one per CPU core, none for the CNN alone on a CPU "
        "(pipelines.services.detection.detect_workers)",
    )

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, value: str) -> str:
        return check_method(value)

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home_dir / 'siamid.db'}"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home_dir / "checkpoints"

    @property
    def vectors_dir(self) -> Path:
        return self.home_dir / "vectors"

    @property
    def indexes_dir(self) -> Path:
        return self.home_dir / "indexes"

    def vector_store_dir(self, model_version_id: int) -> Path:
        """The durable vector store of one model version (shards of its embeddings)."""
        return self.vectors_dir / f"model-{model_version_id}"

    def index_file(self, index_version_id: int, model_version_id: int) -> Path:
        """Where an index version is written before it is published."""
        return self.indexes_dir / f"index-{index_version_id:06d}-model-{model_version_id}.faiss"

    def checkpoint_file(self, model_name: str) -> Path:
        return self.checkpoints_dir / f"{model_name}.pt"

    @property
    def detections_cache_dir(self) -> Path:
        """Face detections of photos outside the gallery (evaluation sets), by content."""
        return self.home_dir / "cache" / "detections"

    @property
    def reports_dir(self) -> Path:
        return self.home_dir / "reports"

    def ensure_dirs(self) -> None:
        for d in (self.home_dir, self.checkpoints_dir, self.vectors_dir, self.indexes_dir):
            d.mkdir(parents=True, exist_ok=True)


def prefect_defaults(*, verbose: bool = False) -> None:
    """Defaults for Prefect's ephemeral API when no server is configured.

    Analytics off (no network here), and a generous startup timeout: a busy 2-core machine
    misses the 20 s default. Prefect's own INFO lines (flow and task runs created, finished)
    only with ``verbose``: siamid's progress goes through its own loggers. Values the user set
    win.
    """
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("DO_NOT_TRACK", "1")
