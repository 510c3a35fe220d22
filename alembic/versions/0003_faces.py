"""face detections and faces

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 08:42:50.411556
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "face_detection",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("face_image_id", sa.Integer(), nullable=False),
        sa.Column("detector", sa.String(length=64), nullable=False),
        sa.Column("detector_version", sa.String(length=128), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("faces", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('ok', 'no_face', 'multiple_faces', 'too_small', 'error')",
            name=op.f("ck_face_detection_outcome"),
        ),
        sa.CheckConstraint("faces >= 0", name=op.f("ck_face_detection_faces_not_negative")),
        sa.ForeignKeyConstraint(
            ["face_image_id"],
            ["face_image.id"],
            name=op.f("fk_face_detection_face_image_id_face_image"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_face_detection")),
        sa.UniqueConstraint(
            "face_image_id",
            "detector",
            "detector_version",
            name=op.f("uq_face_detection_face_image_id_detector_detector_version"),
        ),
    )
    with op.batch_alter_table("face_detection", schema=None) as batch_op:
        batch_op.create_index(
            "ix_face_detection_detector", ["detector", "detector_version"], unique=False
        )

    op.create_table(
        "face",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("detection_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("box_left", sa.Float(), nullable=False),
        sa.Column("box_top", sa.Float(), nullable=False),
        sa.Column("box_right", sa.Float(), nullable=False),
        sa.Column("box_bottom", sa.Float(), nullable=False),
        sa.Column("landmarks", sa.JSON(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("eye_span", sa.Float(), nullable=False),
        sa.Column("chosen", sa.Boolean(), nullable=False),
        sa.CheckConstraint("rank >= 0", name=op.f("ck_face_rank_not_negative")),
        sa.ForeignKeyConstraint(
            ["detection_id"],
            ["face_detection.id"],
            name=op.f("fk_face_detection_id_face_detection"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_face")),
        sa.UniqueConstraint("detection_id", "rank", name=op.f("uq_face_detection_id_rank")),
    )
    with op.batch_alter_table("face", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_face_detection_id"), ["detection_id"], unique=False)
        batch_op.create_index(
            "uq_face_one_chosen",
            ["detection_id"],
            unique=True,
            sqlite_where=sa.text("chosen"),
            postgresql_where=sa.text("chosen"),
        )


def downgrade() -> None:
    with op.batch_alter_table("face", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_face_one_chosen", sqlite_where=sa.text("chosen"), postgresql_where=sa.text("chosen")
        )
        batch_op.drop_index(batch_op.f("ix_face_detection_id"))

    op.drop_table("face")
    with op.batch_alter_table("face_detection", schema=None) as batch_op:
        batch_op.drop_index("ix_face_detection_detector")

    op.drop_table("face_detection")
