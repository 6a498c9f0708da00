"""Statuses for plan approval: jobs `awaiting_approval` and `cancelled`, steps `waiting`.

Revision ID: 0003
Revises: 0002

The CHECK constraints are dropped and recreated (batch mode recreates the table on SQLite).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_JOB = ("queued", "running", "succeeded", "failed", "rejected", "interrupted")
NEW_JOB = (*OLD_JOB, "awaiting_approval", "cancelled")
OLD_STEP = ("running", "succeeded", "failed")
NEW_STEP = (*OLD_STEP, "waiting")


def _in_list(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


def _replace_checks(job_values: tuple[str, ...], step_values: tuple[str, ...]) -> None:
    for table, values in (("jobs", job_values), ("job_steps", step_values)):
        with op.batch_alter_table(table, recreate="auto") as batch:
            batch.drop_constraint(op.f(f"ck_{table}_status"), type_="check")
            batch.create_check_constraint(op.f(f"ck_{table}_status"), _in_list(values))


def upgrade() -> None:
    _replace_checks(NEW_JOB, NEW_STEP)


def downgrade() -> None:
    _replace_checks(OLD_JOB, OLD_STEP)
