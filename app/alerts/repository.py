"""SQL for customer states and alerts: locking states, upserting them, the outbox, the feed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, TextClause, any_, bindparam, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.models import Alert, CustomerState
from app.customers.models import Customer

_STATE_COLUMNS = (
    CustomerState.clv,
    CustomerState.churn_probability,
    CustomerState.lifecycle_stage,
    CustomerState.value_tier,
    CustomerState.expected_value_at_risk,
    CustomerState.model_version,
    CustomerState.as_of,
)


def _states(dialect: str) -> Any:
    query = (
        select(Customer.id, Customer.external_id, *_STATE_COLUMNS)
        .outerjoin(CustomerState, CustomerState.customer_id == Customer.id)
        .order_by(Customer.id)
    )
    if dialect == "postgresql":
        # One writer of a customer's state at a time, in key order (no deadlocks between two
        # set-based writers). NO KEY UPDATE: event inserts (FOR KEY SHARE through their foreign
        # key) and score runs go on; an erasure waits, and vice versa. SQLite has one writer.
        query = query.with_for_update(of=Customer, key_share=True)
    return query


def states_by_pk_query(dialect: str, pks: Sequence[int]) -> Any:
    """Lock customers by internal id and read their stored states (None columns: never scored)."""
    if dialect == "postgresql":
        ids = bindparam("ids", list(pks), type_=ARRAY(BigInteger()))
        return _states(dialect).where(Customer.id == any_(ids))
    return _states(dialect).where(Customer.id.in_(list(pks)))


def states_by_external_id_query(dialect: str, external_ids: Sequence[str]) -> Any:
    """Lock customers by external id and read their stored states."""
    return _states(dialect).where(Customer.external_id.in_(list(external_ids)))


def upsert_states_statement(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (customer_id) DO UPDATE for executemany over state rows."""
    statement = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(CustomerState)
    return statement.on_conflict_do_update(
        index_elements=[CustomerState.customer_id],
        set_={
            c: getattr(statement.excluded, c)
            for c in (
                "clv",
                "churn_probability",
                "lifecycle_stage",
                "value_tier",
                "expected_value_at_risk",
                "model_version",
                "as_of",
                "scored_at",
            )
        },
    )


#: pg_advisory_xact_lock key that orders alert inserts by commit ("clv-alrt").
FEED_ORDER_KEY = 0x636C_762D_616C_7274
_FEED_ORDER_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=FEED_ORDER_KEY)


def feed_order_lock_statement(dialect: str) -> TextClause | None:
    """The lock a transaction takes right before it inserts alerts, held until it commits.

    The feed pages by id (`GET /v1/alerts?cursor=`), and ids come from a sequence when the row
    is inserted, not when it commits: without this, a transaction that drew id 9 and commits
    after another one's id 10 was read would be behind every reader's cursor, never seen. With
    it, alert-writing transactions draw their ids and commit one at a time, so the ids a reader
    can see are always a prefix of those that will ever exist. Only the last statements of
    those transactions are serialized (the insert, then the commit); nothing else waits on it,
    and nothing a transaction locks after taking it (foreign-key share locks on customers) is
    held by a transaction waiting for it. SQLite serializes writers already: None.
    """
    return _FEED_ORDER_LOCK if dialect == "postgresql" else None


def insert_alerts_statement() -> Any:
    """INSERT of alert rows (executemany)."""
    return insert(Alert)


class AlertRepository:
    """Reads the alert feed through the request's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def page(
        self,
        after_id: int | None,
        since: dt.datetime | None,
        types: Sequence[str] | None,
        limit: int,
    ) -> list[Alert]:
        """Alerts in id order after a cursor, optionally since an instant and of some types."""
        query = select(Alert).order_by(Alert.id).limit(limit)
        if after_id is not None:
            query = query.where(Alert.id > after_id)
        if since is not None:
            query = query.where(Alert.occurred_at >= since)
        if types:
            query = query.where(Alert.type.in_(list(types)))
        return list((await self.session.execute(query)).scalars())
