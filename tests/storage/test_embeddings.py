"""What is pending (to embed, to detect), the live gallery, keyset pages and embedding rows, on
a small gallery with conflicts, removed and unset identities and partly embedded models.

The pending and live queries are correlated ``NOT EXISTS`` (anti-joins): PostgreSQL runs
``NOT IN (SELECT ...)`` quadratically once the subquery outgrows work_mem (841 s for the
re-check with nothing left at 200,000 vectors). Their rows are checked against the ``NOT IN``
statements they replace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from pipelines.services.paging import WorkPlan, keyset_pages
from storage.embeddings import (
    _to_embed,
    add_embeddings,
    count_images_to_embed,
    count_live_identities,
    count_live_images,
    identity_vector_refs,
    images_to_embed,
    live_embeddings,
)
from storage.faces import (
    _to_detect,
    add_detection,
    count_images_to_detect,
    images_to_detect,
)
from storage.identities import get_or_create_identity, remove_identity
from storage.images import ImageRecord, add_image, labelled_images, live_image_ids, record_conflict
from storage.models import Embedding, FaceDetection, FaceImage, ImageConflict, ModelVersion

HOG = "dlib-hog"


@dataclass
class Gallery:
    ids: dict[str, int]  # image name -> face_image_id
    people: dict[str, int]  # identity name -> identity_id
    m1: int  # a model with some vectors
    m2: int  # a model with none

    def of(self, *names: str) -> list[int]:
        return sorted(self.ids[n] for n in names)


def _model(s: Session, name: str) -> int:
    model = ModelVersion(
        name=name,
        architecture="siamese",
        config={},
        checkpoint_path="",
        checkpoint_sha256="0" * 64,
        embedding_dim=2,
        distance="l2",
        margin=1.0,
    )
    s.add(model)
    s.flush()
    return int(model.id)


@pytest.fixture
def gallery(engine: Engine) -> Gallery:
    """Ada: 4 accepted images, ada3 claimed by Bob too (a conflict), ada4 claimed by Dan (live
    once Dan is removed); Bob: 2 accepted and 1 rejected; Cy: 2 accepted (removed later);
    ``loose``: accepted with no identity. m1 has vectors of ada1, ada3 (conflicted), bob1 and
    cy1; m2 has none. HOG v1 has seen ada1, ada3 and loose."""
    ids: dict[str, int] = {}
    with Session(engine) as s, s.begin():
        people = {
            n: get_or_create_identity(session=s, name=n)[0].id for n in ("Ada", "Bob", "Cy", "Dan")
        }
        owners = {
            "ada1": "Ada",
            "ada2": "Ada",
            "bob1": "Bob",
            "ada3": "Ada",
            "cy1": "Cy",
            "loose": None,
            "ada4": "Ada",
            "bob2": "Bob",
            "cy2": "Cy",
        }
        for k, (name, owner) in enumerate(owners.items()):
            record = ImageRecord(
                source_uri=f"{name}.jpg",
                sha256=f"{k:064x}",
                identity_id=None if owner is None else people[owner],
            )
            ids[name] = add_image(session=s, record=record).id
        rejected = ImageRecord(
            source_uri="bob-bad.jpg",
            sha256=None,
            identity_id=people["Bob"],
            reject_reason="unreadable",
        )
        ids["bob-bad"] = add_image(session=s, record=rejected).id
        images = {i.id: i for i in s.scalars(select(FaceImage))}
        for image, claimant in (("ada3", "Bob"), ("ada4", "Dan")):
            assert record_conflict(
                session=s,
                image=images[ids[image]],
                claimed_identity_id=people[claimant],
                source_uri=f"{claimant}/{image}.jpg",
            )
        m1, m2 = _model(s, "m1"), _model(s, "m2")
        add_embeddings(
            session=s,
            model_version_id=m1,
            rows=[(ids[n], f"shard-0#{k}") for k, n in enumerate(("ada1", "ada3", "bob1", "cy1"))],
        )
        for name in ("ada1", "ada3", "loose"):
            add_detection(
                session=s,
                face_image_id=ids[name],
                detector=HOG,
                detector_version="v1",
                outcome="no_face",
                faces=[],
            )
    return Gallery(ids, people, m1, m2)


# ------------------------------------------------------------------ the NOT IN statements replaced


def _old_live() -> Any:
    return select(FaceImage.id).where(
        FaceImage.status == "accepted",
        FaceImage.identity_id.is_not(None),
        FaceImage.id.not_in(select(ImageConflict.face_image_id)),
    )


def _old_to_embed(s: Session, model_version_id: int) -> list[tuple[int, str, str]]:
    has_vector = select(Embedding.face_image_id).where(
        Embedding.model_version_id == model_version_id
    )
    stmt = (
        select(FaceImage.id, FaceImage.source_uri, FaceImage.sha256)
        .where(FaceImage.id.in_(_old_live()), FaceImage.id.not_in(has_vector))
        .order_by(FaceImage.id)
    )
    return [(int(i), str(u), str(h)) for i, u, h in s.execute(stmt)]


def _old_to_detect(s: Session, version: str) -> list[tuple[int, str, str | None]]:
    seen = select(FaceDetection.face_image_id).where(
        FaceDetection.detector == HOG, FaceDetection.detector_version == version
    )
    stmt = (
        select(FaceImage.id, FaceImage.source_uri, FaceImage.sha256)
        .where(FaceImage.status == "accepted", FaceImage.id.not_in(seen))
        .order_by(FaceImage.id)
    )
    return [(int(i), str(u), None if h is None else str(h)) for i, u, h in s.execute(stmt)]


def _ids(rows: list[tuple[Any, ...]]) -> list[int]:
    return [int(r[0]) for r in rows]


# ------------------------------------------------------------------ the SQL


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=["pg", "sqlite"])
def test_pending_and_live_queries_are_not_exists_never_not_in(dialect: Any) -> None:
    statements = {
        "images_to_embed": _to_embed(7),
        "images_to_detect": _to_detect(HOG, "v1"),
        "live_image_ids": live_image_ids(),
        # nested, as the callers use it: the conflict test must correlate to the inner face_image
        "live_embeddings": select(Embedding.face_image_id).where(
            Embedding.face_image_id.in_(live_image_ids())
        ),
        "labelled_images": select(FaceImage.id).where(FaceImage.id.in_(live_image_ids())),
    }
    for name, stmt in statements.items():
        sql = " ".join(str(stmt.compile(dialect=dialect)).split())
        assert "NOT (EXISTS" in sql, (name, sql)
        assert "NOT IN" not in sql.upper(), (name, sql)
    conflict = "FROM image_conflict WHERE image_conflict.face_image_id = face_image.id"
    nested = " ".join(str(statements["labelled_images"].compile(dialect=dialect)).split())
    assert nested.count("FROM face_image") == 2 and conflict in nested, nested
    embed = " ".join(str(statements["images_to_embed"].compile(dialect=dialect)).split())
    assert "WHERE embedding.face_image_id = face_image.id AND embedding.model_version_id" in embed
    assert embed.count("FROM face_image") == 1, embed  # no self semi-join: keyset pages are cheap
    # a page's or a re-check's id bounds reach the subqueries (index ranges, not full scans)
    page = " ".join(str(_to_embed(7, after_id=10, through_id=20).compile(dialect=dialect)).split())
    for column in ("face_image.id", "embedding.face_image_id", "image_conflict.face_image_id"):
        assert f"{column} >" in page and f"{column} <=" in page, (column, page)
    page = " ".join(str(_to_detect(HOG, "v1", after_id=10).compile(dialect=dialect)).split())
    assert "face_image.id >" in page and "face_detection.face_image_id >" in page, page


def test_the_statements_sent_to_the_database_have_no_not_in(
    engine: Engine, gallery: Gallery
) -> None:
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with Session(engine) as s:
            images_to_embed(session=s, model_version_id=gallery.m1, after_id=0, limit=2)
            images_to_embed(session=s, model_version_id=gallery.m1, among=[1, 2])
            count_images_to_embed(session=s, model_version_id=gallery.m1)
            images_to_detect(session=s, detector=HOG, detector_version="v1", limit=2)
            count_images_to_detect(session=s, detector=HOG, detector_version="v1")
            count_live_images(session=s)
            live_embeddings(session=s, model_version_id=gallery.m1)
            labelled_images(session=s)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    selects = [q for q in sent if q.upper().startswith("SELECT") and "face_image" in q]
    assert len(selects) == 8, sent
    for q in selects:
        assert "NOT (EXISTS" in q and "NOT IN" not in q.upper(), q


# ------------------------------------------------------------------ the rows


def test_pending_and_live_rows_are_those_of_the_not_in_statements(
    engine: Engine, gallery: Gallery
) -> None:
    g = gallery
    live = g.of("ada1", "ada2", "bob1", "cy1", "bob2", "cy2")
    with Session(engine) as s, s.begin():
        assert sorted(s.scalars(live_image_ids())) == sorted(s.scalars(_old_live())) == live
        assert count_live_images(session=s) == len(live)
        assert count_live_identities(session=s) == 3
        assert _ids(images_to_embed(session=s, model_version_id=g.m1)) == g.of(
            "ada2", "cy2", "bob2"
        )
        assert _ids(images_to_embed(session=s, model_version_id=g.m2)) == live
        for m in (g.m1, g.m2):
            assert images_to_embed(session=s, model_version_id=m) == _old_to_embed(s, m)
        assert images_to_embed(session=s, model_version_id=g.m1)[0] == (
            g.ids["ada2"],
            "ada2.jpg",
            f"{1:064x}",
        )
        # a chunk's re-check: its own ids only, conflicted or rejected ones never pending
        among = g.of("ada1", "ada2", "ada3", "bob-bad", "cy2")
        assert _ids(images_to_embed(session=s, model_version_id=g.m1, among=among)) == g.of(
            "ada2", "cy2"
        )
        assert _ids(images_to_embed(session=s, model_version_id=g.m1, among=[])) == []
        shuffled = [g.ids["cy2"], g.ids["ada2"], g.ids["ada2"], 987654]  # unsorted, repeated
        assert _ids(images_to_embed(session=s, model_version_id=g.m1, among=shuffled)) == g.of(
            "ada2", "cy2"
        )
        page = images_to_embed(
            session=s, model_version_id=g.m1, among=among, after_id=g.ids["ada2"], limit=5
        )
        assert _ids(page) == g.of("cy2")
        detect_v1 = g.of("ada2", "bob1", "cy1", "ada4", "bob2", "cy2")
        accepted = sorted(detect_v1 + g.of("ada1", "ada3", "loose"))
        assert _ids(images_to_detect(session=s, detector=HOG, detector_version="v1")) == detect_v1
        assert _ids(images_to_detect(session=s, detector=HOG, detector_version="v2")) == accepted
        for v in ("v1", "v2"):
            rows = images_to_detect(session=s, detector=HOG, detector_version=v)
            assert rows == _old_to_detect(s, v)
        assert _ids(live_embeddings(session=s, model_version_id=g.m1)) == g.of(
            "ada1", "bob1", "cy1"
        )
        assert [i for i, _, _ in labelled_images(session=s)] == [  # by name, then id
            g.ids[n] for n in ("ada1", "ada2", "bob1", "bob2", "cy1", "cy2")
        ]
        refs = identity_vector_refs(
            session=s, model_version_id=g.m1, identity_ids=[g.people["Ada"], g.people["Bob"]]
        )
        assert refs == {g.people["Ada"]: ["shard-0#0"], g.people["Bob"]: ["shard-0#2"]}

    # Removing Cy drops its images (and vectors); removing Dan clears the conflict on ada4;
    # resolving ada3's conflict by hand makes it live, already embedded under m1.
    with Session(engine) as s, s.begin():
        remove_identity(session=s, name="Cy")
        remove_identity(session=s, name="Dan")
        s.execute(delete(ImageConflict).where(ImageConflict.face_image_id == g.ids["ada3"]))
    live = g.of("ada1", "ada2", "bob1", "ada3", "ada4", "bob2")
    with Session(engine) as s, s.begin():
        assert sorted(s.scalars(live_image_ids())) == sorted(s.scalars(_old_live())) == live
        assert count_live_identities(session=s) == 2
        assert _ids(images_to_embed(session=s, model_version_id=g.m1)) == g.of(
            "ada2", "ada4", "bob2"
        )
        assert _ids(images_to_embed(session=s, model_version_id=g.m2)) == live
        for m in (g.m1, g.m2):
            assert images_to_embed(session=s, model_version_id=m) == _old_to_embed(s, m)
            todo = images_to_embed(session=s, model_version_id=m)
            assert count_images_to_embed(session=s, model_version_id=m) == (len(todo), todo[-1][0])
        for v in ("v1", "v2"):
            rows = images_to_detect(session=s, detector=HOG, detector_version=v)
            assert rows == _old_to_detect(s, v)
            assert count_images_to_detect(session=s, detector=HOG, detector_version=v) == (
                len(rows),
                rows[-1][0],
            )
        assert _ids(live_embeddings(session=s, model_version_id=g.m1)) == g.of(
            "ada1", "ada3", "bob1"
        )

        # all embedded: nothing pending, the count says so
        add_embeddings(
            session=s,
            model_version_id=g.m1,
            rows=[(i, f"shard-1#{k}") for k, i in enumerate(g.of("ada2", "ada4", "bob2"))],
        )
        assert images_to_embed(session=s, model_version_id=g.m1) == []
        assert count_images_to_embed(session=s, model_version_id=g.m1) == (0, None)
        assert count_images_to_detect(session=s, detector=HOG, detector_version="v1")[0] == 4


# ------------------------------------------------------------------ keyset pages


def test_keyset_pages_are_the_unpaged_rows_in_order(engine: Engine, gallery: Gallery) -> None:
    g = gallery
    with Session(engine) as s, s.begin():
        whole = {
            "m1": images_to_embed(session=s, model_version_id=g.m1),
            "m2": images_to_embed(session=s, model_version_id=g.m2),
            "v1": images_to_detect(session=s, detector=HOG, detector_version="v1"),
            "v3": images_to_detect(session=s, detector=HOG, detector_version="v3"),
        }

        def reader(key: str) -> Any:
            def read(after_id: int | None, limit: int) -> list[tuple[Any, ...]]:
                if key.startswith("m"):
                    model = g.m1 if key == "m1" else g.m2
                    return list(
                        images_to_embed(
                            session=s, model_version_id=model, after_id=after_id, limit=limit
                        )
                    )
                return list(
                    images_to_detect(
                        session=s,
                        detector=HOG,
                        detector_version=key,
                        after_id=after_id,
                        limit=limit,
                    )
                )

            return read

        for key, rows in whole.items():
            assert len(rows) >= 3, key
            for size in (1, 2, 3, len(rows), len(rows) + 5):
                # by hand: after_id / limit
                paged: list[tuple[Any, ...]] = []
                after = None
                while page := reader(key)(after, size):
                    assert len(page) <= size
                    paged += page
                    after = page[-1][0]
                assert paged == rows, (key, size)
                # the runs' pages: the chunks the one list made
                pages = list(keyset_pages(reader(key), size, last_id=rows[-1][0]))
                assert pages == [rows[i : i + size] for i in range(0, len(rows), size)]
                # up to an id: later rows (imported during a run) wait for the next run
                cut = rows[1][0]
                pages = list(keyset_pages(reader(key), size, last_id=cut))
                assert [r for p in pages for r in p] == rows[:2]
                assert all(0 < len(p) <= size for p in pages)
            assert list(keyset_pages(reader(key), 2, last_id=None)) == []
        # a page in the middle
        m2 = whole["m2"]
        page = images_to_embed(session=s, model_version_id=g.m2, after_id=m2[1][0], limit=2)
        assert page == m2[2:4]
        with pytest.raises(ValueError, match="at least 1"):
            images_to_embed(session=s, model_version_id=g.m2, limit=0)
        with pytest.raises(ValueError, match="at least 1"):
            images_to_detect(session=s, detector=HOG, detector_version="v1", limit=0)
    with pytest.raises(ValueError, match="at least 1"):
        keyset_pages(reader("m1"), 0, last_id=1)
    assert WorkPlan(5, 9).chunk_count(2) == 3 and WorkPlan(0, None).chunk_count(2) == 0


def test_pages_read_while_earlier_pages_are_embedded_are_the_first_listing(
    engine: Engine, gallery: Gallery
) -> None:
    """What a run does: embed a page, then read the next after its last id."""
    g = gallery
    with Session(engine) as s:
        todo = images_to_embed(session=s, model_version_id=g.m2)
        count, last_id = count_images_to_embed(session=s, model_version_id=g.m2)
    assert (count, last_id) == (len(todo), todo[-1][0])

    def read(after_id: int | None, limit: int) -> list[tuple[int, str, str]]:
        with Session(engine) as s:
            return images_to_embed(session=s, model_version_id=g.m2, after_id=after_id, limit=limit)

    seen = []
    for k, page in enumerate(keyset_pages(read, 2, last_id=last_id)):
        seen.append(page)
        with Session(engine) as s, s.begin():
            add_embeddings(
                session=s,
                model_version_id=g.m2,
                rows=[(i, f"s{k}#{j}") for j, (i, _, _) in enumerate(page)],
            )
            if k == 0:  # an image imported during the run: the next run's
                late = ImageRecord(
                    source_uri="late.jpg", sha256="f" * 64, identity_id=g.people["Bob"]
                )
                add_image(session=s, record=late)
    assert seen == [todo[i : i + 2] for i in range(0, len(todo), 2)]
    with Session(engine) as s:
        assert [u for _, u, _ in images_to_embed(session=s, model_version_id=g.m2)] == ["late.jpg"]


# ------------------------------------------------------------------ add_embeddings


def test_add_embeddings_rows_are_readable_in_the_session_and_refuse_a_duplicate(
    engine: Engine, gallery: Gallery
) -> None:
    g = gallery
    with Session(engine) as s, s.begin():
        add_embeddings(session=s, model_version_id=g.m2, rows=[])
        add_embeddings(
            session=s,
            model_version_id=g.m2,
            rows=[(g.ids["ada1"], "shard-9#0"), (g.ids["bob2"], "shard-9#1")],
        )
        # visible to the same session, before any commit
        assert live_embeddings(session=s, model_version_id=g.m2) == [
            (g.ids["ada1"], "shard-9#0"),
            (g.ids["bob2"], "shard-9#1"),
        ]
        rows = s.scalars(
            select(Embedding).where(Embedding.model_version_id == g.m2).order_by(Embedding.id)
        ).all()
        assert [(r.face_image_id, r.vector_ref) for r in rows] == [
            (g.ids["ada1"], "shard-9#0"),
            (g.ids["bob2"], "shard-9#1"),
        ]
        assert all(r.created_at is not None and r.id is not None for r in rows)
        assert g.ids["ada1"] not in _ids(images_to_embed(session=s, model_version_id=g.m2))

        # a second row for (image, model): in another call, or twice in one call
        with pytest.raises(IntegrityError), s.begin_nested():
            add_embeddings(session=s, model_version_id=g.m2, rows=[(g.ids["ada1"], "again#0")])
        with pytest.raises(IntegrityError), s.begin_nested():
            add_embeddings(
                session=s,
                model_version_id=g.m2,
                rows=[(g.ids["ada2"], "x#0"), (g.ids["ada2"], "x#1")],
            )
        # an image that is not there
        with pytest.raises(IntegrityError), s.begin_nested():
            add_embeddings(session=s, model_version_id=g.m2, rows=[(987654, "x#2")])
        # the failed calls left nothing behind
        count = s.scalar(
            select(func.count()).select_from(Embedding).where(Embedding.model_version_id == g.m2)
        )
        assert count == 2
    with Session(engine) as s, s.begin():
        rows = s.execute(
            select(Embedding.face_image_id, Embedding.created_at)
            .where(Embedding.model_version_id == g.m2)
            .order_by(Embedding.face_image_id)
        ).all()
        assert [r[0] for r in rows] == g.of("ada1", "bob2") and all(r[1] for r in rows)
    # rolled back with the session's transaction
    with Session(engine) as s:
        s.begin()
        add_embeddings(session=s, model_version_id=g.m2, rows=[(g.ids["ada2"], "y#0")])
        assert len(live_embeddings(session=s, model_version_id=g.m2)) == 3
        s.rollback()
        assert len(live_embeddings(session=s, model_version_id=g.m2)) == 2
