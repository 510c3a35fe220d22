"""Index versions: build beside the published one, publish in one transaction, retire the rest.

Each version has its own immutable file, so publishing is the status change alone: a reader that
loaded the old file keeps using it, and the old file is deleted only after a grace period.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.models import IndexVersion, utcnow


class NoPublishedIndexError(LookupError):
    def __init__(self) -> None:
        super().__init__("no published index; build one with `siamid embed` (after `siamid train`)")


def create_index_version(
    *, session: Session, model_version_id: int, factory: str, path: str
) -> IndexVersion:
    row = IndexVersion(
        model_version_id=model_version_id,
        factory=factory,
        path=path,
        status="building",
        vector_count=0,
    )
    session.add(row)
    session.flush()
    return row


def publish_index_version(
    *, session: Session, index_version_id: int, sha256: str, vector_count: int
) -> IndexVersion:
    """Retire every published version and publish this one, in the caller's transaction."""
    now = utcnow()
    session.execute(
        update(IndexVersion)
        .where(IndexVersion.status == "published", IndexVersion.id != index_version_id)
        .values(status="retired", retired_at=now)
    )
    session.flush()
    row = session.get_one(IndexVersion, index_version_id)
    row.sha256 = sha256
    row.vector_count = vector_count
    row.status = "published"
    row.published_at = now
    session.flush()
    return row


def published_index(*, session: Session) -> IndexVersion | None:
    """The index that serves queries: the most recently published one."""
    stmt = (
        select(IndexVersion)
        .where(IndexVersion.status == "published")
        .order_by(IndexVersion.published_at.desc(), IndexVersion.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).one_or_none()


def require_published_index(*, session: Session) -> IndexVersion:
    row = published_index(session=session)
    if row is None:
        raise NoPublishedIndexError()
    return row


def abandon_building(*, session: Session) -> list[IndexVersion]:
    """Versions left ``building`` by a run that died: retired, their files for collection."""
    rows = list(session.scalars(select(IndexVersion).where(IndexVersion.status == "building")))
    now = utcnow()
    for row in rows:
        row.status = "retired"
        row.retired_at = now
    session.flush()
    return rows


def retired_before(*, session: Session, cutoff: datetime) -> list[IndexVersion]:
    stmt = select(IndexVersion).where(
        IndexVersion.status == "retired", IndexVersion.retired_at < cutoff
    )
    return list(session.scalars(stmt))
