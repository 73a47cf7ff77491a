"""The container files: Dockerfile and compose checked statically, the entrypoint's container-only
behaviour (seeding the shipped model, the bounded database wait) run for real from the checkout.

Building and running the images is `make container-test` (.ci/container-test.sh), not this suite:
the suite must not need a container engine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import create_database, drop_database
from tests.ops.support import ENTRYPOINT, entrypoint
from tests.server import ROOT, free_port

DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
FINAL_STAGES = ("runtime", "trainer", "api")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def stages(dockerfile: Path) -> dict[str, list[tuple[str, str]]]:
    """The instructions of each named build stage, in file order."""
    result: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for kind, args in instructions(dockerfile):
        if kind == "FROM":
            name = args.split(" AS ")[1].strip()
            current = result[name] = [(kind, args)]
        elif current is not None:
            current.append((kind, args))
    return result


def runs(stage: list[tuple[str, str]]) -> list[str]:
    """The RUN commands of a stage."""
    return [args for kind, args in stage if kind == "RUN"]


def test_dockerfile_stages_api_last_trainer_beside_it() -> None:
    build = stages(DOCKERFILE)
    assert list(build) == [
        "build",
        "deps-api",
        "deps-trainer",
        "source",
        "runtime",
        "trainer",
        "api",
    ]
    arguments = dict(
        args.split("=", 1) for kind, args in instructions(DOCKERFILE)[:2] if kind == "ARG"
    )
    for name in ("PYTHON_IMAGE", "RUNTIME_IMAGE"):  # overridable for hosts without a registry
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", arguments[name]), arguments
    assert build["build"][0][1].startswith("${PYTHON_IMAGE} ")
    assert build["runtime"][0][1].startswith("${RUNTIME_IMAGE} ")
    assert build["trainer"][0][1].startswith("runtime ")
    assert build["api"][0][1].startswith("runtime ")

    # Dependencies come from the lock, without the dev group, with the extra CA for downloads only.
    installs = [r for name in ("deps-api", "deps-trainer") for r in runs(build[name])]
    assert len(installs) == 2
    for command in installs:
        assert "uv sync --frozen --no-dev" in command
        assert "--mount=type=secret,id=extra-ca" in command
        assert "with-extra-ca.sh" in command
    [bootstrap] = [r for r in runs(build["build"]) if "pip install" in r]
    assert "--mount=type=secret,id=extra-ca" in bootstrap
    text = DOCKERFILE.read_text()
    assert ".crt" not in text, "no CA file is ever copied in"
    assert "ca-certificates/" not in text, "no CA file is ever copied in"


def test_final_stages_install_nothing_run_as_10001_and_the_api_has_a_healthcheck() -> None:
    build = stages(DOCKERFILE)
    for name in FINAL_STAGES:
        stage = build[name]
        for command in runs(stage):
            for tool in ("pip ", "uv ", "apt-get", "gcc", "build-essential", "curl", "wget"):
                assert tool not in command, (name, tool)
        copies = [args for kind, args in stage if kind == "COPY"]
        assert not any("extra-ca" in c or "with-extra-ca" in c for c in copies), name
    for name, deps in (("trainer", "deps-trainer"), ("api", "deps-api")):
        stage = build[name]
        assert not runs(stage), f"{name}: only copies on top of the runtime stage"
        copies = [args for kind, args in stage if kind == "COPY"]
        assert copies[0] == f"--from={deps} /srv/.venv /srv/.venv", "the big layer first"
        assert "models /srv/default-models" in copies
        assert any(
            "docker/entrypoint.sh docker/wait_for_database.py /srv/docker/" in c for c in copies
        )
        [user] = [args for kind, args in stage if kind == "USER"]
        assert user == "10001:10001"

    runtime = build["runtime"]
    assert "useradd --system --uid 10001" in " ".join(runs(runtime))
    [entry] = [args for kind, args in runtime if kind == "ENTRYPOINT"]
    assert json.loads(entry) == ["/srv/docker/entrypoint.sh"]
    env = " ".join(args for kind, args in runtime if kind == "ENV")
    for setting in (
        "CLV_HOST=0.0.0.0",
        "CLV_PORT=8000",
        "CLV_MODEL_DIR=/srv/models",
        "CLV_DEFAULT_MODEL_DIR=/srv/default-models",
        "CLV_WAIT_FOR_DATABASE_SECONDS=",
    ):
        assert setting in env, setting

    api = build["api"]
    [healthcheck] = [args for kind, args in api if kind == "HEALTHCHECK"]
    assert "--interval=" in healthcheck
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])  # exec form: a JSON array
    assert probe[0] == "python"
    assert "/healthz" in probe[-1]
    assert json.loads(dict(api)["CMD"]) == ["serve"]
    assert json.loads(dict(build["trainer"])["CMD"]) == ["train"]
    assert "HEALTHCHECK" not in dict(build["trainer"])


def excluded_from_api() -> list[str]:
    """The distributions the api target's `uv sync` leaves out."""
    [command] = runs(stages(DOCKERFILE)["deps-api"])
    return re.findall(r"--no-install-package (\S+)", command)


