"""Identities a page at a time (the HTTP API lists galleries of any size). Never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from storage.identities import IdentitySummary
from storage.models import FaceImage, Identity


def _named(name_contains: str | None) -> list[ColumnElement[bool]]:
    """Only identities whose name contains the text (case-insensitive; ``%`` and ``_`` are
    literal characters here, not wildcards); no condition for no text."""
    if not name_contains:
        return []
    return [func.lower(Identity.name).contains(name_contains.lower(), autoescape=True)]


def count_identities(*, session: Session, name_contains: str | None = None) -> int:
    return int(
        session.scalar(select(func.count()).select_from(Identity).where(*_named(name_contains)))
        or 0
    )


def identity_page(
    *, session: Session, offset: int, limit: int, name_contains: str | None = None
) -> list[IdentitySummary]:
    """Identities ordered by name (stable pages), with accepted and rejected image counts.

    The page of names is chosen first on the unique name index, then only its images are
    counted, so a page costs the same whatever the gallery's size.
    """
    if offset < 0 or limit < 0:
        raise ValueError(f"offset and limit must be >= 0, got {offset}, {limit}")
    page = (
        select(Identity.id, Identity.name)
        .where(*_named(name_contains))
        .order_by(Identity.name)
        .offset(offset)
        .limit(limit)
    )
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


def first_images(*, session: Session, identity_ids: Sequence[int]) -> dict[int, str]:
    """identity id -> sha256 of its first accepted image (the face a list shows for it)."""
    if not identity_ids:
        return {}
    first = (
        select(FaceImage.identity_id, func.min(FaceImage.id).label("image_id"))
        .where(FaceImage.identity_id.in_(list(identity_ids)), FaceImage.status == "accepted")
        .group_by(FaceImage.identity_id)
        .subquery()
    )
    stmt = select(first.c.identity_id, FaceImage.sha256).join(
        FaceImage, FaceImage.id == first.c.image_id
    )
    return {int(i): str(h) for i, h in session.execute(stmt) if h is not None}
