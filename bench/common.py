"""Shared plumbing for benchmarks: throwaway databases, machine facts, BENCHMARKS.md sections."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
ADMIN_URL = os.environ.get("CLV_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
CDNOW = Path(
    os.environ.get("CLV_CDNOW_PATH", ROOT.parent / "shared" / "data" / "cdnow" / "CDNOW_master.txt")
)


def _admin() -> object:
    return create_engine(
        make_url(ADMIN_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


@contextmanager
def fresh_database(prefix: str = "clv_bench", migrate: bool = True) -> Iterator[str]:
    """A new Postgres database (migrated to head), dropped afterwards; yields its URL."""
    from app import schema
    from app.config import Settings

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        make_url(ADMIN_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            schema.upgrade("head", Settings(database_url=url))
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def machine() -> str:
    """One line describing where the figures come from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pg = "?"
    try:
        engine = create_engine(make_url(ADMIN_URL).set(drivername="postgresql+psycopg"))
        with engine.connect() as connection:
            pg = connection.execute(text("SHOW server_version")).scalar_one()
        engine.dispose()
    except Exception:  # figures stay useful without the version
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"PostgreSQL {pg} (stock config), {platform.system()} {platform.release()}"
    )


def git_revision() -> str:
    """The commit the benchmark ran on (with -dirty when the tree has changes)."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def header(command: str) -> str:
    """Machine, date, command and revision lines for a BENCHMARKS.md section."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"- Machine: {machine()}\n- Date: {now}; revision {git_revision()}\n"
        f"- Command: `{command}`\n"
    )


def write_section(name: str, body: str) -> None:
    """Replace (or append) the `## name` section of BENCHMARKS.md, between its markers."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    current = (
        BENCHMARKS.read_text()
        if BENCHMARKS.exists()
        else "# Benchmarks\n\nFigures written by the scripts in `bench/`; each section says how it was produced.\n"
    )
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    updated = (
        pattern.sub(lambda _: block, current)
        if pattern.search(current)
        else current.rstrip() + "\n\n" + block + "\n"
    )
    BENCHMARKS.write_text(updated)
    print(f"wrote section {name!r} of {BENCHMARKS}", file=sys.stderr)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def settle(engine: Engine) -> None:
    """Bring a freshly bulk-loaded database to the steady state autovacuum keeps a live one in:
    statistics, hint bits and visibility map set, dirty pages flushed. Autocommit, because an
    ANALYZE inside a transaction that is then rolled back leaves no statistics behind."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM (ANALYZE)"))
        connection.execute(text("CHECKPOINT"))


def load_demo(engine: Engine, customers: int, end: dt.datetime, seed: int = 1) -> int:
    """`customers` demo customers (generator seed `seed`) with three years of history up to
    `end`, bulk-loaded the way `clv generate-demo` loads them (10,000 customers per chunk); the
    events created."""
    from app.demo.generator import generate_demo
    from app.events.bulk import BulkLoader

    chunks = generate_demo(
        customers, seed, start=end - dt.timedelta(days=3 * 365), end=end, chunk_customers=10_000
    )
    loader = BulkLoader(engine, "USD")
    return sum(s.events_created for s in loader.load_all((c.events, c.customers) for c in chunks))


def sample_customer_ids(engine: Engine, limit: int, exclude: str = "") -> list[str]:
    """Up to `limit` external ids in random order (`exclude`: one id to leave out)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT external_id FROM customers WHERE external_id <> :exclude "
                "ORDER BY random() LIMIT :limit"
            ),
            {"exclude": exclude, "limit": limit},
        )
        return [r[0] for r in rows]


def bench_key(engine: Engine, name: str = "bench") -> str:
    """The secret of a new API key with every scope (benchmarks run with auth on)."""
    from app.auth.keys import ALL_SCOPES
    from app.auth.repository import create_key

    with engine.begin() as connection:
        return create_key(connection, name, ALL_SCOPES).secret


def run_clv(env: dict[str, str], *args: str) -> tuple[str, float]:
    """Run `clv ARGS` in a subprocess with `env` on top of ours; (stdout, seconds). Exits on a
    failure; `clv train`'s exit 3 (trained, not promoted) is not one."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    accepted = (0, 3) if args[:1] == ("train",) else (0,)
    if result.returncode not in accepted:
        raise SystemExit(f"clv {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout, time.perf_counter() - started
