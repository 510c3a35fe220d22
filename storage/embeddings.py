"""Which images have vectors under which model, and where the vectors live. Never commits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Select, delete, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from storage.images import id_range, is_live, live_image_ids
from storage.models import Embedding, FaceImage, Identity

#: The ``embedding`` Table itself: inserts into it are Core, not the ORM's bulk path.
_EMBEDDING_TABLE = Embedding.metadata.tables[Embedding.__tablename__]


def _to_embed(
    model_version_id: int, *, after_id: int | None = None, through_id: int | None = None
) -> Select[int, str, str | None]:
    """Live images with no vector under this model, by id (only ids in (after_id, through_id]
    when given).

    ``NOT EXISTS`` (correlated), not ``NOT IN (SELECT ...)``: PostgreSQL makes the first an
    anti-join and runs the second quadratically once its subquery outgrows work_mem (the
    re-check with nothing left took 841 s at 200,000 vectors, 0.16 s as NOT EXISTS). Both
    tests are on the outer ``face_image`` row, so a keyset page (``id > after ORDER BY id
    LIMIT n``) walks the primary key and stops after n rows. The subqueries repeat the id
    bounds (redundant: they correlate on the id), else PostgreSQL reads every vector row of
    the model again for each page or chunk re-check (a merge anti-join from the first row, a
    hash of them all).
    """
    has_vector = select(Embedding.id).where(
        Embedding.face_image_id == FaceImage.id,
        Embedding.model_version_id == model_version_id,
        *id_range(Embedding.face_image_id, after_id, through_id),
    )
    return (
        select(FaceImage.id, FaceImage.source_uri, FaceImage.sha256)
        .where(
            *id_range(FaceImage.id, after_id, through_id),
            is_live(after_id=after_id, through_id=through_id),
            ~has_vector.exists(),
        )
        .order_by(FaceImage.id)
    )


def images_to_embed(
    *,
    session: Session,
    model_version_id: int,
    among: Sequence[int] | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[tuple[int, str, str]]:
    """(face_image_id, source_uri, sha256) of live images with no vector under this model, by id.

    ``among``: only these ids (a chunk's re-check reads its own rows, not the gallery's).
    ``after_id`` and ``limit``: one keyset page, the first ``limit`` rows with a larger id; the
    next page starts after the last id of this one (a gallery of 100M images is never listed
    at once).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"a page holds at least 1 row, got limit={limit}")
    through_id = None
    ids: list[int] = []
    if among is not None:
        ids = sorted({int(i) for i in among})
        if not ids:
            return []
        # the chunk's id range bounds the subqueries (its ids are a keyset page: contiguous)
        after_id = max(ids[0] - 1, after_id) if after_id is not None else ids[0] - 1
        through_id = ids[-1]
    stmt = _to_embed(model_version_id, after_id=after_id, through_id=through_id)
    if among is not None:
        stmt = stmt.where(FaceImage.id.in_(ids))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [(int(i), str(u), str(h)) for i, u, h in session.execute(stmt)]


def count_images_to_embed(*, session: Session, model_version_id: int) -> tuple[int, int | None]:
    """How many images :func:`images_to_embed` would list, and the largest of their ids (None
    when there is none): a run pages up to that id, so images imported meanwhile wait."""
    pending = _to_embed(model_version_id).order_by(None).subquery()
    row = session.execute(select(func.count(), func.max(pending.c.id))).one()
    return int(row[0] or 0), None if row[1] is None else int(row[1])


def count_live_images(*, session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(live_image_ids().subquery())) or 0)


def add_embeddings(
    *,
    session: Session,
    model_version_id: int,
    rows: Sequence[tuple[int, str]],
    faces: Mapping[int, tuple[int, str]] | None = None,
) -> None:
    """Record (face_image_id, vector_ref) pairs; the unique key makes a double insert fail.

    ``faces``: face_image_id -> (face_rank, chosen_by) of the detected face embedded (detect
    mode); images absent from it store NULLs.

    One Core INSERT executemany on the table (no ORM object per row: 3-9x the rows/s of
    ``add_all``; ~20% more than the ORM's bulk ``insert(Embedding)``), through the session: it
    flushes what is pending first, the rows are visible to its later queries and commit or roll
    back with its transaction. ``created_at`` takes the column's default (now, UTC).
    """
    if not rows:
        return
    session.execute(
        insert(_EMBEDDING_TABLE),
        [
            {
                "face_image_id": int(fid),
                "model_version_id": model_version_id,
                "vector_ref": ref,
                "face_rank": (faces or {}).get(int(fid), (None, None))[0],
                "chosen_by": (faces or {}).get(int(fid), (None, None))[1],
            }
            for fid, ref in rows
        ],
    )


def choices_to_revisit(
    *, session: Session, model_version_id: int, chosen_by: Sequence[str]
) -> list[tuple[int, str, str, int | None, str | None]]:
    """(face_image_id, source_uri, sha256, face_rank, chosen_by) of live images whose face was
    chosen among several (``chosen_by``) before their person's newest vector under this model:
    the person gained photos since, so the choice may change. By id."""
    newer, owner = aliased(Embedding), aliased(FaceImage)
    gained = (
        select(newer.id)
        .join(owner, owner.id == newer.face_image_id)
        .where(
            newer.model_version_id == model_version_id,
            owner.identity_id == FaceImage.identity_id,
            newer.created_at > Embedding.created_at,
        )
    )
    stmt = (
        select(
            FaceImage.id,
            FaceImage.source_uri,
            FaceImage.sha256,
            Embedding.face_rank,
            Embedding.chosen_by,
        )
        .join(Embedding, Embedding.face_image_id == FaceImage.id)
        .where(
            Embedding.model_version_id == model_version_id,
            Embedding.chosen_by.in_(list(chosen_by)),
            is_live(),
            gained.exists(),
        )
        .order_by(FaceImage.id)
    )
    return [(int(i), str(u), str(h), r, c) for i, u, h, r, c in session.execute(stmt)]


