"""Contract fuzzing: schemathesis (`st run`) drives every operation of the live OpenAPI document
of a real `clv serve` process with schema-valid and schema-violating data (its examples, coverage
and fuzzing phases), and checks every answer against that document: no 5xx, documented status
codes, content types, headers and bodies.

The CLI rather than schemathesis' pytest plugin: its fixture-based loader (needed to load the
schema from a server a fixture starts) does not run on pytest 9.2 (`Function._nodeid` is gone).

Deliberately not checked (each is a design decision, not a contract breach):
- `positive_data_acceptance`: some rules cannot be written in JSON Schema (money fields depend on
  `type`, an `as_of` or `cursor` must parse, JSON documents may not hold NUL): schema-valid
  requests can rightly be 422.
- `negative_data_rejection`: batch items are documented as `EventIn` for clients, yet each item
  is validated on its own and a bad one is rejected in a 200 answer, as the README specifies.
- `allow_header_conformance`: Starlette's 405 lists the methods of one route only.

The run is seeded (CLV_FUZZ_SEED overrides the seed to explore further) and bounded by
`max-examples`, so it stays well under a minute.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from app import schema as db_schema
from app.config import Settings
from app.customers.models import Customer
from app.db import create_sync_engine
from app.scoring.repository import finish_run, start_run, write_scores
from app.scoring.service import Score
from tests.conftest import api_key, create_database, drop_database
from tests.factories import event
from tests.security.support import ServerProcess, private_model_dir, serving
from tests.server import server_env

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("CLV_FUZZ_SEED", "20261124"))
MAX_EXAMPLES = 100
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
#: Customers the documented examples name, given a history so their reads are 200s, not 404s.
KNOWN_CUSTOMERS = ("cust-42", "cust-43")


def _seed_data(base: str, key: str, database_url: str) -> None:
    """Events for the example customers and one stored score run, so that predictions, features
    and the segment export answer with documents (and their schemas get checked)."""
    headers = {"Authorization": f"Bearer {key}"}
    batch = [event("order", customer_id=c) for c in KNOWN_CUSTOMERS for _ in range(3)]
    answer = httpx.post(f"{base}/v1/events/batch", json={"events": batch}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["created"] == len(batch)
    engine = create_sync_engine(Settings(database_url=database_url))
    with engine.begin() as connection:
        pks = [
            pk for (pk,) in connection.execute(select(Customer.id).order_by(Customer.external_id))
        ]
        run = start_run(connection, dt.datetime(2026, 6, 30, tzinfo=dt.UTC), "v0")
        scores = [
            Score(customer, 120.5, 0.7, "at_risk", "high", 84.35) for customer in KNOWN_CUSTOMERS
        ]
        written = write_scores(connection, run, np.array(pks), scores)
        finish_run(connection, run, written)
    engine.dispose()


@pytest.fixture(scope="module")
def fuzzed_server(
    model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, str]]:
    """A real server with auth on its own database and its own copy of the model."""
    url = create_database("clv_fuzz")
    work = tmp_path_factory.mktemp("fuzz")
    try:
        settings = Settings(
            database_url=url,
            model_dir=private_model_dir(model_dir, work),  # reload may be fuzzed freely
            model_poll_seconds=0,
        )
        db_schema.upgrade("head", settings)
        key = api_key(url)
        env = {**server_env(settings, auth=True), "CLV_LOG_LEVEL": "info"}
        with serving(env, work / "server.log") as server:
            _seed_data(server.base, key, url)
            yield server, key
    finally:
        drop_database(url)


def run_schemathesis(base: str, key: str, work: Path) -> tuple[int, str, ET.Element]:
    """`st run` over every operation: exit code, console report and the JUnit document."""
    junit = work / "junit.xml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{base}/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--phases",
            "examples,coverage,fuzzing",
            "--mode",
            "all",  # schema-valid and schema-violating data
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--report",
            "junit",
            "--report-junit-path",
            str(junit),
            "--no-color",
        ],
        cwd=work,  # its caches stay out of the repository
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = ET.parse(junit).getroot() if junit.exists() else ET.Element("missing")
    return result.returncode, result.stdout + result.stderr, report


def test_every_operation_keeps_its_documented_contract(
    fuzzed_server: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    server, key = fuzzed_server
    spec = httpx.get(f"{server.base}/openapi.json").json()
    operations = {
        f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item
    }
    code, output, report = run_schemathesis(server.base, key, tmp_path)
    tested = {case.get("name") for case in report.iter("testcase")}
    failed = sorted(
        str(case.get("name"))
        for case in report.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    )
    assert not failed, f"contract broken by {failed}:\n{output[-20_000:]}"
    assert code == 0, output[-20_000:]
    assert tested == operations, output[-5000:]  # every documented operation was exercised
    assert "passed" in output


def test_the_fuzzed_server_logged_no_error_and_is_still_healthy(
    fuzzed_server: tuple[ServerProcess, str],
) -> None:
    server, key = fuzzed_server
    assert httpx.get(f"{server.base}/readyz").status_code == 200
    # The example customers survived or were erased wholesale; either way the API answers.
    answer = httpx.get(
        f"{server.base}/v1/customers/cust-42", headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code in (200, 404), answer.text
    log = server.log_text()
    assert '"logger":"clv.access"' in log  # the fuzzing did reach the server
    assert '"level":"error"' not in log, log[-4000:]
    assert '"level":"critical"' not in log
