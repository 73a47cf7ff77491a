"""Failure behaviour of a real `entrypoint.sh serve` on a Postgres instance of the test's own:
database outage and recovery, slow and oversized clients, the concurrency limit, SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from app.db import sync_url
from app.events.models import Event
from tests.factories import event
from tests.ops.support import (
    Server,
    TempPostgres,
    entrypoint,
    poll,
    raw_connection,
    read_response,
    serving,
)

pytestmark = pytest.mark.slow

CONNECT_TIMEOUT = 2.0
HEAD_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
CONCURRENCY = 8
#: Slack on top of a configured timeout before a test calls the answer late (noisy machines).
SLACK = 3.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[TempPostgres]:
    """A private Postgres the tests may stop and start."""
    reason = TempPostgres.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    instance = TempPostgres()
    try:
        instance.start()
        yield instance
    finally:
        instance.destroy()


@pytest.fixture(scope="module")
def database(postgres: TempPostgres) -> str:
    """A database on it, migrated by `entrypoint.sh migrate`."""
    url = postgres.create_database("clv")
    result = entrypoint("migrate", env={"CLV_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    return url


def env_for(url: str, model_dir: Path, **extra: str) -> dict[str, str]:
    """Server settings with short timeouts, so failures show within seconds."""
    return {
        "CLV_DATABASE_URL": url,
        "CLV_MODEL_DIR": str(model_dir),
        "CLV_MODEL_POLL_SECONDS": "0",
        "CLV_LOG_LEVEL": "info",
        "CLV_AUTH_DISABLED": "true",  # these tests are about failures, not keys
        "CLV_DB_CONNECT_TIMEOUT_SECONDS": str(CONNECT_TIMEOUT),
        **extra,
    }


@pytest.fixture(scope="module")
def server(
    postgres: TempPostgres,  # noqa: ARG001 (started before the server)
    database: str,
    model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """One server for the outage and slow-client tests."""
    env = env_for(
        database,
        model_dir,
        CLV_HTTP_HEADER_TIMEOUT_SECONDS=str(HEAD_TIMEOUT),
        CLV_HTTP_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        CLV_LIMIT_CONCURRENCY=str(CONCURRENCY),
    )
    with serving(env, tmp_path_factory.mktemp("ops") / "server.log") as running:
        yield running


def new_order(customer: str) -> dict[str, Any]:
    """An order with an id no other test uses."""
    return event("order", event_id=f"ops-{uuid.uuid4().hex}", customer_id=customer)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """A problem+json answer of that status and type, with a request id."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert len(response.headers["x-request-id"]) >= 1
    problem: dict[str, Any] = response.json()
    assert problem["type"].endswith("/" + slug), problem
    return problem


def test_database_outage_is_503_with_retry_after_then_recovers_without_restart(
    postgres: TempPostgres, server: Server
) -> None:
    http = httpx.Client(base_url=server.base, timeout=30)
    assert http.post("/v1/events", json=new_order("outage-1")).status_code == 201
    assert http.get("/v1/customers/outage-1/prediction").status_code == 200

    postgres.stop()
    try:
        calls: list[tuple[str, str, Any]] = [
            ("POST", "/v1/events", new_order("outage-1")),
            ("POST", "/v1/events/batch", {"events": [new_order("outage-2")]}),
            ("GET", "/v1/customers/outage-1", None),
            ("GET", "/v1/customers/outage-1/prediction", None),
            ("POST", "/v1/predictions/batch", {"customer_ids": ["outage-1"]}),
        ]
        # Twice: first the pooled connections die under the requests, then new ones are refused.
        for _ in range(2):
            for method, path, body in calls:
                started = time.monotonic()
                response = http.request(method, path, json=body)
                elapsed = time.monotonic() - started
                assert_problem(response, 503, "database-unavailable")
                assert response.headers["retry-after"] == "5"
                assert elapsed < CONNECT_TIMEOUT + SLACK, (path, elapsed)
        assert http.get("/healthz").status_code == 200
        assert poll(lambda: http.get("/readyz").status_code == 503, 3)
        ready = http.get("/readyz").json()
        assert ready["ready"] is False
        assert ready["checks"]["database"].startswith("unavailable")
    finally:
        postgres.start()

    # The same process recovers on its own once the database is back.
    assert poll(lambda: http.post("/v1/events", json=new_order("outage-1")).status_code == 201, 20)
    assert http.get("/v1/customers/outage-1/prediction").status_code == 200
    assert (
        http.post("/v1/predictions/batch", json={"customer_ids": ["outage-1"]}).status_code == 200
    )
    assert poll(lambda: http.get("/readyz").status_code == 200, 5)
    assert server.process.poll() is None  # the same process, never restarted
    logged = [json.loads(line) for line in server.log_lines()]
    assert any(r["message"].startswith("database unavailable") for r in logged)
    assert not [r for r in logged if r["level"] == "error"], "an outage is not an internal error"


