"""One person of the gallery as plain data: the view that ``GET /v1/identities/{name}`` (its
schema, :class:`pipelines.api.schemas.Identity`, is built from it) and ``siamid gallery show``
both present, so the two cannot drift apart."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from pipelines.services.runtime import Runtime


@dataclass(frozen=True)
class ImageView:
    id: int
    status: str
    sha256: str | None
    width: int | None
    height: int | None
    mode: str | None
    reject_reason: str | None
    imported_at: datetime
    source: str  # where it was imported from: a server path, which the HTTP API leaves out


@dataclass(frozen=True)
class IdentityView:
    id: int
    name: str
    created_at: datetime
    attributes: dict[str, Any]
    images: list[ImageView]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (times in ISO 8601)."""
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        for im in out["images"]:
            im["imported_at"] = im["imported_at"].isoformat()
        return out


def identity_view(rt: Runtime, name: str) -> IdentityView:
    """One identity and its images, by id (raises ``UnknownIdentityError``)."""
    from storage.identities import find_identity
    from storage.images import images_of_identity

    with rt.sessions() as s:
        ident = find_identity(session=s, name=name)
        images = [
            ImageView(
                im.id,
                im.status,
                im.sha256,
                im.width,
                im.height,
                im.mode,
                im.reject_reason,
                im.imported_at,
                im.source_uri,
            )
            for im in images_of_identity(session=s, identity_id=ident.id)
        ]
        return IdentityView(ident.id, ident.name, ident.created_at, dict(ident.attributes), images)