def agreed_face_ranks(*, session: Session, model_version_id: int) -> dict[int, int]:
    """face_image id -> the rank of the face this model embeds for it, where it chose among
    several by agreement with the person's other photos (``chosen_by`` consistent)."""
    stmt = select(Embedding.face_image_id, Embedding.face_rank).where(
        Embedding.model_version_id == model_version_id,
        Embedding.chosen_by == "consistent",
        Embedding.face_rank.is_not(None),
    )
    return {int(f): int(r) for f, r in session.execute(stmt)}


def replace_embeddings(
    *,
    session: Session,
    model_version_id: int,
    rows: Sequence[tuple[int, str | None, int | None, str | None]],
    at: datetime,
) -> None:
    """(face_image_id, vector_ref or None to keep it, face_rank, chosen_by): the face chosen
    again for stored vectors. All take the one time ``at`` as ``created_at`` (a person's
    photos chosen together are then none newer than another), which tells the next index
    version to replace these ids' vectors (:func:`renewed_since`)."""
    for fid, ref, rank, why in rows:
        values: dict[str, object] = {"face_rank": rank, "chosen_by": why, "created_at": at}
        if ref is not None:
            values["vector_ref"] = ref
        session.execute(
            update(Embedding)
            .where(
                Embedding.face_image_id == int(fid),
                Embedding.model_version_id == model_version_id,
            )
            .values(**values)
        )


def renewed_since(*, session: Session, model_version_id: int, since: datetime) -> list[int]:
    """Face image ids whose vector row under this model was written after ``since`` (new ones,
    and stored ones whose face was chosen again), by id."""
    stmt = (
        select(Embedding.face_image_id)
        .where(Embedding.model_version_id == model_version_id, Embedding.created_at > since)
        .order_by(Embedding.face_image_id)
    )
    return [int(i) for i in session.scalars(stmt)]


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


def count_live_identities(*, session: Session) -> int:
    stmt = select(func.count(func.distinct(FaceImage.identity_id))).where(
        FaceImage.id.in_(live_image_ids())
    )
    return int(session.scalar(stmt) or 0)


def identity_vector_refs(
    *,
    session: Session,
    model_version_id: int,
    identity_ids: Sequence[int],
    chosen_by: Sequence[str] | None = None,
) -> dict[int, list[str]]:
    """identity_id -> vector refs of its live images under this model (for mean templates);
    ``chosen_by`` keeps only the embeddings whose face was taken for those reasons."""
    if not identity_ids:
        return {}
    # The identities' live images first (their identity index), then each one's vector row (the
    # unique key): SQLite would otherwise walk every vector row of the model (1 s at 1M, 2 ms so)
    theirs = select(FaceImage.id).where(
        FaceImage.identity_id.in_(set(int(i) for i in identity_ids)), is_live()
    )
    stmt = (
        select(FaceImage.identity_id, Embedding.vector_ref)
        .join(Embedding, Embedding.face_image_id == FaceImage.id)
        .where(Embedding.face_image_id.in_(theirs), Embedding.model_version_id == model_version_id)
        .order_by(FaceImage.id)
    )
    if chosen_by is not None:
        stmt = stmt.where(Embedding.chosen_by.in_(list(chosen_by)))
    out: dict[int, list[str]] = {}
    for ident, ref in session.execute(stmt):
        out.setdefault(int(ident), []).append(str(ref))
    return out


def identity_ids_of(*, session: Session, face_image_ids: Sequence[int]) -> dict[int, int]:
    """face_image id -> its identity id, for these ids (ids without an identity are absent)."""
    ids = sorted({int(i) for i in face_image_ids})
    out: dict[int, int] = {}
    for start in range(0, len(ids), 10_000):
        stmt = select(FaceImage.id, FaceImage.identity_id).where(
            FaceImage.id.in_(ids[start : start + 10_000]), FaceImage.identity_id.is_not(None)
        )
        out.update((int(f), int(i)) for f, i in session.execute(stmt))
    return out


def image_owner_table(*, session: Session) -> tuple[list[int], list[int]]:
    """(face_image ids, their identity ids) of every image that has an identity, by image id.

    Read once per loaded index version: the identifier then finds the owner of a search hit in
    memory instead of asking SQL per search.
    """
    stmt = (
        select(FaceImage.id, FaceImage.identity_id)
        .where(FaceImage.identity_id.is_not(None))
        .order_by(FaceImage.id)
    )
    rows = session.execute(stmt).all()
    return [int(f) for f, _ in rows], [int(i) for _, i in rows]


def identity_names(*, session: Session, through_id: int) -> dict[int, str]:
    """identity id -> name of the identities with ``id <= through_id``."""
    stmt = select(Identity.id, Identity.name).where(Identity.id <= through_id)
    return {int(i): str(n) for i, n in session.execute(stmt)}


def identities_fingerprint(*, session: Session, through_id: int) -> tuple[int, str]:
    """(count, newest created_at) of the identities with ``id <= through_id``: one aggregate
    that changes whenever one of them is removed (count) or an id is reused by a newer row
    (created_at), so a poller learns cheaply that it must read the names again."""
    stmt = select(func.count(Identity.id), func.max(Identity.created_at)).where(
        Identity.id <= through_id
    )
    count, newest = session.execute(stmt).one()
    return int(count or 0), str(newest)
