"""Importing galleries: an ImageFolder tree or a CSV manifest into SQL, quarantining bad files.

Every file is read once, hashed, fully decoded and recorded as accepted or rejected with its
reason. A rejected file never stops the import, and re-running an import adds nothing.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipelines.services.errors import GalleryError
from siamese.images import (
    DEFAULT_LIMITS,
    IMAGE_EXTENSIONS,
    DecodeLimits,
    ImageRejected,
    decode_bytes,
)
from storage.identities import get_or_create_identity
from storage.images import ImageRecord, add_image, find_by_sha256, find_unreadable, record_conflict

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ImportItem:
    """One file to import; ``precheck`` is a rejection known before reading it."""

    path: Path
    identity: str | None
    precheck: tuple[str, str] | None = None


@dataclass
class ImportSummary:
    seen: int = 0
    new: int = 0
    duplicates: int = 0
    rejected: int = 0
    conflicts: int = 0
    new_identities: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    rejected_files: list[tuple[str, str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "new": self.new,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "conflicts": self.conflicts,
            "new_identities": self.new_identities,
            "rejected_by_reason": dict(sorted(self.rejected_by_reason.items())),
        }


def scan_image_folder(root: Path) -> list[ImportItem]:
    """``root/<identity>/<image>`` (sub-folders of an identity belong to it); sorted, stable."""
    if not root.exists():
        raise GalleryError(
            f"{root} does not exist; give a folder laid out as ROOT/<identity>/<image>"
        )
    if not root.is_dir():
        raise GalleryError(
            f"{root} is a file, not a folder; for a CSV of path,identity use --manifest {root}"
        )
    items: list[ImportItem] = []
    for person_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if person_dir.name.startswith("."):
            continue
        for path in sorted(person_dir.rglob("*")):
            if path.name.startswith(".") or path.is_dir():
                continue
            precheck = None
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                precheck = ("unsupported_extension", f"{path.name}: extension {path.suffix!r}")
            items.append(ImportItem(path, person_dir.name, precheck))
    return items


def read_manifest(manifest: Path, *, allow_outside: bool = False) -> list[ImportItem]:
    """A CSV with columns ``path,identity``; paths are relative to the manifest's folder.

    A path that is absolute or leaves that folder is rejected (``outside_root``) unless
    ``allow_outside``.
    """
    if not manifest.is_file():
        raise GalleryError(f"manifest {manifest} does not exist or is not a file")
    base = manifest.resolve().parent
    items: list[ImportItem] = []
    with manifest.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "identity"} - set(reader.fieldnames or [])
        if missing:
            raise GalleryError(
                f"manifest {manifest} lacks the column(s) {', '.join(sorted(missing))}; "
                f"its header must be `path,identity` (found {reader.fieldnames})"
            )
        for line, row in enumerate(reader, start=2):
            raw = (row.get("path") or "").strip()
            identity = row.get("identity")
            if not raw:
                raise GalleryError(f"manifest {manifest}, line {line}: the path field is empty")
            given = Path(raw)
            resolved = (base / given).resolve()
            precheck = None
            if not allow_outside and (given.is_absolute() or not resolved.is_relative_to(base)):
                precheck = ("outside_root", f"{raw} is outside {base}; pass --allow-outside")
            elif identity is None or identity == "":
                precheck = ("no_identity", f"line {line}: {raw} has no identity")
            items.append(ImportItem(resolved, identity or None, precheck))
    return items


def import_items(
    items: Iterable[ImportItem],
    *,
    sessions: sessionmaker[Session],
    limits: DecodeLimits = DEFAULT_LIMITS,
    progress: Progress | None = None,
    commit_every: int = 200,
) -> ImportSummary:
    """Record every item as accepted, duplicate, conflict or rejected; commit in chunks.

    Chunked commits keep a long import's finished work if it is interrupted; a re-run then
    finds those files by hash and goes on.
    """
    items = list(items)
    summary = ImportSummary()
    identity_ids: dict[str, int] = {}
    with sessions() as session:
        for n, item in enumerate(items, start=1):
            _import_one(session, item, limits, summary, identity_ids)
            if n % commit_every == 0:
                session.commit()
            if progress is not None:
                progress(n, len(items))
        session.commit()
    return summary


def _import_one(
    session: Session,
    item: ImportItem,
    limits: DecodeLimits,
    summary: ImportSummary,
    identity_ids: dict[str, int],
) -> None:
    summary.seen += 1
    source = str(item.path)
    identity_id = _identity_id(session, item.identity, identity_ids, summary)

    if item.precheck is not None:
        _reject_unread(session, source, identity_id, *item.precheck, summary=summary)
        return
    try:
        data = item.path.read_bytes()
    except FileNotFoundError:
        _reject_unread(
            session, source, identity_id, "missing", f"{source} does not exist", summary=summary
        )
        return
    except IsADirectoryError:
        _reject_unread(
            session, source, identity_id, "not_a_file", f"{source} is a directory", summary=summary
        )
        return
    except OSError as exc:
        _reject_unread(
            session, source, identity_id, "unreadable", f"{source}: {exc}", summary=summary
        )
        return

    sha = hashlib.sha256(data).hexdigest()
    known = find_by_sha256(session=session, sha256=sha)
    if known is not None:
        if known.status == "rejected":
            _count_rejected(summary, source, known.reject_reason or "corrupt", known.reject_detail)
        elif known.identity_id == identity_id:
            summary.duplicates += 1
        else:
            assert identity_id is not None
            if record_conflict(
                session=session, image=known, claimed_identity_id=identity_id, source_uri=source
            ):
                logger.warning(
                    "%s: the same bytes are already enrolled for another identity", source
                )
            summary.conflicts += 1
        return

    try:
        decoded = decode_bytes(data, limits=limits, name=source)
    except ImageRejected as rej:
        add_image(
            session=session,
            record=ImageRecord(
                source, sha, identity_id, reject_reason=rej.reason, reject_detail=rej.detail
            ),
        )
        _count_rejected(summary, source, rej.reason, rej.detail)
        return
    add_image(
        session=session,
        record=ImageRecord(
            source, sha, identity_id, decoded.width, decoded.height, decoded.source_mode
        ),
    )
    summary.new += 1


def _identity_id(
    session: Session, name: str | None, cache: dict[str, int], summary: ImportSummary
) -> int | None:
    if name is None:
        return None
    if name not in cache:
        identity, created = get_or_create_identity(session=session, name=name)
        cache[name] = identity.id
        summary.new_identities += int(created)
    return cache[name]


def _reject_unread(
    session: Session,
    source: str,
    identity_id: int | None,
    reason: str,
    detail: str,
    *,
    summary: ImportSummary,
) -> None:
    if find_unreadable(session=session, source_uri=source, reason=reason) is None:
        add_image(
            session=session,
            record=ImageRecord(
                source, None, identity_id, reject_reason=reason, reject_detail=detail
            ),
        )
    _count_rejected(summary, source, reason, detail)


def _count_rejected(summary: ImportSummary, source: str, reason: str, detail: str | None) -> None:
    summary.rejected += 1
    summary.rejected_by_reason[reason] += 1
    summary.rejected_files.append((source, reason, detail or ""))
    logger.info("rejected %s: %s (%s)", source, reason, detail)
