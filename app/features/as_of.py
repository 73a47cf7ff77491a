"""The `as_of` parameter of the feature and prediction endpoints: parsed, bounded, explained."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from fastapi import Query

from app.errors import FieldError, InvalidInput
from app.features.definitions import parse_as_of

#: Nothing the service stores or computes lies before this instant (events are refused before it).
EARLIEST_OCCURRED_AT = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)

AsOfQuery = Annotated[
    str | None,
    Query(
        description="RFC 3339 instant with offset, or YYYY-MM-DD (end of that UTC day). "
        "Default: now. Only events with occurred_at <= as_of count. Not later than now plus "
        "`CLV_MAX_FUTURE_SKEW_SECONDS` (a date: not after today). In a query string `+` means a "
        "space: write `+01:00` as `%2B01:00`.",
        examples=["2026-11-01T00:00:00Z"],
        max_length=64,
    ),
]

#: A `+hh:mm` offset whose `+` a query string decoded to a space.
_DECODED_PLUS = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d+)?)? \d{2}:?\d{2}$")


def _invalid(message: str, pointer: str, code: str) -> InvalidInput:
    return InvalidInput(
        "invalid field(s): as_of",
        errors=[FieldError(field="as_of", pointer=pointer, message=message, code=code)],
    )


def resolve_as_of(
    value: str | None, pointer: str = "#query/as_of", *, max_skew: dt.timedelta
) -> dt.datetime:
    """An `as_of` parameter as an aware UTC instant (now when absent), or 422 naming it.

    The future is bounded: now plus `max_skew` (the clock skew allowed to event timestamps), or
    the end of today for a plain date. Features as of 2030 would extrapolate every recency.
    """
    now = dt.datetime.now(dt.UTC)
    if value is None:
        return now
    text = value.strip()
    if _DECODED_PLUS.search(text):
        raise _invalid(
            f"{value!r} looks like an offset whose '+' arrived as a space: in a URL query a '+' "
            "means a space, so encode it as %2B (as_of=2026-11-01T00:00:00%2B01:00), or use Z",
            pointer,
            "plus_not_encoded",
        )
    try:
        moment = parse_as_of(text)
        # Nothing happened before the earliest event; the feature windows reach a year back,
        # which would overflow datetime near year 1 (a 500).
        if moment < EARLIEST_OCCURRED_AT:
            raise ValueError(f"as_of must not be before {EARLIEST_OCCURRED_AT.isoformat()}")
    except (ValueError, OverflowError) as exc:  # OverflowError: offsets at year 1 or 9999
        raise _invalid(str(exc), pointer, "invalid_as_of") from exc
    latest = now + max_skew
    if len(text) == 10:  # a whole day: today (up to its end) is fine
        latest = max(latest, dt.datetime.combine(now.date(), dt.time.max, tzinfo=dt.UTC))
    if moment > latest:
        raise _invalid(
            f"as_of {moment.isoformat().replace('+00:00', 'Z')} is in the future: at most "
            f"{int(max_skew.total_seconds())} s ahead of the server clock "
            f"({now.isoformat(timespec='seconds').replace('+00:00', 'Z')}) is allowed",
            pointer,
            "as_of_in_future",
        )
    return moment