def test_the_api_imports_none_of_the_packages_its_image_leaves_out() -> None:
    excluded = excluded_from_api()
    assert {"pyarrow", "scikit-learn", "skl2onnx"} <= set(excluded)
    locked = set(re.findall(r'^name = "([^"]+)"$', (ROOT / "uv.lock").read_text(), re.M))
    assert set(excluded) <= locked, "a left-out package is not in the lock any more"
    modules = sorted(
        module
        for module, distributions in packages_distributions().items()
        if {d.lower() for d in distributions} & set(excluded) and module.isidentifier()
    )
    assert "sklearn" in modules
    assert "pyarrow" in modules
    # Import what the api image runs (the app, the CLI, explanations) with those packages made
    # unimportable, as in the image; pandas is not in the image either (bench extra only).
    program = f"""
import importlib.abc, sys
BLOCKED = {[*modules, "pandas"]!r}
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Absent())
import app.main, app.cli, app.scoring.explain, app.schema
app.main.create_app()
print(sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED)))
"""
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("CLV_")},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


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
            assert source not in ignored, source
    for heavy in (".venv", ".git", "tests", "var", "bench"):
        assert heavy in ignored
    assert "models" not in ignored, "the shipped model goes into the image"
    assert (ROOT / "models" / "current").is_file()


