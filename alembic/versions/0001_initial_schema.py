"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29 01:29:09.694120
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity")),
        sa.UniqueConstraint("name", name=op.f("uq_identity_name")),
    )
    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("architecture", sa.String(length=32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("checkpoint_path", sa.Text(), nullable=False),
        sa.Column("checkpoint_sha256", sa.String(length=64), nullable=False),
        sa.Column("embedding_dim", sa.Integer(), nullable=False),
        sa.Column("distance", sa.String(length=16), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version")),
        sa.UniqueConstraint("name", name=op.f("uq_model_version_name")),
    )
    op.create_table(
        "face_image",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("identity_id", sa.Integer(), nullable=True),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reject_reason", sa.String(length=64), nullable=True),
        sa.Column("reject_detail", sa.Text(), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(status = 'accepted' AND reject_reason IS NULL AND sha256 IS NOT NULL) OR (status = 'rejected' AND reject_reason IS NOT NULL)",
            name=op.f("ck_face_image_reason_matches_status"),
        ),
        sa.CheckConstraint("status IN ('accepted', 'rejected')", name=op.f("ck_face_image_status")),
        sa.ForeignKeyConstraint(
            ["identity_id"],
            ["identity.id"],
            name=op.f("fk_face_image_identity_id_identity"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_face_image")),
        sa.UniqueConstraint("sha256", name=op.f("uq_face_image_sha256")),
    )
    with op.batch_alter_table("face_image", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_face_image_identity_id"), ["identity_id"], unique=False
        )
        batch_op.create_index("ix_face_image_source_uri", ["source_uri"], unique=False)

    op.create_table(
        "index_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("factory", sa.String(length=255), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("vector_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('building', 'published', 'retired')", name=op.f("ck_index_version_status")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
            name=op.f("fk_index_version_model_version_id_model_version"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_index_version")),
    )
    with op.batch_alter_table("index_version", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_index_version_model_version_id"), ["model_version_id"], unique=False
        )
        batch_op.create_index(
            "uq_index_version_one_published",
            ["model_version_id"],
            unique=True,
            sqlite_where=sa.text("status = 'published'"),
            postgresql_where=sa.text("status = 'published'"),
        )

    op.create_table(
        "embedding",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("face_image_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("vector_ref", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["face_image_id"],
            ["face_image.id"],
            name=op.f("fk_embedding_face_image_id_face_image"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
            name=op.f("fk_embedding_model_version_id_model_version"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_embedding")),
        sa.UniqueConstraint(
            "face_image_id",
            "model_version_id",
            name=op.f("uq_embedding_face_image_id_model_version_id"),
        ),
    )
    with op.batch_alter_table("embedding", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_embedding_face_image_id"), ["face_image_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_embedding_model_version_id"), ["model_version_id"], unique=False
        )

    op.create_table(
        "evaluation_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("index_version_id", sa.Integer(), nullable=True),
        sa.Column("protocol", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("report_path", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["index_version_id"],
            ["index_version.id"],
            name=op.f("fk_evaluation_run_index_version_id_index_version"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
            name=op.f("fk_evaluation_run_model_version_id_model_version"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluation_run")),
    )
    with op.batch_alter_table("evaluation_run", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_evaluation_run_index_version_id"), ["index_version_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_evaluation_run_model_version_id"), ["model_version_id"], unique=False
        )

    op.create_table(
        "image_conflict",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("face_image_id", sa.Integer(), nullable=False),
        sa.Column("claimed_identity_id", sa.Integer(), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["claimed_identity_id"],
            ["identity.id"],
            name=op.f("fk_image_conflict_claimed_identity_id_identity"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["face_image_id"],
            ["face_image.id"],
            name=op.f("fk_image_conflict_face_image_id_face_image"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_conflict")),
        sa.UniqueConstraint(
            "face_image_id",
            "claimed_identity_id",
            name=op.f("uq_image_conflict_face_image_id_claimed_identity_id"),
        ),
    )
    with op.batch_alter_table("image_conflict", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_image_conflict_claimed_identity_id"),
            ["claimed_identity_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_image_conflict_face_image_id"), ["face_image_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("image_conflict", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_conflict_face_image_id"))
        batch_op.drop_index(batch_op.f("ix_image_conflict_claimed_identity_id"))

    op.drop_table("image_conflict")
    with op.batch_alter_table("evaluation_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evaluation_run_model_version_id"))
        batch_op.drop_index(batch_op.f("ix_evaluation_run_index_version_id"))

    op.drop_table("evaluation_run")
    with op.batch_alter_table("embedding", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_embedding_model_version_id"))
        batch_op.drop_index(batch_op.f("ix_embedding_face_image_id"))

    op.drop_table("embedding")
    with op.batch_alter_table("index_version", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_index_version_one_published",
            sqlite_where=sa.text("status = 'published'"),
            postgresql_where=sa.text("status = 'published'"),
        )
        batch_op.drop_index(batch_op.f("ix_index_version_model_version_id"))

    op.drop_table("index_version")
    with op.batch_alter_table("face_image", schema=None) as batch_op:
        batch_op.drop_index("ix_face_image_source_uri")
        batch_op.drop_index(batch_op.f("ix_face_image_identity_id"))

    op.drop_table("face_image")
    op.drop_table("model_version")
    op.drop_table("identity")
