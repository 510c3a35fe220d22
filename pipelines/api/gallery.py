"""The gallery over HTTP: pages of identities, one identity, enrolment of uploads, removal.

Uploaded bytes are kept under ``SIAMID_HOME/uploads/<sha256[:2]>/<sha256>``: the path comes
from the content alone, so no name a client sends ever becomes part of a path, and the same
photo sent twice is stored once. Enrolment then goes through the gallery import like any file
(full decode, duplicate and conflict rules), and removal deletes the stored bytes of the
identity's images once their rows are gone.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from pipelines.services.enrolment import remove_identity
from pipelines.services.gallery import ImportItem, import_items
from pipelines.services.runtime import Runtime
from siamese.images import ImageRejected, decode_bytes
from storage.identities import IdentitySummary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the client's name (a label, never a path) and its bytes."""

    label: str
    data: bytes


@dataclass(frozen=True)
class IdentityPage:
    items: list[IdentitySummary]
    total: int
    offset: int
    limit: int


@dataclass
class Enrolment:
    identity: str
    received: int
    new: int
    duplicates: int
    conflicts: int
    sha256: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Removal:
    identity: str
    removed_images: int
    deleted_files: int


def uploads_dir(rt: Runtime) -> Path:
    return rt.settings.home_dir / "uploads"


def upload_path(rt: Runtime, sha256: str) -> Path:
    """Where the bytes with this digest are kept (64 hex digits: nothing else gets in)."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return uploads_dir(rt) / sha256[:2] / sha256


def store_upload(rt: Runtime, data: bytes) -> tuple[str, Path]:
    """Write the bytes at their content address (tmp + fsync + rename); (sha256, path)."""
    sha = hashlib.sha256(data).hexdigest()
    path = upload_path(rt, sha)
    if path.is_file() and path.stat().st_size == len(data):
        return sha, path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{sha[:16]}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha, path


def identity_page(rt: Runtime, *, offset: int, limit: int) -> IdentityPage:
    from storage.identity_pages import count_identities
    from storage.identity_pages import identity_page as _page

    with rt.sessions() as s:
        items = _page(session=s, offset=offset, limit=limit)
        total = count_identities(session=s)
    return IdentityPage(items, total, offset, limit)


def enrol(rt: Runtime, name: str, uploads: list[Upload]) -> Enrolment:
    """Check every upload, store it, import it under ``name``: all of them or none.

    A file that is not a usable image raises :class:`ImageRejected` naming it, before
    anything is stored. Indexing the new images is the caller's next step (a background job).
    """
    for i, up in enumerate(uploads):
        try:
            decode_bytes(up.data, limits=rt.limits, name=up.label)
        except ImageRejected as rej:
            raise ImageRejected(rej.reason, f"image {i + 1} ({up.label}): {rej.detail}") from None
    stored = [store_upload(rt, up.data) for up in uploads]
    items = [ImportItem(path, name) for _, path in stored]
    try:
        summary = import_items(items, sessions=rt.sessions, limits=rt.limits)
    except IntegrityError:
        # Another request created the same identity (or the same bytes) between our look-up
        # and our insert; nothing of ours was committed, and the second try finds theirs.
        summary = import_items(items, sessions=rt.sessions, limits=rt.limits)
    logger.info(
        "enrolled %d image(s) for %r: %d new, %d duplicates, %d conflicts",
        len(uploads),
        name,
        summary.new,
        summary.duplicates,
        summary.conflicts,
    )
    return Enrolment(
        name,
        len(uploads),
        summary.new,
        summary.duplicates,
        summary.conflicts,
        [s for s, _ in stored],
    )


def remove(rt: Runtime, name: str) -> Removal:
    """Delete the identity's rows (raises ``UnknownIdentityError``), then its stored uploads.

    From the commit on, identification no longer answers the identity; its vectors leave the
    next published index.
    """
    from storage.identities import find_identity
    from storage.images import images_of_identity

    with rt.sessions() as s:
        ident = find_identity(session=s, name=name)
        digests = [
            im.sha256 for im in images_of_identity(session=s, identity_id=ident.id) if im.sha256
        ]
    removed = remove_identity(rt, name)
    deleted = 0
    for sha in digests:
        path = upload_path(rt, sha)
        if path.is_file():  # only bytes that came in through the API live here
            path.unlink()
            deleted += 1
    return Removal(name, len(removed), deleted)
