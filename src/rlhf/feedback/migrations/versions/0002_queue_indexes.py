"""Indexes in the order the queue reads them, so no call scans or sorts more than it returns.

- `ix_task_queue` becomes (project_id, status, is_gold, priority DESC, id): `next_task` reads the first
  open task off the index. On (..., priority) alone both SQLite and PostgreSQL sorted every open task of
  the same priority on every call (1.8 ms with 5,000 open tasks on SQLite, growing with the queue).
- `ix_assignment_held` (labeller_id, state) replaces the index on labeller_id: the task a labeller holds
  is found among their active rows, not by reading their whole history.
- `ix_assignment_expiry` (state, expires_at) replaces the index on expires_at: the sweep for lapsed
  reservations reads only active rows, not every labelled assignment older than the reservation time.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_task_queue", table_name="tasks")
    op.create_index(
        "ix_task_queue", "tasks", ["project_id", "status", "is_gold", sa.text("priority DESC"), "id"]
    )
    op.drop_index("ix_assignments_labeller_id", table_name="assignments")
    op.drop_index("ix_assignments_expires_at", table_name="assignments")
    op.create_index("ix_assignment_held", "assignments", ["labeller_id", "state"])
    op.create_index("ix_assignment_expiry", "assignments", ["state", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_assignment_expiry", table_name="assignments")
    op.drop_index("ix_assignment_held", table_name="assignments")
    op.create_index("ix_assignments_expires_at", "assignments", ["expires_at"])
    op.create_index("ix_assignments_labeller_id", "assignments", ["labeller_id"])
    op.drop_index("ix_task_queue", table_name="tasks")
    op.create_index("ix_task_queue", "tasks", ["project_id", "status", "is_gold", "priority"])
