"""`clv rescore` and `clv score --store`, the real commands: silent churners get at_risk alerts."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys

import pytest

from app.config import Settings
from tests.alerts.support import alert_rows, expected_scores
from tests.scoring.support import AS_OF_INSTANT
from tests.server import ROOT

pytestmark = pytest.mark.slow

T1 = "2026-06-30"
T2 = "2026-08-14"  # 45 days later: nobody has bought since


def clv(settings: Settings, *args: str) -> str:
    """Run the real `clv` command on these settings; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env={
            **os.environ,
            "CLV_DATABASE_URL": settings.database_url,
            "CLV_MODEL_DIR": str(settings.model_dir),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_rescore_emits_at_risk_for_customers_who_went_quiet(demo: Settings) -> None:
    before = expected_scores(demo, AS_OF_INSTANT)
    after = expected_scores(demo, dt.datetime(2026, 8, 14, 23, 59, 59, 999999, tzinfo=dt.UTC))
    quiet = sorted(
        c
        for c, s in after.items()
        if s.lifecycle_stage == "at_risk" and before[c].lifecycle_stage != "at_risk"
    )
    assert quiet

    first = clv(demo, "score", "--store", "--as-of", T1)  # the nightly baseline
    assert "stored run" in first
    assert alert_rows(demo) == []
    out = clv(demo, "rescore", "--as-of", T2, "--no-progress")

    emitted = int(re.search(r"([\d,]+) alerts", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    rows = alert_rows(demo)
    assert emitted == len(rows) > 0
    assert sorted(r["external_id"] for r in rows if r["type"] == "customer.at_risk") == quiet
    assert {r["data"]["source"] for r in rows} == {"rescore"}
    # Run again for the same instant: nothing changed, nothing emitted.
    assert " 0 alerts" in clv(demo, "rescore", "--as-of", T2, "--no-progress")
