"""Run the real `clv serve` (uvicorn) in a subprocess for end-to-end tests over loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def server_env(settings: Settings, auth: bool = False) -> dict[str, str]:
    """The environment that makes `clv serve` use these settings' database and model.

    Without `auth`, the server runs with CLV_AUTH_DISABLED (for tests about something else);
    tests of the real client path pass `auth=True` and send keys.
    """
    return {
        "CLV_AUTH_DISABLED": "false" if auth else "true",
        "CLV_DATABASE_URL": settings.database_url,
        "CLV_MODEL_DIR": str(settings.model_dir),
        "CLV_MODEL_POLL_SECONDS": str(settings.model_poll_seconds),
        "CLV_LOG_LEVEL": "warning",
    }


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(env: dict[str, str], *args: str, timeout: float = 30.0) -> Iterator[str]:
    """Start `clv serve` with the given environment; yields its base URL; stops it afterwards."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise RuntimeError(f"server exited with {process.returncode}:\n{output}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not become healthy")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
