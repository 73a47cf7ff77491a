"""Request bodies are JSON: a body sent as a form, as text or without a media type gets a 415
that names the header to send, instead of a validation error about "a valid dictionary"."""

from __future__ import annotations

import email.message
from typing import Annotated

from fastapi import Depends, Request

from app.errors import AppError


class UnsupportedMediaType(AppError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


def is_json(content_type: str | None) -> bool:
    """True for application/json and application/*+json, parameters (charset) allowed."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def require_json(request: Request) -> None:
    """415 unless the request says its body is JSON (declare it after the auth dependency)."""
    content_type = request.headers.get("content-type")
    if not is_json(content_type):
        sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        raise UnsupportedMediaType(
            f"the body must be JSON sent with `Content-Type: application/json`; this request "
            f"has {sent} (e.g. curl -H 'Content-Type: application/json' -d '{{...}}')",
            headers={"Accept-Post": "application/json"},
        )


JsonBody = Annotated[None, Depends(require_json)]
