"""HTTP endpoints for customers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status

from app.auth.dependencies import CustomerEraser, EventsWriter, PredictionsReader
from app.config import SettingsDep
from app.content import JsonBody
from app.customers.schemas import PROFILE_EXAMPLE, CustomerOut, CustomerProfileIn, ErasureOut
from app.customers.service import CustomerService
from app.db import SessionDep
from app.errors import problem_responses
from app.events.schemas import EventPage
from app.ids import CustomerIdPath

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.put(
    "/{customer_id}",
    response_model=CustomerOut,
    responses={
        201: {"model": CustomerOut, "description": "Created."},
        **problem_responses(
            400, 401, 403, 413, 415, 422, examples={422: ("invalid-customer-id", "malformed-json")}
        ),
    },
    summary="Create or replace a customer profile",
)
async def put_customer(
    _auth: EventsWriter,
    _json: JsonBody,
    customer_id: CustomerIdPath,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    profile: Annotated[
        CustomerProfileIn,
        Body(openapi_examples={"profile": {"summary": "A full profile", "value": PROFILE_EXAMPLE}}),
    ],
) -> CustomerOut:
    """Create the customer (201) or replace their profile attributes (200); events are untouched."""
    out, created = await CustomerService(session, settings).put(customer_id, profile)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return out


@router.get(
    "/{customer_id}",
    response_model=CustomerOut,
    responses=problem_responses(401, 403, 404, 422),
    summary="Read a customer",
)
async def get_customer(
    _auth: PredictionsReader,
    customer_id: CustomerIdPath,
    session: SessionDep,
    settings: SettingsDep,
) -> CustomerOut:
    """The profile plus a summary of the event history: first/last event, orders, net revenue."""
    return await CustomerService(session, settings).read(customer_id)


@router.get(
    "/{customer_id}/events",
    response_model=EventPage,
    responses=problem_responses(401, 403, 404, 422),
    summary="List a customer's events",
)
async def list_customer_events(
    _auth: PredictionsReader,
    customer_id: CustomerIdPath,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
) -> EventPage:
    """The customer's events, newest first (by `occurred_at`), with cursor pagination."""
    return await CustomerService(session, settings).events_page(customer_id, limit, cursor)


@router.delete(
    "/{customer_id}",
    response_model=ErasureOut,
    responses=problem_responses(401, 403, 404, 422),
    summary="Erase a customer",
)
async def erase_customer(
    _auth: CustomerEraser, customer_id: CustomerIdPath, session: SessionDep, settings: SettingsDep
) -> ErasureOut:
    """Erasure (GDPR art. 17): delete the customer and every row about them; returns the counts."""
    return await CustomerService(session, settings).erase(customer_id)
