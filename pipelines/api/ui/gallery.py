"""What the console shows of the gallery: pages of people with a face, a person's photos with
their face boxes and detection outcome, what became of each enrolled photo, photo removal.

Reads go through the storage functions the API uses; nothing here changes how enrolment,
detection or indexing work. Photos are addressed by their sha256 only (the content address),
never by a path or a client's file name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.api import gallery as api_gallery
from pipelines.api.ui import thumbs
from pipelines.services.models import ModelRef
from pipelines.services.runtime import Runtime
from storage.identities import IdentitySummary

logger = logging.getLogger(__name__)

PAGE_SIZE = 24


@dataclass(frozen=True)
class PersonRow:
    id: int
    name: str
    accepted: int
    rejected: int
    face: str | None  # sha256 of the photo shown for the person


@dataclass(frozen=True)
class PeoplePage:
    rows: list[PersonRow]
    total: int
    page: int
    pages: int
    query: str


@dataclass(frozen=True)
class Box:
    """A face box as shares of the photo's width and height (percent), ready to draw."""

    left: float
    top: float
    width: float
    height: float
    chosen: bool


@dataclass(frozen=True)
class PhotoView:
    id: int
    sha256: str | None
    status: str
    width: int | None
    height: int | None
    outcome: str  # embedded, waiting, or why not: a reject reason or a detection outcome
    detail: str | None = None
    boxes: list[Box] = field(default_factory=list)


@dataclass(frozen=True)
class PersonView:
    name: str
    photos: list[PhotoView]
    detect: bool  # the served model reads detected faces (boxes are drawn)


def people_page(rt: Runtime, query: str, page: int, size: int = PAGE_SIZE) -> PeoplePage:
    """One page of people by name, optionally only those whose name contains ``query``."""
    from storage.identity_pages import count_identities, first_images, identity_page

    query = query.strip()
    with rt.sessions() as s:
        total = count_identities(session=s, name_contains=query or None)
        pages = max(1, -(-total // size))
        page = min(max(1, page), pages)
        items: list[IdentitySummary] = identity_page(
            session=s, offset=(page - 1) * size, limit=size, name_contains=query or None
        )
        faces = first_images(session=s, identity_ids=[i.id for i in items])
    rows = [PersonRow(i.id, i.name, i.accepted, i.rejected, faces.get(i.id)) for i in items]
    return PeoplePage(rows, total, page, pages, query)


def _detections(rt: Runtime, image_ids: list[int]):  # type: ignore[no-untyped-def]
    """image id -> its stored detection under the current detector (detect-mode models)."""
    from pipelines.services.detection import current_detections

    return current_detections(rt, image_ids)


def _boxes(detection, width: int | None, height: int | None) -> list[Box]:  # type: ignore[no-untyped-def]
    if detection is None or not width or not height:
        return []
    return [
        Box(
            100 * f.box[0] / width,
            100 * f.box[1] / height,
            100 * (f.box[2] - f.box[0]) / width,
            100 * (f.box[3] - f.box[1]) / height,
            f.chosen,
        )
        for f in detection.faces
    ]


def photo_views(rt: Runtime, image_ids: list[int], model: ModelRef | None) -> dict[int, PhotoView]:
    """What became of each image: rejected (why), a detection outcome that keeps it out of the
    index, embedded under the served model, or still waiting for the indexing job."""
    from storage.images import embedded_image_ids, get_image

    detect = model is not None and model.crop.detect
    found = _detections(rt, image_ids) if detect else {}
    with rt.sessions() as s:
        rows = {i: get_image(session=s, image_id=i) for i in image_ids}
        embedded = (
            embedded_image_ids(session=s, model_version_id=model.id, face_image_ids=image_ids)
            if model is not None
            else set()
        )
        out: dict[int, PhotoView] = {}
        for i, row in rows.items():
            if row is None:
                continue
            d = found.get(i)
            if row.status == "rejected":
                outcome, detail = f"rejected: {row.reject_reason}", row.reject_detail
            elif i in embedded:
                outcome, detail = "embedded", None
            elif d is not None and d.outcome != "ok":
                outcome, detail = d.outcome, d.detail
            else:
                outcome, detail = "waiting", "not indexed yet"
            out[i] = PhotoView(
                i,
                row.sha256,
                row.status,
                row.width,
                row.height,
                outcome,
                detail,
                _boxes(d, row.width, row.height),
            )
    return out


def person_view(rt: Runtime, name: str, model: ModelRef | None) -> PersonView:
    """A person and every photo (raises ``UnknownIdentityError``)."""
    from storage.identities import find_identity
    from storage.images import images_of_identity

    with rt.sessions() as s:
        ident = find_identity(session=s, name=name)
        ids = [im.id for im in images_of_identity(session=s, identity_id=ident.id)]
        shown = ident.name
    views = photo_views(rt, ids, model)
    return PersonView(
        shown, [views[i] for i in ids if i in views], bool(model and model.crop.detect)
    )


def remove_person(rt: Runtime, name: str) -> api_gallery.Removal:
    """The API's removal (rows, then stored uploads; ``UnknownIdentityError`` for no such
    person), then the console's cached thumbnails of the person's photos."""
    from storage.identities import find_identity
    from storage.images import images_of_identity

    with rt.sessions() as s:
        ident = find_identity(session=s, name=name)
        digests = [im.sha256 for im in images_of_identity(session=s, identity_id=ident.id)]
    removal = api_gallery.remove(rt, name)
    thumbs.forget(rt, [d for d in digests if d])
    return removal


def remove_photo(rt: Runtime, image_id: int) -> str | None:
    """Delete one photo's rows, then its stored upload; the name of the person it belonged to
    (None when there is no such photo). The next published index leaves its vector out;
    identification skips it from now on (its row is gone)."""
    from storage.images import remove_image

    with rt.sessions.begin() as s:
        row = remove_image(session=s, image_id=image_id)
        if row is None:
            return None
        sha, name = row.sha256, row.identity.name if row.identity is not None else None
    if sha:
        api_gallery.upload_path(rt, sha).unlink(missing_ok=True)
        thumbs.forget(rt, [sha])
    logger.info("removed photo %d of %r", image_id, name)
    return name


def photo_file(rt: Runtime, sha256: str) -> Path | None:
    """The stored bytes with this digest: an upload, else the file the gallery imported."""
    from storage.images import find_by_sha256

    path = api_gallery.upload_path(rt, sha256)  # ValueError for anything but 64 hex digits
    if path.is_file():
        return path
    with rt.sessions() as s:
        row = find_by_sha256(session=s, sha256=sha256)
        source = row.source_uri if row is not None else None
    if source is None:
        return None
    src = Path(source.removeprefix("file://"))
    return src if src.is_file() else None


def chosen_box(rt: Runtime, sha256: str) -> tuple[float, float, float, float] | None:
    """The enrolled face's box in the photo with this digest (detect-mode galleries)."""
    from pipelines.services.detection import detector
    from storage.faces import chosen_faces
    from storage.images import find_by_sha256

    det = detector()
    with rt.sessions() as s:
        row = find_by_sha256(session=s, sha256=sha256)
        if row is None:
            return None
        faces = chosen_faces(
            session=s, detector=det.name, detector_version=det.version, face_image_ids=[row.id]
        )
    face = faces.get(row.id)
    return None if face is None else face.box
