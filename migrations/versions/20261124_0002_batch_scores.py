"""batch scores

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
INSTANT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "score_runs",
        sa.Column("id", BIGINT_KEY, autoincrement=True, nullable=False),
        sa.Column("as_of", INSTANT, nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("customers", sa.Integer(), nullable=False),
        sa.Column("created_at", INSTANT, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_score_runs")),
    )
    op.create_table(
        "scores",
        sa.Column("run_id", BIGINT_KEY, nullable=False),
        sa.Column("customer_id", BIGINT_KEY, nullable=False),
        sa.Column("clv", sa.Float(), nullable=False),
        sa.Column("churn_probability", sa.Float(), nullable=False),
        sa.Column("lifecycle_stage", sa.String(length=16), nullable=False),
        sa.Column("value_tier", sa.String(length=8), nullable=False),
        sa.Column("expected_value_at_risk", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["score_runs.id"], name=op.f("fk_scores_run_id_score_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "customer_id", name=op.f("pk_scores")),
    )
    op.create_index("ix_scores_customer_id", "scores", ["customer_id"])
    op.create_index(
        "ix_scores_run_id_lifecycle_stage_expected_value_at_risk",
        "scores",
        ["run_id", "lifecycle_stage", "expected_value_at_risk", "customer_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_scores_run_id_lifecycle_stage_expected_value_at_risk", table_name="scores")
    op.drop_index("ix_scores_customer_id", table_name="scores")
    op.drop_table("scores")
    op.drop_table("score_runs")
