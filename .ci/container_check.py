"""End-to-end check of the built images against the host's Postgres (`make container-test`).

Runs the real images with the container engine and `--network host`, on a database of its own
(created here, dropped at the end): migrate, demo data, serve, /readyz, an authenticated prediction,
the non-root uid, HEALTHCHECK, a SIGTERM drain; then train and score through the trainer image.
Figures (time to ready, stop time, image sizes) go to stdout and to var/container-test.json.

    python .ci/container_check.py --engine podman --api IMAGE --trainer IMAGE
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("CLV_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
UID = "10001"
GRACE_SECONDS = 30  # CLV_GRACEFUL_SHUTDOWN_SECONDS given to the server; `stop -t` allows more


class CheckFailed(AssertionError):
    """One end-to-end expectation did not hold."""


def check(condition: object, message: str) -> None:
    """Fail with `message` unless `condition` holds."""
    if not condition:
        raise CheckFailed(message)


def ok(message: str) -> None:
    """One passed check, on stdout."""
    sys.stdout.write(f"container-test: ok   {message}\n")
    sys.stdout.flush()


class Engine:
    """The docker or podman command line."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(
        self, *args: str, timeout: float = 600, check_rc: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`ENGINE ARGS`, captured; raises with its output when it fails and check_rc is set."""
        result = subprocess.run(
            [self.name, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check_rc and result.returncode != 0:
            raise CheckFailed(
                f"{self.name} {' '.join(args)} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
            )
        return result

    def inspect(self, kind: str, name: str, template: str) -> str:
        """`ENGINE KIND inspect --format TEMPLATE NAME`, stripped."""
        return self.run(kind, "inspect", "--format", template, name).stdout.strip()


@contextmanager
def database() -> Iterator[str]:
    """A database of our own on the host's Postgres, dropped (forcibly) on the way out."""
    name = f"clv_container_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def poll(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    """True as soon as predicate() is, False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def status(url: str) -> int:
    """The HTTP status of GET url, 0 when nothing answers."""
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run every check; exit 1 at the first failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", required=True)
    parser.add_argument("--api", required=True, help="the api image")
    parser.add_argument("--trainer", required=True, help="the trainer image")
    args = parser.parse_args(argv)
    engine = Engine(args.engine)
    run_id = uuid.uuid4().hex[:8]
    volume = f"clv-test-models-{run_id}"
    figures: dict[str, object] = {"engine": args.engine}
    containers: list[str] = []
    started = time.monotonic()
    try:
        with database() as url:
            env = ["-e", f"CLV_DATABASE_URL={url}", "-e", "CLV_LOG_LEVEL=warning"]
            host = ["--network", "host"]
            figures |= image_checks(engine, args.api, args.trainer)
            engine.run("volume", "create", volume)

            migrated = engine.run("run", "--rm", *host, *env, args.api, "migrate")
            ok(f"api image: migrate ({migrated.stderr.strip().splitlines()[-1:]})")
            demo = engine.run(
                "run", "--rm", *host, *env, args.trainer,
                "generate-demo", "--customers", "400", "--years", "2", "--seed", "16",
            )  # fmt: skip
            ok(f"trainer image: generate-demo ({demo.stdout.strip().splitlines()[-1:]})")
            figures |= serve_checks(engine, args.api, url, env, volume, containers)
            figures |= trainer_checks(engine, args.trainer, env, volume)
    finally:
        for name in containers:
            engine.run("rm", "-f", name, check_rc=False)
        engine.run("volume", "rm", "-f", volume, check_rc=False)
    figures["check_seconds"] = round(time.monotonic() - started, 1)
    out = ROOT / "var" / "container-test.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    sys.stdout.write(f"container-test: figures {json.dumps(figures)}\n")
    return 0


