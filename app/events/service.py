"""Event ingestion: validation against the shop's policy, idempotent conflict-tolerant storage."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import PROBLEM_BASE, Conflict, FieldError, InvalidInput, field_errors, pointer_for
from app.events.models import EventType
from app.events.repository import EventRepository, StoredEvent
from app.events.schemas import (
    BatchItemResult,
    EventBatchResult,
    EventIn,
    EventOut,
    ItemError,
    canonical_json,
    json_document_problem,
)
from app.observability import metrics

_EVENT = TypeAdapter(EventIn)
_CENT = Decimal("0.01")
_DEADLOCK_RETRIES = 3


def policy_errors(event: EventIn, settings: Settings, now: dt.datetime) -> list[FieldError]:
    """Rules that depend on the deployment: currency, clock skew, properties limits."""
    errors: list[FieldError] = []

    def add(field: str, message: str, code: str) -> None:
        name, pointer = pointer_for([field])
        errors.append(FieldError(field=name, pointer=pointer, message=message, code=code))

    if event.currency is not None and event.currency != settings.currency:
        add(
            "currency",
            f"must be {settings.currency}, the service's currency; amounts are never converted",
            "currency_mismatch",
        )
    latest = now + dt.timedelta(seconds=settings.max_future_skew_seconds)
    if event.occurred_at > latest:
        add(
            "occurred_at",
            f"is more than {settings.max_future_skew_seconds} s in the future",
            "too_far_in_future",
        )
    if event.properties is not None:
        # Depth and content first: serializing a pathological document could itself fail.
        problem = json_document_problem(event.properties, settings.max_properties_depth)
        size = 0 if problem else len(canonical_json(event.properties).encode())
        if problem:
            add("properties", *problem)
        elif size > settings.max_properties_bytes:
            add(
                "properties",
                f"is {size} bytes serialized; the limit is {settings.max_properties_bytes}",
                "too_large",
            )
    return errors


def to_out(event: StoredEvent) -> EventOut:
    """The API view of a stored event."""
    return EventOut(
        event_id=event.event_id,
        customer_id=event.customer_id,
        type=EventType(event.type),
        occurred_at=event.occurred_at,
        amount=event.amount,
        currency=event.currency,
        order_id=event.order_id,
        properties=event.properties,
        received_at=event.received_at,
    )


def _stored_fingerprint(event: StoredEvent) -> tuple[Any, ...]:
    return (
        event.customer_id,
        event.type,
        event.occurred_at.astimezone(dt.UTC),
        None if event.amount is None else event.amount.normalize(),
        event.currency,
        event.order_id,
        canonical_json(event.properties) if event.properties is not None else None,
    )


@dataclass(frozen=True)
class Stored:
    """Outcome of storing one valid event."""

    status: Literal["created", "duplicate", "conflict"]
    event: StoredEvent


@dataclass(frozen=True)
class BatchOutcome:
    """A batch's answer and the validated events it accepted (created or duplicate), in order."""

    result: EventBatchResult
    accepted: list[EventIn]


