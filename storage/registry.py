"""The model registry: trained encoders as ``model_version`` rows. Functions never commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import ModelVersion


class UnknownModelVersionError(LookupError):
    def __init__(self, ref: str) -> None:
        super().__init__(
            f"no model version {ref!r}; train one with `siamid train --data PATH` "
            "or list them with `siamid models`"
        )


@dataclass(frozen=True)
class NewModelVersion:
    name: str
    architecture: str
    config: dict[str, Any]
    checkpoint_path: str
    checkpoint_sha256: str
    embedding_dim: int
    distance: str
    margin: float
    metrics: dict[str, Any]


def register_model_version(*, session: Session, model: NewModelVersion) -> ModelVersion:
    row = ModelVersion(
        name=model.name,
        architecture=model.architecture,
        config=model.config,
        checkpoint_path=model.checkpoint_path,
        checkpoint_sha256=model.checkpoint_sha256,
        embedding_dim=model.embedding_dim,
        distance=model.distance,
        margin=model.margin,
        metrics=model.metrics,
    )
    session.add(row)
    session.flush()
    return row


def get_model_version(*, session: Session, ref: str | int) -> ModelVersion:
    """A model version by id or name."""
    stmt = select(ModelVersion)
    if isinstance(ref, int) or str(ref).isdigit():
        stmt = stmt.where(ModelVersion.id == int(ref))
    else:
        stmt = stmt.where(ModelVersion.name == ref)
    row = session.scalars(stmt).one_or_none()
    if row is None:
        raise UnknownModelVersionError(str(ref))
    return row


def latest_model_version(*, session: Session) -> ModelVersion | None:
    stmt = select(ModelVersion).order_by(ModelVersion.id.desc()).limit(1)
    return session.scalars(stmt).one_or_none()


def list_model_versions(*, session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))
