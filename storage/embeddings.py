"""Which images have vectors under which model, and where the vectors live. Never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from storage.images import live_image_ids
from storage.models import Embedding, FaceImage, Identity


def images_to_embed(
    *, session: Session, model_version_id: int, among: Sequence[int] | None = None
) -> list[tuple[int, str, str]]:
    """(face_image_id, source_uri, sha256) of live images with no vector under this model;
    ``among``: only these ids (a chunk's re-check reads its own rows, not the gallery's)."""
    has_vector = select(Embedding.face_image_id).where(
        Embedding.model_version_id == model_version_id
    )
    stmt = (
        select(FaceImage.id, FaceImage.source_uri, FaceImage.sha256)
        .where(FaceImage.id.in_(live_image_ids()), FaceImage.id.not_in(has_vector))
        .order_by(FaceImage.id)
    )
    if among is not None:
        stmt = stmt.where(FaceImage.id.in_(list(among)))
    return [(int(i), str(u), str(h)) for i, u, h in session.execute(stmt)]


def count_live_images(*, session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(live_image_ids().subquery())) or 0)


def add_embeddings(
    *, session: Session, model_version_id: int, rows: Sequence[tuple[int, str]]
) -> None:
    """Record (face_image_id, vector_ref) pairs; the unique key makes a double insert fail."""
    session.add_all(
        Embedding(face_image_id=fid, model_version_id=model_version_id, vector_ref=ref)
        for fid, ref in rows
    )
    session.flush()


def live_embeddings(*, session: Session, model_version_id: int) -> list[tuple[int, str]]:
    """(face_image_id, vector_ref) of every live image embedded under this model, by id."""
    stmt = (
        select(Embedding.face_image_id, Embedding.vector_ref)
        .where(
            Embedding.model_version_id == model_version_id,
            Embedding.face_image_id.in_(live_image_ids()),
        )
        .order_by(Embedding.face_image_id)
    )
    return [(int(i), str(r)) for i, r in session.execute(stmt)]


def referenced_shards(*, session: Session, model_version_id: int) -> set[str]:
    """Shard names that SQL points at (vector refs look like ``<shard>#<row>``)."""
    refs = session.scalars(
        select(Embedding.vector_ref).where(Embedding.model_version_id == model_version_id)
    )
    return {ref.split("#", 1)[0] for ref in refs}


def delete_embeddings_of_model(*, session: Session, model_version_id: int) -> int:
    result = session.execute(
        delete(Embedding).where(Embedding.model_version_id == model_version_id)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def image_owners(*, session: Session, face_image_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    """face_image_id -> (identity_id, identity name) for these ids.

    One query, both tables by primary key (no table scan): this is on the latency path of every
    identification. Ids with no row (removed since the index was built) or no identity are absent.
    """
    if not face_image_ids:
        return {}
    stmt = (
        select(FaceImage.id, Identity.id, Identity.name)
        .join(Identity, Identity.id == FaceImage.identity_id)
        .where(FaceImage.id.in_(set(int(i) for i in face_image_ids)))
    )
    return {int(f): (int(i), str(n)) for f, i, n in session.execute(stmt)}


def count_live_identities(*, session: Session) -> int:
    stmt = select(func.count(func.distinct(FaceImage.identity_id))).where(
        FaceImage.id.in_(live_image_ids())
    )
    return int(session.scalar(stmt) or 0)


def identity_vector_refs(
    *, session: Session, model_version_id: int, identity_ids: Sequence[int]
) -> dict[int, list[str]]:
    """identity_id -> vector refs of its live images under this model (for mean templates)."""
    if not identity_ids:
        return {}
    stmt = (
        select(FaceImage.identity_id, Embedding.vector_ref)
        .join(Embedding, Embedding.face_image_id == FaceImage.id)
        .where(
            Embedding.model_version_id == model_version_id,
            FaceImage.identity_id.in_(set(int(i) for i in identity_ids)),
            FaceImage.id.in_(live_image_ids()),
        )
        .order_by(FaceImage.id)
    )
    out: dict[int, list[str]] = {}
    for ident, ref in session.execute(stmt):
        out.setdefault(int(ident), []).append(str(ref))
    return out