class EventService:
    """Stores events idempotently; the request's session commits."""

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.events = EventRepository(session)

    def check(self, event: EventIn, now: dt.datetime) -> None:
        """Raise InvalidInput when the event breaks a deployment rule."""
        errors = policy_errors(event, self.settings, now)
        if errors:
            names = ", ".join(e.field for e in errors)
            raise InvalidInput(f"invalid field(s): {names}", errors=errors)

    async def ingest_one(self, event: EventIn) -> Stored:
        """Store one event: created, duplicate, or Conflict when the id is taken by other content."""
        try:
            self.check(event, _now())
        except InvalidInput:
            metrics.observe_events([(event.type, "rejected")])
            raise
        [stored] = await self.store([event])
        metrics.observe_events(
            [(event.type, "rejected" if stored.status == "conflict" else stored.status)]
        )
        if stored.status == "conflict":
            raise Conflict(
                f"event_id {event.event_id!r} was already stored with different content; "
                "event ids are idempotency keys and cannot be reused"
            )
        return stored

    async def ingest_batch(self, items: Sequence[Any]) -> EventBatchResult:
        """Validate each item on its own; store the valid ones in one transaction."""
        return (await self.ingest_batch_events(items)).result

    async def ingest_batch_events(self, items: Sequence[Any]) -> BatchOutcome:
        """`ingest_batch`, also returning the validated events that were stored (or duplicates)."""
        if len(items) > self.settings.max_batch_events:
            raise InvalidInput(
                f"a batch holds at most {self.settings.max_batch_events} events, got {len(items)}",
                errors=[
                    FieldError(
                        field="events",
                        pointer="/events",
                        message=f"at most {self.settings.max_batch_events} items",
                        code="too_long",
                    )
                ],
            )
        now = _now()
        results: list[BatchItemResult | None] = [None] * len(items)
        valid: list[tuple[int, EventIn]] = []
        first_index: dict[str, int] = {}
        for index, raw in enumerate(items):
            event_id = raw.get("event_id") if isinstance(raw, dict) else None
            event_id = event_id if isinstance(event_id, str) else None
            try:
                event = _EVENT.validate_python(raw)
            except ValidationError as exc:
                errors = field_errors(exc.errors(include_url=False), prefix=["events", index])
                results[index] = _rejected(index, event_id, "validation", errors)
                continue
            errors = [
                e.model_copy(
                    update={
                        "field": f"events.{index}.{e.field}",
                        "pointer": f"/events/{index}{e.pointer}",
                    }
                )
                for e in policy_errors(event, self.settings, now)
            ]
            if errors:
                results[index] = _rejected(index, event.event_id, "validation", errors)
                continue
            if event.event_id in first_index:  # repeated inside this very batch
                first = valid[first_index[event.event_id]][1]
                if first.fingerprint() == event.fingerprint():
                    results[index] = BatchItemResult(
                        index=index, event_id=event.event_id, status="duplicate"
                    )
                else:
                    results[index] = _rejected(index, event.event_id, "conflict", None)
                continue
            first_index[event.event_id] = len(valid)
            valid.append((index, event))
        stored = await self.store([event for _, event in valid])
        for (index, event), outcome in zip(valid, stored, strict=True):
            if outcome.status == "conflict":
                results[index] = _rejected(index, event.event_id, "conflict", None)
            else:
                results[index] = BatchItemResult(
                    index=index, event_id=event.event_id, status=outcome.status
                )
        final = [r for r in results if r is not None]
        metrics.observe_events(
            (items[r.index].get("type") if isinstance(items[r.index], dict) else None, r.status)
            for r in final
        )
        result = EventBatchResult(
            created=sum(r.status == "created" for r in final),
            duplicates=sum(r.status == "duplicate" for r in final),
            rejected=sum(r.status == "rejected" for r in final),
            results=final,
        )
        by_id = {event.event_id: event for _, event in valid}
        accepted = [
            by_id[r.event_id] for r in final if r.status != "rejected" and r.event_id is not None
        ]
        return BatchOutcome(result, accepted)

    async def store(self, events: Sequence[EventIn]) -> list[Stored]:
        """Insert events with distinct ids; classify those whose id was already stored."""
        for attempt in range(_DEADLOCK_RETRIES + 1):
            try:
                return await self._store_once(events)
            except DBAPIError as exc:
                if attempt == _DEADLOCK_RETRIES or not _is_retryable(exc):
                    raise
                await self.session.rollback()
        raise AssertionError("unreachable")

    async def _store_once(self, events: Sequence[EventIn]) -> list[Stored]:
        if not events:
            return []
        customer_pks = await self.events.ensure_customers(e.customer_id for e in events)
        rows = [
            {
                "event_id": e.event_id,
                "customer_id": customer_pks[e.customer_id],
                "type": e.type.value,
                "occurred_at": e.occurred_at,
                "amount": e.amount,
                "currency": e.currency,
                "order_id": e.order_id,
                "properties": e.properties,
            }
            for e in events
        ]
        inserted = await self.events.insert_many(rows)
        # Only ids that were already taken need a read: duplicate or conflict?
        earlier = await self.events.by_event_ids(
            e.event_id for e in events if e.event_id not in inserted
        )
        outcomes = []
        for e in events:
            received_at = inserted.get(e.event_id)
            if received_at is not None:
                outcomes.append(Stored("created", _as_stored(e, received_at)))
                continue
            row = earlier[e.event_id]
            status: Literal["duplicate", "conflict"] = (
                "duplicate" if _stored_fingerprint(row) == e.fingerprint() else "conflict"
            )
            outcomes.append(Stored(status, row))
        return outcomes


def _as_stored(event: EventIn, received_at: dt.datetime) -> StoredEvent:
    """What the database now holds for a freshly inserted event (without reading it back)."""
    return StoredEvent(
        event_id=event.event_id,
        customer_id=event.customer_id,
        type=event.type.value,
        occurred_at=event.occurred_at.astimezone(dt.UTC),
        amount=None if event.amount is None else event.amount.quantize(_CENT),
        currency=event.currency,
        order_id=event.order_id,
        properties=event.properties,
        received_at=received_at,
    )


def _rejected(
    index: int,
    event_id: str | None,
    kind: Literal["validation", "conflict"],
    errors: list[FieldError] | None,
) -> BatchItemResult:
    if kind == "conflict":
        error = ItemError(
            type=PROBLEM_BASE + "conflict",
            title="Conflict",
            detail=f"event_id {event_id!r} is already used by an event with different content",
        )
    else:
        names = ", ".join(e.field for e in errors or [])
        error = ItemError(
            type=PROBLEM_BASE + "validation",
            title="Request validation failed",
            detail=f"invalid field(s): {names}",
            errors=errors,
        )
    return BatchItemResult(index=index, event_id=event_id, status="rejected", error=error)


def _is_retryable(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40P01", "40001")  # deadlock_detected, serialization_failure


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
