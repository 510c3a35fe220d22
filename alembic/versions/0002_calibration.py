"""calibration

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 01:33:42.266473
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calibration",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("index_version_id", sa.Integer(), nullable=True),
        sa.Column("target_fpir", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("realised_fpir", sa.Float(), nullable=False),
        sa.Column("nonmated_searches", sa.Integer(), nullable=False),
        sa.Column("gallery_identities", sa.Integer(), nullable=False),
        sa.Column("gallery_images", sa.Integer(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "target_fpir > 0 AND target_fpir < 1", name=op.f("ck_calibration_target_fpir_range")
        ),
        sa.ForeignKeyConstraint(
            ["index_version_id"],
            ["index_version.id"],
            name=op.f("fk_calibration_index_version_id_index_version"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_version.id"],
            name=op.f("fk_calibration_model_version_id_model_version"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calibration")),
    )
    with op.batch_alter_table("calibration", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_calibration_index_version_id"), ["index_version_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_calibration_model_version_id"), ["model_version_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("calibration", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calibration_model_version_id"))
        batch_op.drop_index(batch_op.f("ix_calibration_index_version_id"))

    op.drop_table("calibration")
