"""`--dask SPEC`: what it accepts, and a clear one-line error when the scheduler is not there."""

from __future__ import annotations

import socket

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
