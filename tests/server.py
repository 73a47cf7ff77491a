"""Run the real `clv serve` (uvicorn) in a subprocess for end-to-end tests over loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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


def serve_command(port: int, *args: str) -> list[str]:
    """`clv serve` on loopback `port`, as every test server runs it."""
    return [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]


def wait_healthy(
    process: subprocess.Popen[bytes], base: str, output: Callable[[], str], timeout: float
) -> None:
    """Return once `base`/healthz answers 200; raise with the server's output if it exits first
    or does not answer within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{output()[-4000:]}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"server did not become healthy:\n{output()[-4000:]}")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_server(env: dict[str, str], *args: str, timeout: float = 120.0) -> Iterator[str]:
    """Start `clv serve` with the given environment; yields its base URL; stops it afterwards."""
    with served_process(env, *args, timeout=timeout) as (base, _):
        yield base


@contextmanager
def served_process(
    env: dict[str, str], *args: str, timeout: float = 120.0, cwd: Path = ROOT
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`running_server` from the code in `cwd` (another checkout, for before/after benchmarks);
    yields the base URL and the process."""
    port = free_port()
    # Output to a file, not a pipe nobody reads (a full pipe would block the server).
    with tempfile.TemporaryDirectory(prefix="clv-server-") as work:
        log = Path(work) / "server.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                serve_command(port, *args),
                cwd=cwd,
                env={**os.environ, **env},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(process, base, lambda: log.read_text(errors="replace"), timeout)
            yield base, process
        finally:
            stop_process(process)