def image_checks(engine: Engine, api: str, trainer: str) -> dict[str, object]:
    """Config of both images: non-root user, HEALTHCHECK on the API, sizes."""
    figures: dict[str, object] = {}
    for label, image in (("api", api), ("trainer", trainer)):
        user = engine.inspect("image", image, "{{.Config.User}}")
        check(user.split(":")[0] == UID, f"{label} image runs as {user!r}, not {UID}")
        size = int(engine.inspect("image", image, "{{.Size}}"))
        figures[f"{label}_image_mb"] = round(size / 1e6)
    health = json.loads(engine.inspect("image", api, "{{json .Config.Healthcheck}}") or "null")
    check(health and "/healthz" in " ".join(health.get("Test", [])), f"no HEALTHCHECK: {health}")
    entry = json.loads(engine.inspect("image", api, "{{json .Config.Entrypoint}}"))
    check(entry == ["/srv/docker/entrypoint.sh"], f"entrypoint {entry}")
    ok(
        f"image config: user {UID}, HEALTHCHECK {health['Test'][0]} /healthz, entrypoint; "
        f"sizes api {figures['api_image_mb']} MB, trainer {figures['trainer_image_mb']} MB"
    )
    listing = engine.run("run", "--rm", "--entrypoint", "sh", api, "-c", "ls /srv/.venv/bin")
    for tool in ("uv", "pip"):
        check(tool not in listing.stdout.split(), f"{tool} is in the api image's venv")
    ok("api image: no uv or pip in its virtualenv")
    return figures


