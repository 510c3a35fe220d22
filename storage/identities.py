"""Reading and writing identities. Functions take a Session and never commit."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from storage.models import FaceImage, Identity, ImageConflict


class UnknownIdentityError(LookupError):
    """An identity name that is not in the gallery."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"identity {name!r} is not in the gallery; `siamid gallery list` shows the known names"
        )
        self.name = name


@dataclass(frozen=True)
class IdentitySummary:
    id: int
    name: str
    accepted: int
    rejected: int


def get_or_create_identity(*, session: Session, name: str) -> tuple[Identity, bool]:
    """The identity with this exact name, created if absent; the flag says whether it was new."""
    found = session.scalars(select(Identity).where(Identity.name == name)).one_or_none()
    if found is not None:
        return found, False
    identity = Identity(name=name, attributes={})
    session.add(identity)
    session.flush()
    return identity, True


def find_identity(*, session: Session, name: str) -> Identity:
    found = session.scalars(select(Identity).where(Identity.name == name)).one_or_none()
    if found is None:
        raise UnknownIdentityError(name)
    return found


def list_identities(*, session: Session) -> list[IdentitySummary]:
    stmt = (
        select(
            Identity.id,
            Identity.name,
            func.count(FaceImage.id).filter(FaceImage.status == "accepted"),
            func.count(FaceImage.id).filter(FaceImage.status == "rejected"),
        )
        .outerjoin(FaceImage, FaceImage.identity_id == Identity.id)
        .group_by(Identity.id, Identity.name)
        .order_by(Identity.name)
    )
    return [IdentitySummary(i, n, int(a or 0), int(r or 0)) for i, n, a, r in session.execute(stmt)]


def remove_identity(*, session: Session, name: str) -> list[int]:
    """Delete the identity, its images and conflicts; returns the deleted face_image ids.

    The caller uses the ids to drop the vectors from the next published index.
    """
    identity = find_identity(session=session, name=name)
    image_ids = list(
        session.scalars(select(FaceImage.id).where(FaceImage.identity_id == identity.id))
    )
    session.execute(delete(ImageConflict).where(ImageConflict.claimed_identity_id == identity.id))
    if image_ids:
        # Embedding rows go with their images (ON DELETE CASCADE on every backend we run).
        session.execute(delete(ImageConflict).where(ImageConflict.face_image_id.in_(image_ids)))
        session.execute(delete(FaceImage).where(FaceImage.id.in_(image_ids)))
    session.delete(identity)
    session.flush()
    return image_ids


def existing_names(*, session: Session, names: list[str]) -> set[str]:
    """Which of these names are enrolled identities (chunked IN queries on the unique key)."""
    found: set[str] = set()
    for i in range(0, len(names), 500):
        chunk = names[i : i + 500]
        found.update(session.scalars(select(Identity.name).where(Identity.name.in_(chunk))))
    return found
