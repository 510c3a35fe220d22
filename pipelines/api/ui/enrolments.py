"""An enrolment made in the console, remembered so its page can follow the job to the end.

The upload goes through :func:`pipelines.api.gallery.enrol` (what ``POST
/v1/identities/{name}/images`` runs) and the same background job. What that answer does not
keep per photo (was it new, already enrolled for this person, or claimed by another one, and
the file's name) is written beside the uploads as ``SIAMID_HOME/ui/enrolments/<id>.json``, so
any worker process can show the page, also after a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.api import gallery
from pipelines.api.jobs import JobRunner
from pipelines.services.runtime import Runtime

RECORD_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class EnrolledPhoto:
    label: str  # the client's file name: shown, never a path
    sha256: str
    before: str  # new | duplicate (already this person's) | conflict (another person's)
    other: str | None = None  # the person a conflicting photo belongs to


@dataclass(frozen=True)
class EnrolmentRecord:
    id: str
    name: str
    job_id: str | None
    photos: list[EnrolledPhoto]


def _dir(rt: Runtime) -> Path:
    return rt.settings.home_dir / "ui" / "enrolments"


def _before(rt: Runtime, name: str, uploads: list[gallery.Upload]) -> list[EnrolledPhoto]:
    from storage.images import find_by_sha256

    seen: set[str] = set()
    out = []
    with rt.sessions() as s:
        for up in uploads:
            sha = hashlib.sha256(up.data).hexdigest()
            row = find_by_sha256(session=s, sha256=sha)
            owner = row.identity.name if row is not None and row.identity is not None else None
            if sha in seen or (row is not None and owner == name):
                out.append(EnrolledPhoto(up.label, sha, "duplicate"))
            elif row is not None:
                out.append(EnrolledPhoto(up.label, sha, "conflict", owner))
            else:
                out.append(EnrolledPhoto(up.label, sha, "new"))
            seen.add(sha)
    return out


def enrol(
    rt: Runtime, jobs: JobRunner, name: str, uploads: list[gallery.Upload]
) -> EnrolmentRecord:
    """Enrol as the API does (all or nothing; ``ImageRejected`` names a bad file), start the
    indexing job when anything is new, and keep the record of each photo."""
    photos = _before(rt, name, uploads)
    enrolled = gallery.enrol(rt, name, uploads)
    job = jobs.submit("enrol", name) if enrolled.new else None
    record = EnrolmentRecord(secrets.token_hex(16), name, job.id if job else None, photos)
    path = _dir(rt) / f"{record.id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".enrolment-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(record), fh)
    os.replace(tmp, path)
    return record


def load(rt: Runtime, record_id: str) -> EnrolmentRecord | None:
    if not RECORD_ID.match(record_id):
        return None
    try:
        raw = json.loads((_dir(rt) / f"{record_id}.json").read_text())
    except FileNotFoundError:
        return None
    return EnrolmentRecord(
        raw["id"], raw["name"], raw["job_id"], [EnrolledPhoto(**p) for p in raw["photos"]]
    )
