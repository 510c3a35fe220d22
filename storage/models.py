"""SQLAlchemy 2 models: the schema every flow writes to.

The schema changes only through Alembic (``alembic/versions``); ``alembic check`` in the tests
keeps these models and the migrations in agreement.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Deterministic constraint names, so migrations can drop and alter them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

IMAGE_STATUSES = ("accepted", "rejected")
INDEX_STATUSES = ("building", "published", "retired")
#: What one run of a face detector made of one image. ``too_small``: faces were found, none big
#: enough to align; ``error``: the image could not be read or the detector failed (see detail).
DETECTION_OUTCOMES = ("ok", "no_face", "multiple_faces", "too_small", "error")
#: Why an embedded face is the person's (``embedding.chosen_by``; pipelines.services.face_choice).
CHOSEN_BY = ("only", "consistent", "largest")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON}


class Identity(Base):
    """A person, known by a unique external name (exactly as given: accents, CJK, quotes...)."""

    __tablename__ = "identity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(512), unique=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    images: Mapped[list[FaceImage]] = relationship(back_populates="identity")


class FaceImage(Base):
    """One imported file. The same bytes (sha256) give one row, whatever path they came from.

    Files that could not be read at all (missing, outside the root) have no sha256; they are
    recorded by source so that a re-run of the same import adds nothing.
    """

    __tablename__ = "face_image"
    __table_args__ = (
        CheckConstraint("status IN ('accepted', 'rejected')", name="status"),
        CheckConstraint(
            "(status = 'accepted' AND reject_reason IS NULL AND sha256 IS NOT NULL) "
            "OR (status = 'rejected' AND reject_reason IS NOT NULL)",
            name="reason_matches_status",
        ),
        Index("ix_face_image_source_uri", "source_uri"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity_id: Mapped[int | None] = mapped_column(
        ForeignKey("identity.id", ondelete="CASCADE"), index=True
    )
    source_uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    width: Mapped[int | None]
    height: Mapped[int | None]
    mode: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    reject_reason: Mapped[str | None] = mapped_column(String(64))
    reject_detail: Mapped[str | None] = mapped_column(Text)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    identity: Mapped[Identity | None] = relationship(back_populates="images")


class ImageConflict(Base):
    """The same bytes claimed for a second identity: recorded, never merged."""

    __tablename__ = "image_conflict"
    __table_args__ = (UniqueConstraint("face_image_id", "claimed_identity_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_image_id: Mapped[int] = mapped_column(
        ForeignKey("face_image.id", ondelete="CASCADE"), index=True
    )
    claimed_identity_id: Mapped[int] = mapped_column(
        ForeignKey("identity.id", ondelete="CASCADE"), index=True
    )
    source_uri: Mapped[str] = mapped_column(Text)
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    """A trained encoder: its configuration, checkpoint and validation figures."""

    __tablename__ = "model_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    architecture: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]]
    checkpoint_path: Mapped[str] = mapped_column(Text)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    embedding_dim: Mapped[int]
    distance: Mapped[str] = mapped_column(String(16))
    margin: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Embedding(Base):
    """Where the vector of one image under one model lives (a ref into the vector store).

    Detect mode: ``face_rank`` is the detected face embedded (0 = largest) and ``chosen_by``
    why it is the person's (``only`` face, ``consistent`` with the person's other photos, or
    the ``largest``; :mod:`pipelines.services.face_choice`); whole images: both NULL.
    """

    __tablename__ = "embedding"
    __table_args__ = (
        UniqueConstraint("face_image_id", "model_version_id"),
        CheckConstraint(
            "chosen_by IN ({})".format(", ".join(f"'{c}'" for c in CHOSEN_BY)), name="chosen_by"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_image_id: Mapped[int] = mapped_column(
        ForeignKey("face_image.id", ondelete="CASCADE"), index=True
    )
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_version.id", ondelete="CASCADE"), index=True
    )
    vector_ref: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    face_rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    chosen_by: Mapped[str | None] = mapped_column(String(16), nullable=True)


class IndexVersion(Base):
    """A FAISS index file built for one model version; at most one published per model."""

    __tablename__ = "index_version"
    __table_args__ = (
        CheckConstraint("status IN ('building', 'published', 'retired')", name="status"),
        Index(
            "uq_index_version_one_published",
            "model_version_id",
            unique=True,
            sqlite_where=text("status = 'published'"),
            postgresql_where=text("status = 'published'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_version.id", ondelete="CASCADE"), index=True
    )
    factory: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    vector_count: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(16), default="building")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EvaluationRun(Base):
    """One open-set evaluation: its protocol, figures and where the report is."""

    __tablename__ = "evaluation_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_version.id", ondelete="SET NULL"), index=True
    )
    index_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("index_version.id", ondelete="SET NULL"), index=True
    )
    protocol: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    report_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Calibration(Base):
    """A reject threshold calibrated on non-mated searches at a target FPIR.

    Stored with the model and index version it was measured on; the gallery size at the time lets
    ``identify`` warn when the gallery has grown a lot since (FPIR grows with gallery size).
    """

    __tablename__ = "calibration"
    __table_args__ = (
        CheckConstraint("target_fpir > 0 AND target_fpir < 1", name="target_fpir_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_version.id", ondelete="CASCADE"), index=True
    )
    index_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("index_version.id", ondelete="SET NULL"), index=True
    )
    target_fpir: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    realised_fpir: Mapped[float] = mapped_column(Float)
    nonmated_searches: Mapped[int]
    gallery_identities: Mapped[int]
    gallery_images: Mapped[int]
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FaceDetection(Base):
    """One run of one detector version on one image: its outcome and how many faces it found.

    A row exists for every image the detector has seen, whatever the outcome, so a new detector
    version re-detects exactly the images that have no row for it.
    """

    __tablename__ = "face_detection"
    __table_args__ = (
        UniqueConstraint("face_image_id", "detector", "detector_version"),
        CheckConstraint(
            "outcome IN ({})".format(", ".join(f"'{o}'" for o in DETECTION_OUTCOMES)),
            name="outcome",
        ),
        CheckConstraint("faces >= 0", name="faces_not_negative"),
        Index("ix_face_detection_detector", "detector", "detector_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The unique key leads with face_image_id, so it also serves the cascade from face_image.
    face_image_id: Mapped[int] = mapped_column(ForeignKey("face_image.id", ondelete="CASCADE"))
    detector: Mapped[str] = mapped_column(String(64))
    detector_version: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(32))
    faces: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    detected_faces: Mapped[list[DetectedFace]] = relationship(
        back_populates="detection",
        order_by="DetectedFace.rank",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


class DetectedFace(Base):
    """One face a detection found, in original-image pixels; rank 0 is the largest.

    ``chosen`` marks the face that is aligned and embedded for the image (at most one per
    detection, enforced by a partial unique index).
    """

    __tablename__ = "face"
    __table_args__ = (
        UniqueConstraint("detection_id", "rank"),
        CheckConstraint("rank >= 0", name="rank_not_negative"),
        Index(
            "uq_face_one_chosen",
            "detection_id",
            unique=True,
            sqlite_where=text("chosen"),
            postgresql_where=text("chosen"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    detection_id: Mapped[int] = mapped_column(
        ForeignKey("face_detection.id", ondelete="CASCADE"), index=True
    )
    rank: Mapped[int] = mapped_column(Integer)
    box_left: Mapped[float] = mapped_column(Float)
    box_top: Mapped[float] = mapped_column(Float)
    box_right: Mapped[float] = mapped_column(Float)
    box_bottom: Mapped[float] = mapped_column(Float)
    #: Five ``[x, y]`` pairs in the detector's landmark order (pixel centres).
    landmarks: Mapped[list[list[float]]] = mapped_column(JSON)
    score: Mapped[float] = mapped_column(Float)
    eye_span: Mapped[float] = mapped_column(Float)
    chosen: Mapped[bool] = mapped_column(Boolean, default=False)

    detection: Mapped[FaceDetection] = relationship(back_populates="detected_faces")


API_KEY_SCOPES = ("read", "write")
API_JOB_KINDS = ("enrol", "remove")
API_JOB_STATUSES = ("queued", "running", "done", "failed")


class ApiKey(Base):
    """A key of the HTTP API: only the sha256 of the token is kept, never the token itself.

    ``prefix`` is the token's public head (shown in lists, used to find the row); the secret
    rest is checked by comparing digests in constant time. A revoked key stays for the record.
    """

    __tablename__ = "api_key"
    __table_args__ = (
        CheckConstraint(
            "scope IN ({})".format(", ".join(f"'{s}'" for s in API_KEY_SCOPES)), name="scope"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiJob(Base):
    """Background work the HTTP API started (index a new enrolment, drop a removed identity).

    Kept in SQL, not in a worker's memory, so any worker process of the API can answer a poll.
    ``owner`` is ``host:pid`` of the process that runs it.
    """

    __tablename__ = "api_job"
    __table_args__ = (
        CheckConstraint(
            "kind IN ({})".format(", ".join(f"'{k}'" for k in API_JOB_KINDS)), name="kind"
        ),
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{s}'" for s in API_JOB_STATUSES)),
            name="status",
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    identity: Mapped[str | None] = mapped_column(String(512))
    owner: Mapped[str] = mapped_column(String(255))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
