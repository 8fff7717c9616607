"""Binary feedback: a task of kind "binary" shows one response and asks for a thumbs up or down.

- `labels.label` (boolean, null for other kinds): True = good, False = bad.
- `labels.reason` (text, null when none given): the labeller's optional reason for it.

The task kind is a plain string column, so "binary" itself needs no schema change. Both columns are
nullable and added without a default, so existing rows keep every value and read NULL there (plain
ADD COLUMN on PostgreSQL and SQLite alike; no table rebuild).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("labels", sa.Column("label", sa.Boolean(), nullable=True))
    op.add_column("labels", sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite before 3.35 cannot DROP COLUMN in place
    with op.batch_alter_table("labels") as batch_op:
        batch_op.drop_column("reason")
        batch_op.drop_column("label")