def test_compose_wires_postgres_migration_api_and_trainer_in_any_start_order() -> None:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "api", "trainer", "deliverer", "rescore"}
    assert set(compose["volumes"]) == {"pgdata", "models"}

    postgres = services["postgres"]
    assert postgres["image"].startswith("${POSTGRES_IMAGE:-postgres:")
    assert "pgdata:/var/lib/postgresql/data" in postgres["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])

    migrate, api, trainer = services["migrate"], services["api"], services["trainer"]
    assert migrate["command"] == ["migrate"]
    assert "models:/srv/models" in migrate["volumes"], "migrate seeds the fresh volume"
    assert api["command"] == ["serve"]
    assert "models:/srv/models:ro" in api["volumes"]
    # podman-compose cannot start a service that requires an exited one: nothing depends on
    # migrate; the entrypoint waits for the schema instead.
    for service in (migrate, api, trainer):
        assert set(service["depends_on"]) == {"postgres"}
        assert service["environment"]["CLV_WAIT_FOR_DATABASE_SECONDS"].startswith("${")
        assert service["environment"]["CLV_MODEL_DIR"] == "/srv/models"
        assert service["environment"]["CLV_DATABASE_URL"] == api["environment"]["CLV_DATABASE_URL"]

    assert api["environment"]["CLV_WORKERS"].startswith("${CLV_WORKERS")
    assert "PROMETHEUS_MULTIPROC_DIR" in api["environment"]
    assert api["init"] is True
    grace = int(api["stop_grace_period"].removesuffix("s"))
    default_drain = int(api["environment"]["CLV_GRACEFUL_SHUTDOWN_SECONDS"].split(":-")[1][:-1])
    assert grace > default_drain, "docker must not SIGKILL before uvicorn has drained"

    assert api["build"]["target"] == migrate["build"]["target"] == "api"
    assert api["image"] == migrate["image"] == "${CLV_IMAGE:-clv-service:latest}"
    assert trainer["build"]["target"] == "trainer"
    assert trainer["image"] == "${CLV_TRAINER_IMAGE:-clv-service-trainer:latest}"
    assert trainer["profiles"] == ["train"]
    assert trainer["command"] == ["train"]
    assert "models:/srv/models" in trainer["volumes"]
    for service in (api, trainer):
        assert set(service["build"]["args"]) == {"PYTHON_IMAGE", "RUNTIME_IMAGE"}

    # The webhook deliverer runs beside the api (one active deliverer: an advisory lock); the
    # nightly rescore is a job on the trainer image (batch scoring needs pyarrow).
    deliverer, rescore = services["deliverer"], services["rescore"]
    assert deliverer["command"] == ["deliver"]
    assert deliverer["image"] == api["image"]
    assert deliverer["restart"] == "unless-stopped"
    assert rescore["command"][0] == "rescore"
    assert rescore["image"] == trainer["image"]
    assert rescore["profiles"] == ["jobs"]
    assert "models:/srv/models:ro" in rescore["volumes"]
    for service in (deliverer, rescore):
        assert set(service["depends_on"]) == {"postgres"}
        assert service["environment"]["CLV_DATABASE_URL"] == api["environment"]["CLV_DATABASE_URL"]


def test_entrypoint_is_an_executable_posix_script_that_execs_clv() -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    for script in ("entrypoint.sh", "with-extra-ca.sh", "strip-venv.sh"):
        path = ROOT / "docker" / script
        assert os.access(path, os.X_OK), script
        assert subprocess.run(["sh", "-n", str(path)], check=False).returncode == 0, script
    body = ENTRYPOINT.read_text()
    assert 'exec "$clv" "$command" "$@"' in body  # signals reach uvicorn, not a shell


def shipped() -> tuple[str, Path]:
    """The shipped model's version and directory."""
    version = (ROOT / "models" / "current").read_text().strip()
    return version, ROOT / "models" / version


def test_an_empty_model_directory_is_seeded_with_the_shipped_model_once(tmp_path: Path) -> None:
    version, directory = shipped()
    models = tmp_path / "volume"
    env = {
        "CLV_DATABASE_URL": f"sqlite:///{tmp_path / 'clv.db'}",
        "CLV_MODEL_DIR": str(models),
        "CLV_DEFAULT_MODEL_DIR": str(ROOT / "models"),
    }
    first = entrypoint("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert f"seeded {models} with the shipped model {version}" in first.stderr
    assert (models / "current").read_text().strip() == version
    for artifact in directory.iterdir():
        assert (models / version / artifact.name).read_bytes() == artifact.read_bytes()
    assert not [p.name for p in models.iterdir() if ".seed." in p.name], "no temporary left"

    # A volume with a model (a trained one, here just another pointer) is never touched again.
    (models / "current").write_text("20990101T000000Z-trained\n")
    again = entrypoint("migrate", env=env)
    assert again.returncode == 0, again.stderr
    assert "seeded" not in again.stderr
    assert (models / "current").read_text() == "20990101T000000Z-trained\n"


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database of our own, never migrated."""
    url = create_database("clv_wait")
    try:
        yield url
    finally:
        drop_database(url)


def test_the_database_wait_is_bounded_and_waits_for_the_migrations(empty_database: str) -> None:
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    refused = entrypoint(
        "migrate", env={"CLV_DATABASE_URL": closed, "CLV_WAIT_FOR_DATABASE_SECONDS": "1"}
    )
    assert refused.returncode == 1
    assert "entrypoint: database not ready after 1 s" in refused.stderr

    env = {"CLV_DATABASE_URL": empty_database, "CLV_WAIT_FOR_DATABASE_SECONDS": "1"}
    # Anything but migrate needs the schema: it waits for it, then gives up saying why.
    early = entrypoint("keys", "list", env=env)
    assert early.returncode == 1
    assert "database not ready after 1 s" in early.stderr
    assert "clv migrate" in early.stderr
    migrated = entrypoint("migrate", env={**env, "CLV_WAIT_FOR_DATABASE_SECONDS": "30"})
    assert migrated.returncode == 0, migrated.stderr
    listed = entrypoint("keys", "list", env={**env, "CLV_WAIT_FOR_DATABASE_SECONDS": "30"})
    assert listed.returncode == 0, listed.stderr
    assert "waiting" not in listed.stderr
