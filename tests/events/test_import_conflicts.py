"""`clv import-transactions` treats a reused event_id with other content as the API does (409):
it names every conflicting line, stores nothing of the file and exits non-zero."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from app.config import Settings
from app.db import sync_url
from app.events.models import Event
from tests.events.test_import import CDNOW_SAMPLE, clv, totals
from tests.factories import event

HEADER = "customer_id,occurred_at,amount,order_id,type,event_id\n"


def amounts(settings: Settings) -> dict[str, Decimal | None]:
    engine = create_engine(sync_url(settings.database_url))
    with engine.connect() as connection:
        rows = connection.execute(select(Event.event_id, Event.amount)).all()
    engine.dispose()
    return dict(rows)


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_a_reused_event_id_with_other_content_is_refused_by_line(
    backend: str, settings: Settings, sqlite_settings: Settings, tmp_path: Path
) -> None:
    target = settings if backend == "postgres" else sqlite_settings
    first = tmp_path / "first.csv"
    first.write_text(HEADER + "c1,2025-01-01T10:00:00Z,10.50,o1,order,e-1\n")
    assert clv(target, "import-transactions", str(first)).returncode == 0
    second = tmp_path / "second.csv"
    second.write_text(
        HEADER
        + "c2,2025-02-01T10:00:00Z,7.00,o2,order,e-2\n"  # new: must not be stored either
        + "c1,2025-01-01T10:00:00Z,99.00,o1,order,e-1\n"  # same id, other amount
        + "c3,2025-03-01T10:00:00Z,1.00,,order,\n"  # new, derived id
    )
    result = clv(target, "import-transactions", str(second))
    assert result.returncode != 0, result.stdout
    assert f"{second}:3" in result.stderr, result.stderr
    assert "e-1" in result.stderr
    assert f"{second}:2" not in result.stderr
    assert f"{second}:4" not in result.stderr
    assert "nothing was imported" in result.stderr
    assert amounts(target) == {"e-1": Decimal("10.50")}  # nothing of the file, e-1 untouched

    # The same file without the conflicting line goes in; an identical re-import adds nothing.
    second.write_text(HEADER + "c2,2025-02-01T10:00:00Z,7.00,o2,order,e-2\n")
    assert clv(target, "import-transactions", str(second)).returncode == 0
    again = clv(target, "import-transactions", str(second))
    assert again.returncode == 0, again.stderr
    assert "imported 0 new events (1 already stored)" in again.stdout


async def test_an_event_stored_by_the_api_conflicts_with_the_import(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    body = event("order", event_id="api-1", customer_id="c9", amount="5.00", order_id="o9")
    assert (await client.post("/v1/events", json=body)).status_code == 201
    log = tmp_path / "tx.csv"
    # Same content but another customer; then the API's exact content (a duplicate, not a conflict).
    log.write_text(HEADER + f"c8,{body['occurred_at']},5.00,o9,order,api-1\n")
    result = clv(settings, "import-transactions", str(log))
    assert result.returncode != 0
    assert f"{log}:2" in result.stderr
    log.write_text(HEADER + f"c9,{body['occurred_at']},5.00,o9,order,api-1\n")
    same = clv(settings, "import-transactions", str(log))
    assert same.returncode == 0, same.stderr
    assert "imported 0 new events (1 already stored)" in same.stdout


def test_an_id_reused_inside_one_file_with_other_content_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "tx.csv"
    log.write_text(
        HEADER
        + "c1,2025-01-01T10:00:00Z,10.00,o1,order,dup\n"
        + "c1,2025-01-01T10:00:00Z,10.00,o1,order,dup\n"  # identical: one event
        + "c1,2025-01-01T10:00:00Z,12.00,o1,order,dup\n"  # other content
    )
    result = clv(settings, "import-transactions", str(log))
    assert result.returncode == 2
    assert f"{log}:4" in result.stderr, result.stderr
    assert "line 2" in result.stderr
    assert totals(settings)[0] == 0


def test_a_changed_cdnow_line_conflicts_on_reimport(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "cdnow.txt"
    log.write_text(CDNOW_SAMPLE)
    assert clv(settings, "import-transactions", "--format", "cdnow", str(log)).returncode == 0
    log.write_text(CDNOW_SAMPLE.replace("20.76\n 00003 19970402", "21.76\n 00003 19970402"))
    result = clv(settings, "import-transactions", "--format", "cdnow", str(log))
    assert result.returncode != 0
    assert f"{log}:6" in result.stderr, result.stderr  # the 19970330 line
    assert totals(settings) == (6, 3, Decimal("142.29"))
