"""The queries the web console adds: names that contain a text (case-insensitive, ``%`` and
``_`` literal), each person's first accepted photo, the newest jobs, removing one image."""

from __future__ import annotations

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from storage.identities import get_or_create_identity
from storage.identity_pages import count_identities, first_images, identity_page
from storage.images import ImageRecord, add_image, remove_image
from storage.jobs import add_job, recent_jobs
from storage.models import FaceImage


def test_console_queries(engine: Engine) -> None:
    names = ["Ada Lovelace", "ada_b", "Adam 100%", "Grace Hopper"]
    with Session(engine) as s, s.begin():
        ids = {n: get_or_create_identity(session=s, name=n)[0].id for n in names}
        add_image(
            session=s,
            record=ImageRecord("a", None, ids["Ada Lovelace"], reject_reason="no_face"),
        )
        first = add_image(session=s, record=ImageRecord("b", "b" * 64, ids["Ada Lovelace"])).id
        add_image(session=s, record=ImageRecord("c", "c" * 64, ids["Ada Lovelace"]))
        for n, job in enumerate(("1" * 32, "2" * 32, "3" * 32)):
            add_job(session=s, job_id=job, kind="enrol", identity=str(n), owner="h:1")
    with Session(engine) as s, s.begin():
        assert count_identities(session=s, name_contains="ADA") == 3
        assert count_identities(session=s, name_contains="a_") == 1  # "_" is not a wildcard
        assert count_identities(session=s, name_contains="0%") == 1
        assert count_identities(session=s) == 4
        page = identity_page(session=s, offset=0, limit=5, name_contains="ada")
        assert {p.name for p in page} == set(names[:3])
        assert len(identity_page(session=s, offset=1, limit=5, name_contains="ada")) == 2
        assert first_images(session=s, identity_ids=list(ids.values())) == {
            ids["Ada Lovelace"]: "b" * 64
        }
        assert len(recent_jobs(session=s, limit=2)) == 2
        assert remove_image(session=s, image_id=first) is not None
        assert remove_image(session=s, image_id=first) is None
        left = s.scalar(select(func.count()).select_from(FaceImage))
    assert left == 2
