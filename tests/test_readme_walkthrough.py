"""The README's walkthrough, run as written (bash + curl) against a real server, in order."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app import schema
from app.config import Settings
from tests.conftest import api_key, create_database, drop_database
from tests.server import ROOT, running_server, server_env

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
HEADING = "## Walkthrough"
#: Each command's expected status, written as a comment line `# 201: ...` above it.
EXPECTED = re.compile(r"^# (\d{3})\b")
#: What each command prints last (`curl -w '\nHTTP %{http_code}\n'`).
ANSWERED = re.compile(r"^HTTP (\d{3})$", re.MULTILINE)


def walkthrough() -> tuple[list[str], str, list[int]]:
    """The walkthrough's `export` lines, the rest of its bash blocks as one script, and the
    statuses the README promises, in order."""
    text = README.read_text()
    start = text.index(f"\n{HEADING}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    blocks = re.findall(r"^```bash\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines()]
    exports = [line for line in lines if line.startswith("export ")]
    commands = [line for line in lines if not line.startswith("export ")]
    expected = [int(m.group(1)) for line in commands if (m := EXPECTED.match(line))]
    return exports, "\n".join(commands), expected


def test_the_walkthrough_is_well_formed() -> None:
    exports, script, expected = walkthrough()
    # The test supplies exactly the variables the README's export line sets.
    assert re.findall(r"\b([A-Z_]+)=", " ".join(exports)) == ["CLV", "KEY"], exports
    curls = [line for line in script.splitlines() if line.lstrip().startswith("curl ")]
    assert len(curls) == len(expected) >= 10, (curls, expected)
    # Every command prints its status, so a step that answers otherwise is detectable.
    assert all("-w '\\nHTTP %{http_code}\\n'" in curl for curl in curls), curls


def test_make_run_banner_posts_nothing_the_walkthrough_posts() -> None:
    """The banner's suggestions must not make the README's first steps answer 409 or 200."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run:"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("\t"))
    recipe = "\n".join(lines[start:end])
    _, script, _ = walkthrough()
    for event_id in re.findall(r'"event_id": "([^"]+)"', script):
        assert event_id not in recipe
    assert "export CLV=" in recipe
    assert "README" in recipe


def clv(database_url: str, *args: str) -> str:
    """Run a `clv` command on that database; its standard output."""
    env = {**os.environ, "CLV_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_ready(base: str) -> None:
    """Return once `/readyz` answers 200 (a guard against a hung server, not a speed bound)."""
    deadline = time.monotonic() + 120
    while (status := httpx.get(f"{base}/readyz", timeout=10).status_code) != 200:
        assert time.monotonic() < deadline, f"/readyz still answers {status}"
        time.sleep(0.2)


@pytest.fixture(params=["make-run", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A fresh database and a key for it: as `make run` prepares them (embedded SQLite, demo data,
    the local key), and on Postgres."""
    if request.param == "make-run":
        url = f"sqlite:///{tmp_path / 'clv.db'}"
        clv(url, "migrate")
        clv(url, "generate-demo", "--customers", "100", "--if-empty")
        key = clv(url, "keys", "ensure-local", "--file", str(tmp_path / "local-api-key")).strip()
        yield url, key
        return
    url = create_database("clv_readme")
    try:
        schema.upgrade("head", Settings(database_url=url))
        yield url, api_key(url)
    finally:
        drop_database(url)


def test_the_walkthrough_answers_what_the_readme_says(served: tuple[str, str]) -> None:
    database_url, key = served
    _, script, expected = walkthrough()
    assert shutil.which("curl"), "the walkthrough needs curl"
    # The shipped model, as `make run` serves it.
    settings = Settings(database_url=database_url, model_poll_seconds=0)
    # A generous start-up guard: the machine may be busy; this is not a speed bound.
    with running_server(server_env(settings, auth=True), timeout=120) as base:
        wait_ready(base)  # as a reader would, once `make run` has printed its banner
        env = {**os.environ, "CLV": base, "KEY": key}
        # Twice: the walkthrough ends with erasure, so it can be followed again from the top.
        for attempt in (1, 2):
            result = subprocess.run(
                ["bash", "-c", f"set -euo pipefail\n{script}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,  # a guard against a hung server, not a speed bound
            )
            assert result.returncode == 0, (attempt, result.stdout, result.stderr)
            answered = [int(status) for status in ANSWERED.findall(result.stdout)]
            assert answered == expected, (attempt, result.stdout)
