"""Labeller-aware routing: a labeller's estimated quality and a task's quality floor.

- `labellers.quality` (float, null until estimated): the labeller's rationality on the target objective
  as `rlhf.feedback.quality` estimates it from their labels.
- `tasks.min_quality` (float, null = anyone): `next_task` hands the task only to labellers whose quality
  reaches it (hard, informative comparisons to reliable labellers; easy ones to anyone).

Both nullable, added without a default: existing rows read NULL, which is the old behaviour (every task
open to every labeller).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("labellers", sa.Column("quality", sa.Float(), nullable=True))
    op.add_column("tasks", sa.Column("min_quality", sa.Float(), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite before 3.35 cannot DROP COLUMN in place
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.drop_column("min_quality")
    with op.batch_alter_table("labellers") as batch_op:
        batch_op.drop_column("quality")
