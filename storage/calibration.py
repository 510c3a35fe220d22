"""Calibrated reject thresholds, stored with the model and index version. Never commits."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Calibration


def add_calibration(
    *,
    session: Session,
    model_version_id: int,
    index_version_id: int | None,
    target_fpir: float,
    threshold: float,
    realised_fpir: float,
    nonmated_searches: int,
    gallery_identities: int,
    gallery_images: int,
    details: dict[str, Any],
) -> Calibration:
    row = Calibration(
        model_version_id=model_version_id,
        index_version_id=index_version_id,
        target_fpir=target_fpir,
        threshold=threshold,
        realised_fpir=realised_fpir,
        nonmated_searches=nonmated_searches,
        gallery_identities=gallery_identities,
        gallery_images=gallery_images,
        details=details,
    )
    session.add(row)
    session.flush()
    return row


def latest_calibration(*, session: Session, model_version_id: int) -> Calibration | None:
    stmt = (
        select(Calibration)
        .where(Calibration.model_version_id == model_version_id)
        .order_by(Calibration.created_at.desc(), Calibration.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).one_or_none()


def set_calibration_details(
    *, session: Session, calibration_id: int, details: dict[str, Any]
) -> None:
    """Replace a calibration's ``details`` (what was computed for it since, e.g. its
    threshold set again for a grown gallery)."""
    row = session.get(Calibration, calibration_id)
    if row is None:
        raise KeyError(f"no calibration {calibration_id}")
    row.details = details
    session.flush()
