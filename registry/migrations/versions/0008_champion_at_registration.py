"""`model_versions.promoted` becomes `champion_at_registration`: what the gate did when the version was registered.

Whether a version is champion *now* is the MLflow `champion` alias alone (promote, rollback and drift retraining
move it); the old name read as the current state, and `poise show` named a rolled-back version as champion.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.alter_column("promoted", new_column_name="champion_at_registration")


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.alter_column("champion_at_registration", new_column_name="promoted")
