"""daily rollups

Per-customer daily rollups of the events (app.features.models.DailyRollup), backfilled from
the existing events in batches of customer ids. Every batch is one idempotent statement
(INSERT ... SELECT ... ON CONFLICT DO UPDATE with values recomputed from the events) that
commits on its own (an alembic autocommit block: the table is committed first, each batch
after), and a re-run starts again at the batch holding the highest customer id already rolled
up: an interrupted backfill resumes where it stopped (the table exists, the revision is still
0004), a repeated one changes nothing, and the result is the same as one uninterrupted run.

CLV_ROLLUP_BACKFILL_BATCH sets the customer ids per batch (default 10,000);
CLV_ROLLUP_BACKFILL_MAX_BATCHES stops the backfill with an error after that many batches (for
testing an interruption; unset in normal use).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INSTANT = sa.DateTime(timezone=True)
BATCH_CUSTOMERS = 10_000
BATCH_ENV = "CLV_ROLLUP_BACKFILL_BATCH"
MAX_BATCHES_ENV = "CLV_ROLLUP_BACKFILL_MAX_BATCHES"


class BackfillInterrupted(RuntimeError):
    """CLV_ROLLUP_BACKFILL_MAX_BATCHES batches were committed and the backfill stopped there."""


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
    size = os.environ.get(BATCH_ENV)
    limit = os.environ.get(MAX_BATCHES_ENV)
    # Commits the migration's transaction so far (the table), then every batch statement on
    # its own: an interruption loses at most the batch in flight, not the whole backfill.
    with op.get_context().autocommit_block():
        backfill(
            op.get_bind(),
            batch=int(size) if size else None,
            max_batches=int(limit) if limit else None,
        )


def backfill(bind: sa.Connection, batch: int | None = None, max_batches: int | None = None) -> None:
    """Roll up every customer's events, `batch` (BATCH_CUSTOMERS) ids at a time, from where it
    stopped.

    Each batch is one statement: in autocommit (the migration) each commits by itself. With
    `max_batches`, raise BackfillInterrupted after that many batches (a stand-in for a crash).
    """
    from app.features.rollups import backfill_sql

    size = batch or BATCH_CUSTOMERS
    statement = sa.text(backfill_sql(bind.dialect.name))
    top = bind.execute(sa.text("SELECT MAX(customer_id) FROM events")).scalar()
    if top is None:
        return
    done = bind.execute(sa.text("SELECT MAX(customer_id) FROM daily_rollups")).scalar()
    lo = 0 if done is None else (int(done) // size) * size
    batches = 0
    while lo <= int(top):
        if max_batches is not None and batches >= max_batches:
            raise BackfillInterrupted(
                f"rollup backfill stopped after {batches} batches ({MAX_BATCHES_ENV}); "
                f"customer ids below {lo} are rolled up, run the migration again to resume"
            )
        bind.execute(statement, {"lo": lo, "hi": lo + size})
        batches += 1
        lo += size


def downgrade() -> None:
    op.drop_table("daily_rollups")
