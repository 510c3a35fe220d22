"""Whose face an embedding is: the detected face's rank and why it was taken (issue 20)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 20:15:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("embedding") as batch:
        batch.add_column(sa.Column("face_rank", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("chosen_by", sa.String(length=16), nullable=True))
        batch.create_check_constraint("chosen_by", "chosen_by IN ('only', 'consistent', 'largest')")


def downgrade() -> None:
    with op.batch_alter_table("embedding") as batch:
        batch.drop_constraint(op.f("ck_embedding_chosen_by"), type_="check")
        batch.drop_column("chosen_by")
        batch.drop_column("face_rank")
