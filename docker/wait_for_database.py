"""Wait, with a bounded retry, until CLV_DATABASE_URL accepts connections (and, with --at-head, is migrated).

The entrypoint runs this before serve/migrate/train/... when CLV_WAIT_FOR_DATABASE_SECONDS > 0, so
a stack comes up in any start order (podman-compose ignores `depends_on: condition:`). Hand-written
rather than a wait-for-it tool: it must use the app's own URL handling and schema check.
"""

from __future__ import annotations

import argparse
import sys
import time


def main() -> int:
    """Exit 0 once the database is reachable (and at head), 1 when the time is up."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeout", type=float, required=True, help="give up after N seconds")
    parser.add_argument("--at-head", action="store_true", help="also wait for the migrations")
    args = parser.parse_args()

    from sqlalchemy import text

    from app.config import get_settings
    from app.db import create_sync_engine
    from app.schema import check_at_head

    settings = get_settings()
    engine = create_sync_engine(settings)
    deadline = time.monotonic() + args.timeout
    delay, last = 0.25, ""
    try:
        while True:
            try:
                with engine.connect() as connection:
                    connection.execute(text("select 1"))
                    if args.at_head:
                        check_at_head(connection)
                return 0
            except Exception as exc:  # any failure (refused, auth, not migrated) means: not yet
                reason = (
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                )
                if reason != last:
                    sys.stderr.write(f"entrypoint: waiting for the database: {reason}\n")
                    last = reason
            if time.monotonic() + delay > deadline:
                sys.stderr.write(
                    f"entrypoint: database not ready after {args.timeout:g} s: {last}\n"
                )
                return 1
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
