"""Customer profiles, history summaries, event pages and erasure."""

from __future__ import annotations

import base64
import datetime as dt
import json

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.customers.models import Customer
from app.customers.repository import CustomerRepository
from app.customers.schemas import CustomerOut, CustomerProfileIn, CustomerSummary, ErasureOut
from app.errors import FieldError, InvalidInput, NotFound
from app.events.repository import EventRepository
from app.events.schemas import EventPage, canonical_json, json_document_problem
from app.events.service import to_out


class CustomerService:
    """Customer operations; the request's session commits."""

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.settings = settings
        self.customers = CustomerRepository(session)
        self.events = EventRepository(session)

    async def require(self, external_id: str, *, for_update: bool = False) -> Customer:
        """The customer, or NotFound."""
        customer = await self.customers.get(external_id, for_update=for_update)
        if customer is None:
            raise NotFound(f"no customer with id {external_id!r}")
        return customer

    async def read(self, external_id: str) -> CustomerOut:
        """Profile plus history summary."""
        return await self._out(await self.require(external_id))

    async def put(self, external_id: str, profile: CustomerProfileIn) -> tuple[CustomerOut, bool]:
        """Create or replace the profile; returns it and whether it was created."""
        # Depth and content first: serializing a pathological document could itself fail.
        problem = json_document_problem(profile.attributes, self.settings.max_properties_depth)
        if problem is None:
            size = len(canonical_json(profile.attributes).encode())
            if size > self.settings.max_properties_bytes:
                limit = self.settings.max_properties_bytes
                problem = (f"is {size} bytes serialized; the limit is {limit}", "too_large")
        if problem:
            message, code = problem
            raise InvalidInput(
                "invalid field(s): attributes",
                errors=[
                    FieldError(
                        field="attributes", pointer="/attributes", message=message, code=code
                    )
                ],
            )
        customer, created = await self.customers.put_profile(external_id, profile.model_dump())
        return await self._out(customer), created

    async def erase(self, external_id: str) -> ErasureOut:
        """Remove the customer and every row about them."""
        # The row lock makes a concurrent ingest for this customer land wholly before or after.
        customer = await self.require(external_id, for_update=True)
        deleted = await self.customers.erase(customer)
        return ErasureOut(customer_id=external_id, deleted=deleted)

    async def events_page(self, external_id: str, limit: int, cursor: str | None) -> EventPage:
        """One page of the customer's events, newest first."""
        customer = await self.require(external_id)
        after = decode_cursor(cursor) if cursor else None
        rows = await self.events.page_for_customer(customer.id, limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1][0].occurred_at, rows[-1][1]) if more else None
        return EventPage(items=[to_out(event) for event, _ in rows], next_cursor=next_cursor)

    async def _out(self, customer: Customer) -> CustomerOut:
        s = await self.customers.summary(customer.id)
        return CustomerOut(
            customer_id=customer.external_id,
            signup_at=customer.signup_at,
            country=customer.country,
            acquisition_channel=customer.acquisition_channel,
            attributes=customer.attributes or {},
            created_at=customer.created_at,
            updated_at=customer.updated_at,
            summary=CustomerSummary(
                first_event_at=s["first_event_at"],
                last_event_at=s["last_event_at"],
                event_count=s["event_count"],
                order_count=s["order_count"],
                first_order_at=s["first_order_at"],
                last_order_at=s["last_order_at"],
                gross_revenue=s["gross"],
                refunded=s["refunded"],
                net_revenue=s["gross"] - s["refunded"],
                currency=self.settings.currency,
            ),
        )


def encode_cursor(occurred_at: dt.datetime, row_id: int) -> str:
    """An opaque cursor for keyset pagination on (occurred_at, id)."""
    raw = json.dumps([occurred_at.astimezone(dt.UTC).isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    """The position a cursor stands for, or InvalidInput."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, row_id = json.loads(raw)
        occurred_at = dt.datetime.fromisoformat(stamp)
        if occurred_at.tzinfo is None or not isinstance(row_id, int):
            raise ValueError(cursor)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            "cursor is not one this API issued",
            errors=[
                FieldError(
                    field="cursor",
                    pointer="#query/cursor",
                    message="invalid cursor",
                    code="invalid_cursor",
                )
            ],
        ) from exc
    return occurred_at, row_id