def serve_checks(
    engine: Engine, api: str, url: str, env: list[str], volume: str, containers: list[str]
) -> dict[str, object]:
    """Serve from a fresh models volume: seeded, ready, authenticated prediction, drain."""
    port = free_port()
    name = f"clv-test-api-{uuid.uuid4().hex[:8]}"
    containers.append(name)
    base = f"http://127.0.0.1:{port}"
    begin = time.monotonic()
    engine.run(
        "run", "-d", "--name", name, "--network", "host", *env,
        "-e", f"CLV_PORT={port}", "-e", "CLV_WORKERS=1",
        "-e", f"CLV_GRACEFUL_SHUTDOWN_SECONDS={GRACE_SECONDS}",
        "-v", f"{volume}:/srv/models", api,
    )  # fmt: skip
    ready = poll(lambda: status(f"{base}/readyz") == 200, 90)
    to_ready = time.monotonic() - begin
    logs = engine.run("logs", name, check_rc=False)
    check(ready, f"/readyz never 200 within 90 s\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
    check("seeded /srv/models" in logs.stderr, f"volume not seeded:\n{logs.stderr[-2000:]}")
    ok(f"serve: fresh volume seeded with the shipped model, /readyz 200 {to_ready:.1f} s after run")

    process_uid = engine.run("exec", name, "sh", "-c", "awk '/^Uid:/ {print $2}' /proc/1/status")
    check(process_uid.stdout.strip() == UID, f"PID 1 runs as uid {process_uid.stdout!r}")
    command = engine.run("exec", name, "cat", "/proc/1/cmdline").stdout.replace("\0", " ")
    check("clv serve" in command, f"PID 1 is {command!r}, not clv serve (exec lost?)")
    ok(f"serve: PID 1 is `clv serve` as uid {UID}")

    if engine.name == "podman":  # no systemd here: podman does not schedule it, run it once
        health = engine.run("healthcheck", "run", name, check_rc=False)
        check(health.returncode == 0, f"healthcheck run: {health.stdout}{health.stderr}")
    else:
        check(
            poll(lambda: engine.inspect("container", name, "{{.State.Health.Status}}") == "healthy", 60, 1),
            "container never healthy",
        )  # fmt: skip
    ok("serve: HEALTHCHECK passes")

    created = engine.run(
        "exec", name, "/srv/docker/entrypoint.sh", "keys", "create",
        "--name", "container-test", "--scopes", "predictions:read,events:write",
    )  # fmt: skip
    key = created.stdout.strip()  # the secret is the only line on stdout
    check(key.startswith("clv_"), f"keys create printed {created.stdout!r}")
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "select external_id from customers where id = "
            "(select customer_id from events where type = 'order' limit 1)"
        ).fetchone()
    check(row is not None, "no demo customer with an order")
    assert row is not None
    path = f"{base}/v1/customers/{row[0]}/prediction"
    check(httpx.get(path, timeout=10).status_code == 401, "a prediction without a key is not 401")
    answer = httpx.get(
        path, params={"explain": "true"}, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    check(answer.status_code == 200, f"prediction {answer.status_code}: {answer.text[:500]}")
    body = answer.json()
    ok(f"serve: key from `entrypoint.sh keys create`, prediction 200 ({sorted(body)[:6]}...)")

    # SIGTERM with requests in flight: batch predictions of every demo customer (a few hundred ms
    # each), four at a time, each on a new connection. Requests running when SIGTERM arrives must
    # be answered 200 in full (at least one must have been), no answer may be cut short or wrong;
    # connections uvicorn has not started reading are closed unanswered (what its shutdown does with
    # every connection not inside a request); uvicorn must exit 0 by itself (not SIGKILLed: that would be 137) well inside the
    # grace period.
    with psycopg.connect(url) as connection:
        ids = [r[0] for r in connection.execute("select external_id from customers limit 1000")]
    batch = f"{base}/v1/predictions/batch"
    spans: list[tuple[float, float, int]] = []  # (sent, answered, status) of answered requests
    failures: list[str] = []
    unanswered: list[tuple[float, str]] = []  # (sent, error) of requests that got no response
    stop = threading.Event()

    def client() -> None:
        headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
        with httpx.Client(headers=headers, timeout=60) as http:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    with http.stream("POST", batch, json={"customer_ids": ids}) as response:
                        try:
                            content = response.read()
                        except httpx.TransportError as exc:  # headers came, the body did not
                            failures.append(f"response cut short: {exc!r}")
                            return
                except httpx.TransportError as exc:
                    unanswered.append((sent, repr(exc)))  # no response at all
                    return
                answered = time.monotonic()
                body = json.loads(content) if response.status_code == 200 else {}
                if len(body.get("results", [])) != len(ids):
                    failures.append(f"{response.status_code} {content[:200]!r}")
                    return
                spans.append((sent, answered, response.status_code))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    if not poll(lambda: len(spans) >= 8, 60):
        stop.set()
        raise CheckFailed(
            f"batch predictions fail before any stop: {failures[:3]} {unanswered[:3]}"
        )
    sigterm = time.monotonic()
    engine.run("stop", "-t", str(GRACE_SECONDS + 10), name)
    stopped_in = time.monotonic() - sigterm
    stop.set()
    for thread in threads:
        thread.join(60)
    exit_code = engine.inspect("container", name, "{{.State.ExitCode}}")
    check(exit_code == "0", f"exit code {exit_code} after SIGTERM (137 = killed)")
    check(stopped_in < GRACE_SECONDS, f"stop took {stopped_in:.1f} s")
    check(not failures, f"wrong or cut answers during the shutdown: {failures[:3]}")
    # No answer at all is what uvicorn gives a connection whose request it has not started to
    # read when it shuts down (it closes those, like idle keep-alive ones; the client retries).
    early = [error for sent, error in unanswered if sent < sigterm]
    drained = [s for s in spans if s[0] < sigterm < s[1]]
    check(drained, "no request was in flight at SIGTERM: the drain was not exercised")
    ok(
        f"SIGTERM: {len(drained)} batch requests in flight were answered in full, "
        f"{len(spans)} in all, {len(early)} sent before it closed unread; "
        f"exit 0 in {stopped_in:.1f} s"
    )
    return {"seconds_to_ready": round(to_ready, 1), "seconds_to_stop": round(stopped_in, 1)}


def trainer_checks(engine: Engine, trainer: str, env: list[str], volume: str) -> dict[str, object]:
    """migrate (again, idempotent), train into the volume, score into a host directory."""
    host = ["--network", "host"]
    engine.run("run", "--rm", *host, *env, trainer, "migrate")
    ok("trainer image: migrate again (idempotent)")
    begin = time.monotonic()
    trained = engine.run(
        "run", "--rm", *host, *env, "-v", f"{volume}:/srv/models", trainer,
        "train", "--stack", "1", "--no-baselines", "--force",
        "--clv-horizon-days", "90", "--churn-horizon-days", "60",
    )  # fmt: skip
    train_seconds = time.monotonic() - begin
    current = engine.run(
        "run",
        "--rm",
        "--entrypoint",
        "cat",
        "-v",
        f"{volume}:/srv/models",
        trainer,
        "/srv/models/current",
    ).stdout.strip()
    check(current and current in trained.stdout + trained.stderr, f"trained {current!r}?")
    ok(f"trainer image: train promoted {current} ({train_seconds:.0f} s)")

    with tempfile.TemporaryDirectory() as out:
        os.chmod(out, 0o777)  # the container writes as uid 10001
        engine.run(
            "run", "--rm", *host, *env, "-v", f"{volume}:/srv/models", "-v", f"{out}:/out",
            trainer, "score", "--out", "/out/scores.csv",
        )  # fmt: skip
        with open(Path(out) / "scores.csv", newline="") as scores:
            rows = list(csv.DictReader(scores))
    check(len(rows) >= 100, f"{len(rows)} scored customers")
    ok(f"trainer image: score wrote {len(rows)} rows with columns {sorted(rows[0])[:5]}...")
    return {"train_seconds": round(train_seconds, 1)}


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as failure:
        sys.stderr.write(f"container-test: FAIL {failure}\n")
        sys.exit(1)
