"""`clv import-transactions`: CDNOW and CSV logs, idempotent re-import, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from app.config import Settings
from app.customers.models import Customer
from app.db import sync_url
from app.events.models import Event
from tests.conftest import CDNOW
from tests.server import ROOT

CDNOW_SAMPLE = """ customer_id  date number_of_cds  dollar_value
 00001 19970101  1   11.77
 00002 19970112  1   12.00
 00002 19970112  5   77.00
 00003 19970102  2   20.76
 00003 19970330  2   20.76
 00003 19970402  0    0.00
"""


def clv(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env={**os.environ, "CLV_DATABASE_URL": settings.database_url},
        capture_output=True,
        text=True,
        timeout=300,
    )


def totals(settings: Settings) -> tuple[int, int, Decimal]:
    engine = create_engine(sync_url(settings.database_url))
    with engine.connect() as connection:
        events, revenue = connection.execute(select(func.count(), func.sum(Event.amount))).one()
        customers = connection.execute(select(func.count()).select_from(Customer)).scalar_one()
    engine.dispose()
    return int(events), int(customers), Decimal(revenue or 0)


def test_cdnow_sample_import_is_idempotent(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "cdnow.txt"
    log.write_text(CDNOW_SAMPLE)
    first = clv(settings, "import-transactions", "--format", "cdnow", str(log))
    assert first.returncode == 0, first.stderr
    assert "imported 6 new events" in first.stdout
    assert totals(settings) == (6, 3, Decimal("142.29"))
    again = clv(settings, "import-transactions", "--format", "cdnow", str(log))
    assert "imported 0 new events (6 already stored)" in again.stdout
    assert totals(settings) == (6, 3, Decimal("142.29"))


@pytest.mark.slow
def test_full_cdnow_import(settings: Settings) -> None:
    # The real log sits beside the checkout (../shared/data); missing in CI is a failure, not a skip.
    assert CDNOW.exists(), f"{CDNOW} is missing (../shared/data)"
    result = clv(settings, "import-transactions", "--format", "cdnow", str(CDNOW))
    assert result.returncode == 0, result.stderr
    events, customers, revenue = totals(settings)
    assert (events, customers) == (69_659, 23_570)
    assert revenue == Decimal("2500315.63")


def test_csv_import_with_refunds_and_ids(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "tx.csv"
    log.write_text(
        "customer_id,occurred_at,amount,order_id,type,event_id\n"
        "c1,2025-01-01T10:00:00+01:00,10.50,o1,order,\n"
        "c1,2025-01-05,3.25,o1,refund,r-1\n"
        "c2,2025-02-01T00:00:00Z,99,o2,,\n"
    )
    result = clv(settings, "import-transactions", str(log))
    assert result.returncode == 0, result.stderr
    assert totals(settings) == (3, 2, Decimal("112.75"))
    assert "imported 0 new events" in clv(settings, "import-transactions", str(log)).stdout


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("c1,2025-01-01T10:00:00,10.00", "offset"),
        ("c1,2025-01-01,10.001", "2 decimals"),
        ("bad id,2025-01-01,10.00", "customer_id"),
        ("c1,2025-01-01,-3", "2 decimals"),
    ],
)
def test_csv_errors_name_the_line_and_load_nothing(
    settings: Settings, tmp_path: Path, line: str, complaint: str
) -> None:
    log = tmp_path / "tx.csv"
    log.write_text(f"customer_id,occurred_at,amount\nok,2025-01-01,1.00\n{line}\n")
    result = clv(settings, "import-transactions", str(log))
    assert result.returncode == 2
    assert f"{log}:3" in result.stderr
    assert complaint in result.stderr
    assert "nothing was imported" in result.stderr
    assert totals(settings)[0] == 0


def test_csv_in_another_currency_is_refused(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "tx.csv"
    log.write_text("customer_id,occurred_at,amount,currency\nc1,2025-01-01,1.00,EUR\n")
    result = clv(settings, "import-transactions", str(log))
    assert result.returncode == 2
    assert "EUR" in result.stderr
