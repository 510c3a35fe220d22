"""What the API reads and answers (pydantic): the shapes in the OpenAPI document at /docs."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from pipelines.services.identities import IdentityView, ImageView

#: The most candidates one answer may list, and the largest page of identities.
MAX_TOP_K = 100
MAX_PAGE = 500
#: Longest embedding accepted before its dimension is compared with the model's.
MAX_EMBEDDING = 4096

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time siamid stores is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, AfterValidator(_utc)]


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Candidate(Out):
    identity: str
    distance: float


class Answer(Out):
    """The decision for one probe: ``siamid identify --json``'s object."""

    probe: str = Field(description="the upload's file name, or 'embedding'")
    decision: str = Field(
        description="match or unknown; with no answer: error (unreadable), no_face or "
        "too_small (photos, once faces are detected)"
    )
    identity: str | None = Field(description="the matched identity; null unless a match")
    distance: float | None = Field(description="distance to the nearest identity")
    threshold: float
    threshold_source: str = Field(description="explicit, calibrated@fpir=..., or margin/2")
    threshold_gallery: int | None = Field(
        default=None, description="enrolled identities the calibrated threshold was set for"
    )
    candidates: list[Candidate] = Field(description="nearest identities, nearest first")
    model_version: str
    index_version: int
    error: str | None = None


class FaceAnswer(Answer):
    box: list[float] | None = Field(
        default=None,
        min_length=4,
        max_length=4,
        description="[left, top, right, bottom] of the face in the photo's pixels; null when "
        "the model reads whole images (the photo is one probe)",
    )
    face: int | None = Field(default=None, description="the face's rank in the photo, 0 = largest")


class IdentifyResponse(Out):
    faces: list[FaceAnswer]


class SearchRequest(BaseModel):
    embedding: list[FiniteFloat] = Field(
        min_length=1,
        max_length=MAX_EMBEDDING,
        description="a vector made by the served model (its dimension is checked)",
    )
    top_k: int | None = Field(
        default=None, ge=1, le=MAX_TOP_K, description="candidates to list (server default: 5)"
    )


class IdentitySummary(Out):
    id: int
    name: str
    accepted: int
    rejected: int


class IdentityPage(Out):
    items: list[IdentitySummary]
    total: int
    offset: int
    limit: int


def view_schema(view: type, name: str, leave_out: frozenset[str], **types: Any) -> type[Out]:
    """The answer schema of a service's view (a dataclass): its fields in its order, less
    ``leave_out``, with ``types`` in place of some fields' types. Built, not copied, so that
    the API and the command line (which prints the view itself) cannot drift apart."""
    hints = get_type_hints(view)
    fields: dict[str, Any] = {
        f.name: (types.get(f.name, hints[f.name]), ...)
        for f in dataclasses.fields(view)
        if f.name not in leave_out
    }
    return create_model(name, __base__=Out, __module__=__name__, **fields)


#: An identity's image; never its server path (``source``).
Image = view_schema(ImageView, "Image", frozenset({"source"}), imported_at=Timestamp)
#: One identity and its images; its free-form ``attributes`` stay on the server.
Identity = view_schema(
    IdentityView,
    "Identity",
    frozenset({"attributes"}),
    created_at=Timestamp,
    images=list[Image],  # type: ignore[valid-type]
)


class Job(Out):
    id: str
    kind: Literal["enrol", "remove"]
    status: Literal["queued", "running", "done", "failed"]
    identity: str | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    result: dict[str, Any] | None = Field(
        description="when done: index_version, published, embedded, vectors, added, removed"
    )
    error: str | None


class Enrolment(Out):
    identity: str
    received: int
    new: int
    duplicates: int
    conflicts: int = Field(description="images whose bytes are enrolled for another identity")
    sha256: list[str]
    job: Job | None = Field(description="indexing the new images; null when nothing is new")


class Removal(Out):
    identity: str
    removed_images: int
    deleted_files: int
    job: Job = Field(description="publishing an index without the identity's vectors")


class Health(Out):
    status: Literal["ok"]


class Ready(Out):
    status: Literal["ready"]
    index_version: int
    model_version: str
    embedding_dim: int = Field(description="the length /v1/search expects")
    vectors: int
    threshold: float
    threshold_source: str
    threshold_gallery_identities: int | None = Field(
        default=None, description="enrolled identities the threshold was set for"
    )
