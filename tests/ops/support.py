"""Operations test helpers: a private Postgres instance and `docker/entrypoint.sh` processes."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.server import ROOT, free_port, stop_process, wait_healthy

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def entrypoint(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `docker/entrypoint.sh ARGS` as the container would, to completion."""
    return subprocess.run(
        [str(ENTRYPOINT), *args],
        cwd=ROOT,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """The test process's environment without CLV_* / Prometheus leftovers, plus `env`."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CLV_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    return {**base, **env}


@dataclass
class Server:
    """A running `entrypoint.sh serve`: its URL, process and JSON log file."""

    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_lines(self) -> list[str]:
        """The lines logged so far."""
        return self.log.read_text().splitlines()


@contextmanager
def serving(env: dict[str, str], log: Path, timeout: float = 120) -> Iterator[Server]:
    """Start `docker/entrypoint.sh serve` (host/port from CLV_HOST/CLV_PORT); SIGTERM it after."""
    port = free_port()
    env = {"CLV_HOST": "127.0.0.1", "CLV_PORT": str(port), **env}
    # Logs go to a file, not a pipe nobody reads (a full pipe would block the server).
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(ENTRYPOINT), "serve"],
            cwd=ROOT,
            env=clean_env(env),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_healthy(process, server.base, lambda: log.read_text(errors="replace"), timeout)
        yield server
    finally:
        stop_process(process, grace=20)


def poll(check: Callable[[], bool], seconds: float) -> bool:
    """Call `check()` until it is true (then True) or `seconds` pass (then False)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def raw_connection(base: str) -> socket.socket:
    """A plain TCP connection to the server (for clients httpx will not imitate)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_response(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class TempPostgres:
    """A Postgres 15 instance of the test's own (initdb in a temp dir, its own port), so a test
    can stop and start it without touching the shared server."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="clv-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()
        # initdb refuses to run as root: run the server as the postgres user then.
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._run(
            PG_BIN / "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why no private instance can be made here, or None."""
        if not (PG_BIN / "initdb").exists():
            return f"no PostgreSQL 15 binaries in {PG_BIN}"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no postgres user to run initdb as"
            if shutil.which("runuser") is None:
                return "running as root without runuser to switch to the postgres user"
        return None

    def _run(self, *command: str | Path) -> None:
        argv = [str(c) for c in command]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of a database on this instance."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start (and wait for) the server."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            PG_BIN / "pg_ctl", "-D", self.data, "-l", self.logfile, "-o", options, "-w", "start"
        )

    def stop(self) -> None:
        """Fast shutdown: open sessions are terminated, as in a database failover."""
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        """Whether the postmaster is up."""
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        """Create a database; returns its URL."""
        admin = create_engine(
            self.url().replace("postgresql://", "postgresql+psycopg://"),
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self.url(name)

    def log_text(self) -> str:
        """The server log so far."""
        return self.logfile.read_text(errors="replace")

    def destroy(self) -> None:
        """Stop the server if running and remove its files."""
        if self.running():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
