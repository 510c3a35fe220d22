"""Identities a page at a time (the HTTP API lists galleries of any size). Never commits."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.identities import IdentitySummary
from storage.models import FaceImage, Identity


def count_identities(*, session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Identity)) or 0)


def identity_page(*, session: Session, offset: int, limit: int) -> list[IdentitySummary]:
    """Identities ordered by name (stable pages), with accepted and rejected image counts.

    The page of names is chosen first on the unique name index, then only its images are
    counted, so a page costs the same whatever the gallery's size.
    """
    if offset < 0 or limit < 0:
        raise ValueError(f"offset and limit must be >= 0, got {offset}, {limit}")
    page = select(Identity.id, Identity.name).order_by(Identity.name).offset(offset).limit(limit)
    page_sq = page.subquery()
    stmt = (
        select(
            page_sq.c.id,
            page_sq.c.name,
            func.count(FaceImage.id).filter(FaceImage.status == "accepted"),
            func.count(FaceImage.id).filter(FaceImage.status == "rejected"),
        )
        .outerjoin(FaceImage, FaceImage.identity_id == page_sq.c.id)
        .group_by(page_sq.c.id, page_sq.c.name)
        .order_by(page_sq.c.name)
    )
    return [IdentitySummary(i, n, int(a or 0), int(r or 0)) for i, n, a, r in session.execute(stmt)]
