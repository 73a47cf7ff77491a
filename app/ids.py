"""External identifiers: what the shop sends as event, customer and order ids."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import StringConstraints

ID_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"

ExternalId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=ID_PATTERN, strict=True)
]

CustomerIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=ID_PATTERN,
        description="The shop's customer id: 1-128 chars of `[A-Za-z0-9._:@-]`.",
        examples=["cust-42"],
    ),
]
