"""daily rollups

Per-customer daily rollups of the events (app.features.models.DailyRollup), backfilled from
the existing events in batches of customer ids. Every batch is one idempotent statement
(INSERT ... SELECT ... ON CONFLICT DO UPDATE with values recomputed from the events), and a
re-run starts again at the batch holding the highest customer id already rolled up, so an
interrupted backfill whose batches were committed resumes where it stopped, and a repeated one
changes nothing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INSTANT = sa.DateTime(timezone=True)
BATCH_CUSTOMERS = 10_000


def upgrade() -> None:
    bind = op.get_bind()
    if not sa.inspect(bind).has_table("daily_rollups"):
        counts = (
            "n_events",
            "n_timed",
            "n_refunds",
            "n_orders",
            "n_sessions",
            "n_product_views",
            "n_carts",
        )
        instants = ("first_at", "last_at", "last_activity_at", "first_order_at", "last_order_at")
        op.create_table(
            "daily_rollups",
            sa.Column(
                "customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
            ),
            sa.Column("day", sa.Integer(), nullable=False),
            *(sa.Column(name, sa.Integer(), nullable=False) for name in counts),
            sa.Column("order_cents", sa.BigInteger(), nullable=False),
            sa.Column("refund_cents", sa.BigInteger(), nullable=False),
            *(sa.Column(name, INSTANT, nullable=True) for name in instants),
            sa.PrimaryKeyConstraint("customer_id", "day", name=op.f("pk_daily_rollups")),
        )
    backfill(bind)


def backfill(bind: sa.Connection) -> None:
    """Roll up every customer's events, BATCH_CUSTOMERS ids at a time, from where it stopped."""
    from app.features.rollups import backfill_sql

    statement = sa.text(backfill_sql(bind.dialect.name))
    top = bind.execute(sa.text("SELECT MAX(customer_id) FROM events")).scalar()
    if top is None:
        return
    done = bind.execute(sa.text("SELECT MAX(customer_id) FROM daily_rollups")).scalar()
    lo = 0 if done is None else (int(done) // BATCH_CUSTOMERS) * BATCH_CUSTOMERS
    while lo <= int(top):
        bind.execute(statement, {"lo": lo, "hi": lo + BATCH_CUSTOMERS})
        lo += BATCH_CUSTOMERS


def downgrade() -> None:
    op.drop_table("daily_rollups")