def test_a_client_trickling_its_headers_is_answered_408_and_cut_off(server: Server) -> None:
    sock = raw_connection(server.base)
    sock.sendall(b"POST /v1/events HTTP/1.1\r\nHost: clv\r\n")
    started = time.monotonic()
    answer = b""
    sock.settimeout(0.3)
    while not answer and time.monotonic() - started < HEAD_TIMEOUT + SLACK:
        try:
            sock.sendall(b"X-Slow: 1\r\n")  # a header line every 0.3 s keeps a naive timer happy
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    elapsed = time.monotonic() - started
    answer += read_response(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in answer.lower()
    assert elapsed < HEAD_TIMEOUT + SLACK
    # Meanwhile nothing else was held up.
    assert httpx.get(f"{server.base}/healthz").status_code == 200


def test_an_idle_connection_is_closed_after_the_head_timeout(server: Server) -> None:
    sock = raw_connection(server.base)
    started = time.monotonic()
    assert read_response(sock, timeout=HEAD_TIMEOUT + SLACK) == b""  # closed, nothing sent
    assert time.monotonic() - started < HEAD_TIMEOUT + SLACK


def test_a_client_trickling_its_body_gets_408(server: Server) -> None:
    sock = raw_connection(server.base)
    sock.sendall(
        b"POST /v1/events HTTP/1.1\r\nHost: clv\r\nContent-Type: application/json\r\n"
        b"X-Request-ID: slow-body-1\r\nContent-Length: 400\r\n\r\n{"
    )
    started = time.monotonic()
    answer = b""
    sock.settimeout(0.3)
    while not answer and time.monotonic() - started < BODY_TIMEOUT + SLACK:
        try:
            sock.sendall(b" ")
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    answer += read_response(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"x-request-id: slow-body-1" in head.lower()
    assert json.loads(body)["type"].endswith("/request-timeout")
    assert time.monotonic() - started < BODY_TIMEOUT + SLACK


def test_a_body_nobody_reads_does_not_keep_the_connection(server: Server) -> None:
    sock = raw_connection(server.base)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: clv\r\nContent-Length: 100000\r\n\r\nab")
    started = time.monotonic()
    answer = read_response(sock, timeout=HEAD_TIMEOUT + SLACK)  # answered, then closed
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert time.monotonic() - started < SLACK


def test_a_huge_head_gets_431_and_a_large_but_sane_one_is_served(server: Server) -> None:
    sock = raw_connection(server.base)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: clv\r\nX-Big: ")
        for _ in range(64):  # 1 MiB of one header, in chunks; the server stops reading early
            sock.sendall(b"a" * 16384)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["type"].endswith("/headers-too-large")
    sane = httpx.get(f"{server.base}/healthz", headers={"X-Big": "a" * 8000})
    assert sane.status_code == 200


def test_a_huge_declared_body_gets_413_before_it_is_sent(server: Server) -> None:
    sock = raw_connection(server.base)
    sock.sendall(
        b"POST /v1/events HTTP/1.1\r\nHost: clv\r\nContent-Type: application/json\r\n"
        b"Content-Length: 500000000\r\n\r\n"
    )
    answer = read_response(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"connection: close" in answer.lower()


def test_over_the_concurrency_limit_is_a_503_problem_with_retry_after(server: Server) -> None:
    # Connections count against the limit, idle ones included (that is what exhausts a server).
    idle = [raw_connection(server.base) for _ in range(CONCURRENCY)]
    try:
        time.sleep(0.3)  # let the server accept them all
        refused = httpx.get(f"{server.base}/healthz", headers={"X-Request-ID": "over-limit"})
        assert_problem(refused, 503, "overloaded")
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["x-request-id"] == "over-limit"
    finally:
        for sock in idle:
            sock.close()
    assert poll(lambda: httpx.get(f"{server.base}/healthz").status_code == 200, 3)
    metrics = httpx.get(f"{server.base}/metrics").text
    assert 'clv_http_refusals_total{reason="overloaded"}' in metrics
    assert 'clv_http_refusals_total{reason="head_timeout"}' in metrics
    assert 'clv_http_refusals_total{reason="head_too_large"}' in metrics


def test_sigterm_drains_in_flight_requests_and_loses_no_acknowledged_event(
    postgres: TempPostgres, database: str, model_dir: Path, tmp_path: Path
) -> None:
    if not postgres.running():
        postgres.start()
    log_offset = len(postgres.log_text())
    acked: set[str] = set()
    attempted: list[str] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(base: str, number: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            for n in range(100_000):
                order = event("order", event_id=f"drain-{number}-{n}", customer_id=f"d-{number}")
                with lock:
                    attempted.append(order["event_id"])
                try:
                    response = http.post("/v1/events", json=order)
                except httpx.TransportError as exc:  # the server is gone: stop
                    with lock:
                        failures.append(type(exc).__name__)
                    return
                if response.status_code in (200, 201):
                    with lock:
                        acked.add(order["event_id"])

    with serving(env_for(database, model_dir), tmp_path / "server.log") as server:
        # A request the server is in the middle of reading when SIGTERM arrives.
        in_flight = json.dumps(new_order("drain-in-flight")).encode()
        sock = raw_connection(server.base)
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: clv\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(in_flight)}\r\n\r\n".encode()
            + in_flight[:20]
        )
        clients = [threading.Thread(target=client, args=(server.base, i)) for i in range(6)]
        for thread in clients:
            thread.start()
        # SIGTERM once the stream is running (waited for, not timed: CI machines are slow).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with lock:
                before_sigterm = len(acked)
            if before_sigterm > 10:
                break
            time.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(in_flight[20:])
        answer = read_response(sock)
        for thread in clients:
            thread.join(timeout=30)
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        logged = [json.loads(line)["message"] for line in server.log_lines()]

    assert answer.startswith(b"HTTP/1.1 201 "), answer[:300]
    assert before_sigterm > 10, "the stream was running when SIGTERM came"
    assert len(failures) == len(clients), "every client eventually found the server gone"
    engine = create_engine(sync_url(database))
    with engine.connect() as connection:
        stored = set(
            connection.execute(
                select(Event.event_id).where(
                    Event.event_id.in_([*attempted, json.loads(in_flight)["event_id"]])
                )
            ).scalars()
        )
    engine.dispose()
    assert acked <= stored, f"acknowledged but lost: {sorted(acked - stored)[:5]}"
    # Nothing was stored without its client getting the answer: no in-flight request was cut.
    assert stored - acked == {json.loads(in_flight)["event_id"]}
    assert "Application shutdown complete." in logged
    # The pool was closed (Terminate sent), not dropped: Postgres saw no vanished clients.
    since = postgres.log_text()[log_offset:]
    assert "unexpected EOF on client connection" not in since
    assert "could not receive data from client" not in since
