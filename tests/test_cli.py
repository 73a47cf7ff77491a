"""The `clv` command's help and option errors, as a newcomer meets them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app import schema
from app.cli import cli
from app.config import Settings

COMMANDS = [
    [],
    ["serve"],
    ["migrate"],
    ["import-transactions"],
    ["generate-demo"],
    ["train"],
    ["score"],
    ["keys"],
    ["keys", "create"],
    ["keys", "ensure-local"],
]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "clv")
def test_help_shows_no_value_placeholder_after_flags_and_whole_option_names(
    command: list[str],
) -> None:
    code, output = run(*command, "--help")
    assert code == 0, output
    assert "<bool>" not in output
    assert "…" not in output  # nothing cut
    for line in output.splitlines():
        assert len(line) <= 120, line


def test_serve_help_names_every_option_in_full() -> None:
    _, output = run("serve", "--help")
    for option in (
        "--keepalive-timeout",
        "--forwarded-allow-ips",
        "--proxy-headers / --no-proxy-headers",
        "--graceful-shutdown",
        "--limit-concurrency",
    ):
        assert option in output, option


@pytest.mark.parametrize(
    ("command", "flag"),
    [(["generate-demo"], "--if-empty / --no-if-empty"), (["score"], "--store / --no-store")],
)
def test_booleans_are_flag_pairs(command: list[str], flag: str) -> None:
    _, output = run(*command, "--help")
    assert flag in output
    # A flag takes no value: `--if-empty true` is refused as an extra argument, not a bool.
    name = flag.split(" / ")[0]
    code, output = run(*command, name, "true")
    assert code == 2
    assert "true" in output


def test_an_invalid_as_of_names_the_option() -> None:
    code, output = run("score", "--out", "scores.csv", "--as-of", "2026-13-01")
    assert code == 2, output
    assert re.search(r"Invalid value for '--as-of': '2026-13-01': month must be in 1\.\.12", output)


def test_generate_demo_if_empty_loads_once(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'clv.db'}")
    schema.upgrade("head", settings)
    env = {**os.environ, "CLV_DATABASE_URL": settings.database_url}

    def demo(*flags: str) -> str:
        command = [sys.executable, "-m", "app.cli", "generate-demo", "--customers", "5", *flags]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "demo data: 5 new customers" in demo("--if-empty")
    assert "events exist already" in demo("--if-empty")
    # --no-if-empty loads again (another seed: the same seed a second later would give the same
    # ids with other timestamps, which the import refuses as conflicts).
    assert "demo data: 5 new customers" in demo("--no-if-empty", "--seed", "8")


def test_score_refuses_a_model_trained_in_another_currency(tmp_path: Path) -> None:
    # The shipped model is in USD; a shop running in EUR must not get its numbers labelled EUR.
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'clv.db'}")
    schema.upgrade("head", settings)
    env = {**os.environ, "CLV_DATABASE_URL": settings.database_url, "CLV_CURRENCY": "EUR"}
    env.pop("CLV_MODEL_DIR", None)  # the repository's models/
    command = [sys.executable, "-m", "app.cli", "score", "--out", str(tmp_path / "s.csv")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout
    assert "trained on amounts in USD, this service runs in EUR" in done.stderr
    assert not (tmp_path / "s.csv").exists()


def test_generate_demo_with_an_end_is_repeatable_and_a_moved_end_says_what_to_do(
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'clv.db'}")
    schema.upgrade("head", settings)
    env = {**os.environ, "CLV_DATABASE_URL": settings.database_url}

    def demo(*flags: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "app.cli", "generate-demo", "--customers", "5", *flags]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    first = demo("--seed", "9", "--end", "2026-06-30")
    assert first.returncode == 0, first.stderr
    made = re.search(r"demo data: 5 new customers, (\d+) new events", first.stdout)
    assert made is not None, first.stdout
    assert int(made.group(1)) > 0
    # The same command again: the same events, all already stored.
    again = demo("--seed", "9", "--end", "2026-06-30")
    assert again.returncode == 0, again.stderr
    assert f"0 new customers, 0 new events ({made.group(1)} already stored)" in again.stdout
    # The same seed for another end: the same ids with other timestamps, refused and explained.
    moved = demo("--seed", "9", "--end", "2026-07-30")
    assert moved.returncode == 2, moved.stdout
    assert "demo events of seed 9 are already stored with other content" in moved.stderr
    assert "Pass another --seed" in moved.stderr
    bad = demo("--end", "2026-13-01")
    assert bad.returncode == 2
    assert "Invalid value for '--end'" in bad.stderr
