"""Standard Webhooks signatures (https://www.standardwebhooks.com), through the
`standardwebhooks` reference library."""

from __future__ import annotations

import base64
import datetime as dt
import secrets

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature_header(
    secrets_in_use: list[str], message_id: str, timestamp: dt.datetime, body: str
) -> str:
    """`webhook-signature`: one `v1,<base64 HMAC-SHA256 of id.timestamp.body>` per secret
    (two during a rotation's grace period), space-separated."""
    # The library formats the timestamp with replace(tzinfo=utc), which is only right for an
    # instant already in UTC: normalise first.
    moment = timestamp.astimezone(dt.UTC)
    return " ".join(Webhook(s).sign(message_id, moment, body) for s in secrets_in_use)
