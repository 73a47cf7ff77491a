"""The container files, checked statically (nothing can be built on this machine)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.ops.support import ENTRYPOINT
from tests.server import ROOT

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, in order."""
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions(dockerfile):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def test_dockerfile_is_multi_stage_non_root_with_healthcheck_and_the_entrypoint() -> None:
    build, runtime = stages(DOCKERFILE)
    arguments = dict(instructions(DOCKERFILE)[:1])  # ARG before the first FROM
    base = arguments["ARG"].split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    assert build[0][1].endswith(" AS build")
    assert runtime[0][1].startswith("${PYTHON_IMAGE}")
    # Dependencies come from the lock, without the dev group.
    installs = [args for kind, args in build if kind == "RUN" and "uv sync" in args]
    assert installs
    assert all("--frozen" in args and "--no-dev" in args for args in installs)

    # The final stage: nothing installed or compiled, only copies from the build stage.
    runtime_runs = " ".join(args for kind, args in runtime if kind == "RUN")
    for tool in ("pip ", "uv ", "apt-get", "gcc", "build-essential"):
        assert tool not in runtime_runs, tool
    copies = [args for kind, args in runtime if kind == "COPY"]
    assert any("--from=build" in c and "/srv/.venv" in c for c in copies)

    [user] = [args for kind, args in runtime if kind == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert [kind for kind, _ in runtime].index("USER") > max(
        i for i, (kind, _) in enumerate(runtime) if kind == "RUN"
    ), "USER comes after every RUN of the final stage"

    [healthcheck] = [args for kind, args in runtime if kind == "HEALTHCHECK"]
    assert "--interval=" in healthcheck
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])  # exec form: a JSON array
    assert probe[0] == "python"
    assert "/healthz" in probe[-1]

    [entry] = [args for kind, args in runtime if kind == "ENTRYPOINT"]
    assert json.loads(entry) == ["/srv/docker/entrypoint.sh"]
    assert any("docker/entrypoint.sh /srv/docker/entrypoint.sh" in c for c in copies)
    env = " ".join(args for kind, args in runtime if kind == "ENV")
    assert "CLV_HOST=0.0.0.0" in env
    assert "CLV_PORT=8000" in env


def test_every_file_the_dockerfile_copies_exists_and_is_not_dockerignored() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for kind, args in instructions(DOCKERFILE):
        if kind != "COPY" or "--from=" in args:
            continue
        sources = [word for word in shlex.split(args) if not word.startswith("--")][:-1]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.split("/")[0] not in ignored, source
    for heavy in (".venv", ".git", "tests", "var", "models"):
        assert heavy in ignored


def test_compose_wires_postgres_migration_api_and_trainer() -> None:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "api", "trainer"}
    assert set(compose["volumes"]) == {"pgdata", "models"}

    postgres = services["postgres"]
    assert "pgdata:/var/lib/postgresql/data" in postgres["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])

    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"

    api = services["api"]
    assert api["command"] == ["serve"]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert api["environment"]["CLV_WORKERS"].startswith("${CLV_WORKERS")
    assert "PROMETHEUS_MULTIPROC_DIR" in api["environment"]
    assert any(v.startswith("models:/srv/models") for v in api["volumes"])
    assert api["init"] is True
    grace = int(api["stop_grace_period"].removesuffix("s"))
    default_drain = int(api["environment"]["CLV_GRACEFUL_SHUTDOWN_SECONDS"].split(":-")[1][:-1])
    assert grace > default_drain, "docker must not SIGKILL before uvicorn has drained"

    trainer = services["trainer"]
    assert trainer["profiles"] == ["train"]
    assert trainer["command"] == ["train"]
    assert "models:/srv/models" in trainer["volumes"]
    assert trainer["environment"]["CLV_DATABASE_URL"] == api["environment"]["CLV_DATABASE_URL"]
    for name in ("migrate", "api", "trainer"):
        assert services[name]["image"] == "clv-service:latest"
        assert services[name]["environment"]["CLV_MODEL_DIR"] == "/srv/models"


def test_entrypoint_is_an_executable_posix_script_that_execs_clv() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=False).returncode == 0
    body = ENTRYPOINT.read_text()
    assert 'exec "$clv" "$command" "$@"' in body  # signals reach uvicorn, not a shell
