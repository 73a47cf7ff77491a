"""Structured logs: one JSON object per line, tagged with the id of the request being served.

Never log request bodies, query strings or event properties: access lines carry the route
template, not the raw path, and the driver loggers that could print SQL parameters are capped.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

import orjson

#: The id of the request the current task serves (set by the request middleware).
REQUEST_ID: ContextVar[str | None] = ContextVar("clv_request_id", default=None)

#: Attributes every LogRecord has; anything else on a record came from `extra=` and is emitted.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}

# One access line per request is on the hot path: these lines print no caller, thread or process
# name, so spare logging the stack walk and lookups it would do for every record (logging HOWTO,
# "Optimization").
logging._srcfile = None
logging.logThreads = False
logging.logMultiprocessing = False

#: Capped at WARNING: the drivers would print SQL with its parameters (event properties!) at
#: debug/info level, and alembic chats about its plugins on every worker start.
_QUIET = ("sqlalchemy", "aiosqlite", "asyncio", "alembic")


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "pid", "request_id", ...extra, "error"}` per line."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            document["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                document[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            document["error"] = {
                "type": type(error).__qualname__,
                "message": str(error),
                "stack": self.formatException(record.exc_info),
            }
        if record.stack_info:
            document["stack_info"] = record.stack_info
        return orjson.dumps(document, default=str).decode()


_second: tuple[int, str] = (-1, "")


def _timestamp(created: float) -> str:
    """RFC 3339 UTC with milliseconds; the part up to the second is formatted once per second."""
    global _second
    whole = int(created)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int((created - whole) * 1000):03d}Z"


def logging_config(level: str) -> dict[str, Any]:
    """A dictConfig for the service and uvicorn: JSON on stdout, uvicorn's access log off."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            # uvicorn's loggers propagate to the root handler instead of their own plain-text ones.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            # Replaced by clv.access (route templates, request ids, durations).
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            **{name: {"level": "WARNING"} for name in _QUIET},
        },
    }
