"""Helpers for the security and robustness tests: a `clv serve` process that can be SIGKILLed
and restarted on its port, with its output in a file (a pipe nobody reads would fill up and block
the server), plus a private copy of the session's model directory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.server import ROOT, free_port, serve_command, wait_healthy


class ServerProcess:
    """One `clv serve` on a fixed loopback port; its stdout and stderr appended to `log`."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.env = {**os.environ, **env}
        self.log = log
        self.args = args
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until /healthz answers."""
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                serve_command(self.port, *self.args),
                cwd=ROOT,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        wait_healthy(self.process, self.base, self.log_text, timeout)

    def kill(self) -> None:
        """SIGKILL: no drain, no pool goodbye, whatever was in flight is cut."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 20 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_text(self) -> str:
        """Everything the server printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextmanager
def serving(env: dict[str, str], log: Path, *args: str) -> Iterator[ServerProcess]:
    """A started ServerProcess, stopped afterwards."""
    server = ServerProcess(env, log, *args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def private_model_dir(model_dir: Path, into: Path) -> Path:
    """A copy of the session's model directory that a test's server may reload from freely."""
    target = into / "models"
    shutil.copytree(model_dir, target)
    return target
