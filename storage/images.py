"""Reading and writing face images and their conflicts. Functions take a Session, never commit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, SQLColumnExpression, and_, delete, select
from sqlalchemy.orm import Session

from storage.models import Embedding, FaceImage, Identity, ImageConflict


@dataclass(frozen=True)
class ImageRecord:
    """What the importer learned about one file; ``reject_reason`` is None when accepted."""

    source_uri: str
    sha256: str | None
    identity_id: int | None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    reject_reason: str | None = None
    reject_detail: str | None = None


def find_by_sha256(*, session: Session, sha256: str) -> FaceImage | None:
    return session.scalars(select(FaceImage).where(FaceImage.sha256 == sha256)).one_or_none()


def find_unreadable(*, session: Session, source_uri: str, reason: str) -> FaceImage | None:
    """A rejected row with no bytes (missing file, outside root...) recorded for this source."""
    stmt = select(FaceImage).where(
        FaceImage.sha256.is_(None),
        FaceImage.source_uri == source_uri,
        FaceImage.reject_reason == reason,
    )
    return session.scalars(stmt.limit(1)).one_or_none()


def add_image(*, session: Session, record: ImageRecord) -> FaceImage:
    image = FaceImage(
        identity_id=record.identity_id,
        source_uri=record.source_uri,
        sha256=record.sha256,
        width=record.width,
        height=record.height,
        mode=record.mode,
        status="rejected" if record.reject_reason else "accepted",
        reject_reason=record.reject_reason,
        reject_detail=record.reject_detail,
    )
    session.add(image)
    session.flush()
    return image


def record_conflict(
    *, session: Session, image: FaceImage, claimed_identity_id: int, source_uri: str
) -> bool:
    """Record that ``image``'s bytes were also claimed for another identity; False if known."""
    known = session.scalars(
        select(ImageConflict).where(
            ImageConflict.face_image_id == image.id,
            ImageConflict.claimed_identity_id == claimed_identity_id,
        )
    ).one_or_none()
    if known is not None:
        return False
    session.add(
        ImageConflict(
            face_image_id=image.id, claimed_identity_id=claimed_identity_id, source_uri=source_uri
        )
    )
    session.flush()
    return True


def images_of_identity(*, session: Session, identity_id: int) -> list[FaceImage]:
    stmt = select(FaceImage).where(FaceImage.identity_id == identity_id).order_by(FaceImage.id)
    return list(session.scalars(stmt))


def is_live(*, after_id: int | None = None, through_id: int | None = None) -> ColumnElement[bool]:
    """The condition on ``face_image`` rows of the live gallery: accepted, one identity, and no
    conflict (conflicted bytes would vote for two people).

    The conflict test is a correlated ``NOT EXISTS``, never ``NOT IN (SELECT ...)``: PostgreSQL
    cannot turn a NOT IN over a subquery into an anti-join (NULL semantics), and once the
    subquery's hash outgrows work_mem it rescans it for every row (quadratic). The subquery
    correlates to the ``face_image`` of the SELECT this condition is used in.

    ``after_id`` / ``through_id``: the query reads only images with ids in that range (a keyset
    page, a chunk's re-check); the conflicts are then read in that range too (redundant, but
    PostgreSQL would otherwise scan every conflict for each page).
    """
    conflicted = select(ImageConflict.id).where(
        ImageConflict.face_image_id == FaceImage.id,
        *id_range(ImageConflict.face_image_id, after_id, through_id),
    )
    return and_(
        FaceImage.status == "accepted",
        FaceImage.identity_id.is_not(None),
        ~conflicted.exists(),
    )


def id_range(
    column: SQLColumnExpression[int], after_id: int | None, through_id: int | None
) -> list[ColumnElement[bool]]:
    """``after_id < column <= through_id``, either bound left out when None."""
    bounds = []
    if after_id is not None:
        bounds.append(column > after_id)
    if through_id is not None:
        bounds.append(column <= through_id)
    return bounds


def live_image_ids() -> Select[int]:
    """Ids of the live gallery images (:func:`is_live`), for ``x.in_(live_image_ids())``."""
    return select(FaceImage.id).where(is_live())


def labelled_images(*, session: Session) -> list[tuple[int, str, str]]:
    """(face_image_id, source_uri, identity name) of every live gallery image."""
    stmt = (
        select(FaceImage.id, FaceImage.source_uri, Identity.name)
        .join(Identity, FaceImage.identity_id == Identity.id)
        .where(FaceImage.id.in_(live_image_ids()))
        .order_by(Identity.name, FaceImage.id)
    )
    return [(int(i), str(u), str(n)) for i, u, n in session.execute(stmt)]


def get_image(*, session: Session, image_id: int) -> FaceImage | None:
    return session.get(FaceImage, image_id)


def remove_image(*, session: Session, image_id: int) -> FaceImage | None:
    """Delete one image and its conflicts (its embedding and detection rows cascade); the
    deleted row (detached data still readable), or None when there is no such image."""
    image = session.get(FaceImage, image_id)
    if image is None:
        return None
    session.execute(delete(ImageConflict).where(ImageConflict.face_image_id == image_id))
    session.delete(image)
    session.flush()
    return image


def embedded_image_ids(
    *, session: Session, model_version_id: int, face_image_ids: Sequence[int]
) -> set[int]:
    """Which of these images have a vector under the model."""
    if not face_image_ids:
        return set()
    stmt = select(Embedding.face_image_id).where(
        Embedding.model_version_id == model_version_id,
        Embedding.face_image_id.in_(list(face_image_ids)),
    )
    return {int(i) for i in session.scalars(stmt)}
