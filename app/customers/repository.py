"""SQL for customer profiles, summaries and erasure."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.customers.models import Customer
from app.events.models import Event, EventType
from app.events.repository import dialect_insert
from app.features.models import DailyRollup
from app.scoring.models import StoredScore


class CustomerRepository:
    """Reads and writes customers; never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, external_id: str, *, for_update: bool = False) -> Customer | None:
        """The customer with this external id, optionally row-locked until commit."""
        query = select(Customer).where(Customer.external_id == external_id)
        if for_update:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def put_profile(self, external_id: str, profile: dict[str, Any]) -> tuple[Customer, bool]:
        """Create or replace the profile; returns the customer and whether it was created."""
        created_id = (
            await self.session.execute(
                dialect_insert(self.session, Customer)
                .values(external_id=external_id, **profile)
                .on_conflict_do_nothing(index_elements=["external_id"])
                .returning(Customer.id)
            )
        ).scalar_one_or_none()
        if created_id is None:
            await self.session.execute(
                update(Customer)
                .where(Customer.external_id == external_id)
                .values(**profile, updated_at=func.now())
            )
        customer = await self.get(external_id)
        assert customer is not None
        await self.session.refresh(customer)
        return customer, created_id is not None

    async def summary(self, customer_pk: int) -> dict[str, Any]:
        """Aggregates over all of the customer's events."""
        is_order = Event.type == EventType.order.value
        is_refund = Event.type == EventType.refund.value
        row = (
            await self.session.execute(
                select(
                    func.min(Event.occurred_at).label("first_event_at"),
                    func.max(Event.occurred_at).label("last_event_at"),
                    func.count().label("event_count"),
                    func.count(case((is_order, 1))).label("order_count"),
                    func.min(case((is_order, Event.occurred_at))).label("first_order_at"),
                    func.max(case((is_order, Event.occurred_at))).label("last_order_at"),
                    func.coalesce(func.sum(case((is_order, Event.amount))), 0).label("gross"),
                    func.coalesce(func.sum(case((is_refund, Event.amount))), 0).label("refunded"),
                ).where(Event.customer_id == customer_pk)
            )
        ).one()
        summary = dict(row._mapping)
        summary["gross"] = Decimal(summary["gross"]).quantize(Decimal("0.01"))
        summary["refunded"] = Decimal(summary["refunded"]).quantize(Decimal("0.01"))
        return summary

    async def erase(self, customer: Customer) -> dict[str, int]:
        """Delete every row about the customer; counts by table."""
        events = await self.session.execute(delete(Event).where(Event.customer_id == customer.id))
        await self.session.execute(
            delete(DailyRollup).where(DailyRollup.customer_id == customer.id)
        )
        scores = await self.session.execute(
            delete(StoredScore).where(StoredScore.customer_id == customer.id)
        )
        customers = await self.session.execute(delete(Customer).where(Customer.id == customer.id))
        return {
            "customers": customers.rowcount,  # type: ignore[attr-defined]
            "events": events.rowcount,  # type: ignore[attr-defined]
            "scores": scores.rowcount,  # type: ignore[attr-defined]
        }
