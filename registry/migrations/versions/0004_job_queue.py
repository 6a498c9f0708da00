"""Job queue columns on `jobs`: claiming worker, heartbeat, attempts, queued approval answer, cancel flag.

Revision ID: 0004
Revises: 0003

Used by `pipelines.worker`: a worker claims a queued job (`worker_id`, `attempts`),
keeps `heartbeat_at` fresh while it runs it, and a job whose heartbeat stops is
queued again. `pending_decision` holds an approval answer until a worker resumes
the job with it; `cancel_requested` asks the process running a job to stop it.

Batch mode, as in 0003, so the downgrade can drop the columns on SQLite.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", recreate="auto") as batch:
        batch.add_column(sa.Column("worker_id", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("pending_decision", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("jobs", recreate="auto") as batch:
        for column in ("cancel_requested", "pending_decision", "attempts", "heartbeat_at", "worker_id"):
            batch.drop_column(column)
