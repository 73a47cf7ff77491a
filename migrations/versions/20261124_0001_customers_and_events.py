"""customers and events

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
INSTANT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("id", BIGINT_KEY, autoincrement=True, nullable=False),
        sa.Column("external_id", sa.String(length=128), nullable=False),
        sa.Column("signup_at", INSTANT, nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("acquisition_channel", sa.String(length=64), nullable=True),
        sa.Column("attributes", JSON_DOCUMENT, server_default="{}", nullable=False),
        sa.Column("created_at", INSTANT, server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", INSTANT, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("external_id", name=op.f("uq_customers_external_id")),
    )
    op.create_table(
        "events",
        sa.Column("id", BIGINT_KEY, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", BIGINT_KEY, nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", INSTANT, nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("order_id", sa.String(length=128), nullable=True),
        sa.Column("properties", JSON_DOCUMENT, nullable=True),
        sa.Column("received_at", INSTANT, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "type IN ('order', 'refund', 'session', 'page_view', 'product_view', "
            "'add_to_cart', 'checkout_start', 'search')",
            name=op.f("ck_events_known_type"),
        ),
        sa.CheckConstraint(
            "(type IN ('order', 'refund')) = (amount IS NOT NULL AND currency IS NOT NULL)",
            name=op.f("ck_events_money_only_on_orders_and_refunds"),
        ),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_events_amount_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_events_event_id")),
    )
    op.create_index("ix_events_customer_id_occurred_at", "events", ["customer_id", "occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_events_customer_id_occurred_at", table_name="events")
    op.drop_table("events")
    op.drop_table("customers")
