"""`--dask SPEC`: what it accepts, and a clear one-line error when the scheduler is not there."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from app.distributed.cluster import DaskUnavailable, connect, parse_spec


def test_specs() -> None:
    assert parse_spec("local").local_workers == 2
    assert parse_spec("local:3").local_workers == 3
    remote = parse_spec("tcp://scheduler:8786")
    assert remote.local_workers is None
    assert remote.text == "tcp://scheduler:8786"
    for bad in ("", "local:0", "local:x", "scheduler:8786", "tcp://"):
        with pytest.raises(DaskUnavailable, match="--dask"):
            parse_spec(bad)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_an_unreachable_scheduler_is_one_clear_error() -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(DaskUnavailable) as raised, connect(address):
        pass
    message = str(raised.value)
    assert address in message
    assert "\n" not in message


def test_the_cli_names_the_unreachable_scheduler_in_one_line(postgres_url: str) -> None:
    """`clv train --dask ADDRESS` with nothing listening: exit 2, one error line, no traceback."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "train", "--as-of", "2026-06-30", "--dask", address],
        capture_output=True,
        text=True,
        env={**os.environ, "CLV_DATABASE_URL": postgres_url},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: cannot reach the Dask scheduler at {address} within 10 s")
    assert "Traceback" not in result.stderr
