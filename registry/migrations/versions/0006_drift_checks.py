"""Drift checks of served models (results, decisions, actions), claimed by workers like jobs.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    statuses = ", ".join(repr(s) for s in ("queued", "running", "succeeded", "failed", "awaiting_approval"))
    op.create_table(
        "drift_checks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("spec", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column("champion_version", sa.String(length=20), nullable=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("n_rows", sa.Integer(), nullable=True),
        sa.Column("decision", sa.String(length=30), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("results", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("challenger_version", sa.String(length=20), nullable=True),
        sa.Column("promoted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("retrain_job_id", sa.String(length=32), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker_id", sa.String(length=100), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pending_decision", sa.JSON(none_as_null=True), nullable=True),
        sa.CheckConstraint(f"status IN ({statuses})", name=op.f("ck_drift_checks_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_checks")),
        sa.UniqueConstraint("model_name", "scheduled_for", name=op.f("uq_drift_checks_model_name_scheduled_for")),
    )
    op.create_index(op.f("ix_drift_checks_model_name"), "drift_checks", ["model_name"])
    op.create_index(op.f("ix_drift_checks_created_at"), "drift_checks", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_drift_checks_created_at"), table_name="drift_checks")
    op.drop_index(op.f("ix_drift_checks_model_name"), table_name="drift_checks")
    op.drop_table("drift_checks")
