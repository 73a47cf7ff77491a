"""Hot reload of the model: admin endpoint, refused artifacts, concurrency, SIGHUP, pointer poll."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.artifacts import CLV_ONNX, MANIFEST, POINTER, current_version, promote, read_manifest
from app.config import Settings
from app.features.definitions import parse_as_of
from tests.conftest import app_client
from tests.scoring.support import (
    AS_OF,
    Reference,
    add_version,
    artifact_predictions,
    assert_problem,
    offline_matrix,
)
from tests.server import running_server, server_env

NEW = "v-next"


def scaled_copy(models: Path) -> str:
    """A second version of the current artifact whose CLV is doubled (so responses tell them apart)."""
    current = read_manifest(models / str(current_version(models)))
    add_version(
        models, NEW, training={**current.training, "clv_scale": 2 * current.training["clv_scale"]}
    )
    return NEW


async def version_of(client: httpx.AsyncClient, customer: str) -> str:
    response = await client.get(f"/v1/customers/{customer}/prediction", params={"as_of": AS_OF})
    assert response.status_code == 200, response.text
    version: str = response.json()["model_version"]
    return version


async def test_reload_swaps_in_a_good_artifact(
    demo_settings: Settings, private_models: Path
) -> None:
    old = str(current_version(private_models))
    settings = demo_settings.model_copy(update={"model_dir": private_models})
    customer = offline_matrix(demo_settings, parse_as_of(AS_OF)).customer_ids[0]
    async with app_client(settings) as client:
        before = await client.get(f"/v1/customers/{customer}/prediction", params={"as_of": AS_OF})
        assert before.json()["model_version"] == old
        scaled_copy(private_models)
        promote(private_models, NEW)
        # No poller here (poll 0): nothing changes until someone asks.
        assert await version_of(client, customer) == old
        reloaded = await client.post("/v1/admin/model/reload")
        assert reloaded.status_code == 200, reloaded.text
        body = reloaded.json()
        assert body["version"] == NEW
        assert body["manifest"]["version"] == NEW
        # The server's filesystem layout is nobody's business.
        assert "directory" not in body
        assert str(private_models) not in reloaded.text
        model = (await client.get("/v1/model")).json()
        assert (model["version"], model["loaded_at"]) == (NEW, body["loaded_at"])
        after = await client.get(f"/v1/customers/{customer}/prediction", params={"as_of": AS_OF})
        assert after.json()["model_version"] == NEW
        # The new manifest's scale is what serves now.
        assert after.json()["clv"]["value"] == pytest.approx(
            2 * before.json()["clv"]["value"], abs=0.011
        )
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert NEW in ready.json()["checks"]["model"]


def truncate_clv_onnx(directory: Path) -> None:
    data = (directory / CLV_ONNX).read_bytes()
    (directory / CLV_ONNX).write_bytes(data[: len(data) // 2])


def corrupt_manifest(directory: Path) -> None:
    (directory / MANIFEST).write_text('{"version": "broken", ')


BREAKAGES: dict[str, tuple[dict[str, Any], Callable[[Path], None] | None, str]] = {
    "truncated-onnx": ({}, truncate_clv_onnx, "clv.onnx"),
    "wrong-fingerprint": ({"feature_fingerprint": "0" * 16}, None, "retrain"),
    "reordered-features": ({"feature_names": []}, None, "retrain"),
    "other-currency": ({"currency": "EUR"}, None, "trained on amounts in EUR"),
    "malformed-manifest": ({}, corrupt_manifest, "ValidationError"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
async def test_a_broken_artifact_is_refused_and_the_old_model_keeps_serving(
    demo_settings: Settings, private_models: Path, breakage: str
) -> None:
    old = str(current_version(private_models))
    changes, damage, complaint = BREAKAGES[breakage]
    broken = add_version(private_models, "broken", **changes)
    if damage is not None:
        damage(broken)
    settings = demo_settings.model_copy(update={"model_dir": private_models})
    customer = offline_matrix(demo_settings, parse_as_of(AS_OF)).customer_ids[5]
    async with app_client(settings) as client:
        before = await client.get(f"/v1/customers/{customer}/prediction", params={"as_of": AS_OF})
        promote(private_models, "broken")
        refused = await client.post("/v1/admin/model/reload")
        problem = assert_problem(refused, 409, "model-refused")
        assert complaint in problem["detail"], problem
        assert f"still serving {old}" in problem["detail"]
        after = await client.get(f"/v1/customers/{customer}/prediction", params={"as_of": AS_OF})
        assert after.status_code == 200
        assert after.json()["model_version"] == old
        assert after.json()["clv"] == before.json()["clv"]
        assert (await client.get("/v1/model")).json()["version"] == old
        assert (await client.get("/readyz")).status_code == 200
        # Fixing the pointer and reloading again recovers.
        promote(private_models, old)
        assert (await client.post("/v1/admin/model/reload")).json()["version"] == old


async def test_a_pointer_to_a_missing_version_is_refused(
    demo_settings: Settings, private_models: Path
) -> None:
    old = str(current_version(private_models))
    settings = demo_settings.model_copy(update={"model_dir": private_models})
    async with app_client(settings) as client:
        (private_models / POINTER).write_text("no-such-version\n")
        problem = assert_problem(await client.post("/v1/admin/model/reload"), 409)
        assert "does not exist" in problem["detail"]
        assert (await client.get("/v1/model")).json()["version"] == old
        (private_models / POINTER).unlink()
        problem = assert_problem(await client.post("/v1/admin/model/reload"), 409)
        assert "clv train" in problem["detail"]
        assert (await client.get("/v1/model")).json()["version"] == old


# --- against a real uvicorn process -------------------------------------------------------------


def server_pid(base: str) -> int:
    """The pid of the `clv serve` child of this process listening on `base`'s port."""
    port = str(httpx.URL(base).port).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"serve" in argv and port in argv:
            return int(entry.name)
    raise AssertionError(f"no server child on port {port!r}")


def wait_for_version(base: str, version: str, timeout: float = 15.0) -> float:
    """Poll /v1/model until it reports `version`; returns the seconds it took."""
    started = time.monotonic()
    seen = None
    while time.monotonic() - started < timeout:
        seen = httpx.get(f"{base}/v1/model", timeout=5).json()["version"]
        if seen == version:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"still serving {seen} after {timeout} s, expected {version}")


def expected_by_version(
    models: Path, versions: list[str], features: np.ndarray
) -> dict[str, Reference]:
    return {v: artifact_predictions(models / v, features) for v in versions}


@pytest.mark.slow
def test_concurrent_requests_during_reloads_all_succeed(
    demo_settings: Settings, private_models: Path
) -> None:
    old = str(current_version(private_models))
    new = scaled_copy(private_models)
    matrix = offline_matrix(demo_settings, parse_as_of(AS_OF))
    ids = matrix.customer_ids
    expected = expected_by_version(private_models, [old, new], matrix.values)
    settings = demo_settings.model_copy(update={"model_dir": private_models})
    pointers: list[str] = []

    async def run(base: str) -> tuple[list[tuple[int, httpx.Response]], list[str]]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
            stream: list[tuple[int, httpx.Response]] = []
            flipping = True

            async def predict(j: int) -> httpx.Response:
                return await http.get(
                    f"/v1/customers/{ids[j % len(ids)]}/prediction", params={"as_of": AS_OF}
                )

            async def keep_predicting(lane: int) -> None:
                # Requests in flight for as long as the reloads go on, however slow the machine
                # (no timing assumption: the stream ends when the flips do).
                j = lane
                while flipping:
                    stream.append((j, await predict(j)))
                    j += 8

            async def flip() -> list[str]:
                nonlocal flipping
                probes: list[str] = []
                try:
                    for k in range(6):
                        version = (new, old)[k % 2]
                        promote(private_models, version)
                        pointers.append(version)
                        reloaded = await http.post("/v1/admin/model/reload")
                        assert reloaded.status_code == 200, reloaded.text
                        assert reloaded.json()["version"] == version
                        # Once the reload has answered, every new request gets that version.
                        probe = await predict(k)
                        stream.append((k, probe))
                        probes.append(probe.json()["model_version"])
                finally:
                    flipping = False
                return probes

            lanes = [asyncio.create_task(keep_predicting(lane)) for lane in range(8)]
            probes = await flip()
            await asyncio.gather(*lanes)
            return stream, probes

    with running_server(server_env(settings)) as base:
        responses, probes = asyncio.run(run(base))
        final = httpx.get(f"{base}/v1/model").json()["version"]
    assert final == pointers[-1] == old
    assert probes == pointers
    assert len(responses) > len(probes)  # the background lanes were answered too
    versions = set()
    for j, response in responses:
        assert response.status_code == 200, response.text
        p = response.json()
        version = p["model_version"]
        versions.add(version)
        assert version in expected
        row = j % len(ids)
        # Each response is entirely one model's: the numbers match the version it names.
        assert p["clv"]["value"] == round(float(expected[version].clv[row]), 2), (j, version)
        assert p["churn"]["probability"] == round(
            float(expected[version].churn_probability[row]), 6
        )
    assert versions == {old, new}


@pytest.mark.slow
def test_sighup_reloads_the_pointer(demo_settings: Settings, private_models: Path) -> None:
    old = str(current_version(private_models))
    new = scaled_copy(private_models)
    settings = demo_settings.model_copy(update={"model_dir": private_models})
    with running_server(server_env(settings)) as base:
        pid = server_pid(base)
        wait_for_version(base, old)
        promote(private_models, new)
        time.sleep(0.3)
        assert httpx.get(f"{base}/v1/model").json()["version"] == old  # no poller, no signal yet
        os.kill(pid, signal.SIGHUP)
        wait_for_version(base, new)
        # A refused artifact on SIGHUP: the server survives and keeps the model it had.
        add_version(private_models, "broken", feature_fingerprint="0" * 16)
        promote(private_models, "broken")
        os.kill(pid, signal.SIGHUP)
        time.sleep(1.0)
        assert httpx.get(f"{base}/v1/model").json()["version"] == new
        assert httpx.get(f"{base}/readyz").status_code == 200
        promote(private_models, old)
        os.kill(pid, signal.SIGHUP)
        wait_for_version(base, old)


@pytest.mark.slow
def test_the_pointer_poller_picks_up_a_new_version(
    demo_settings: Settings, private_models: Path
) -> None:
    old = str(current_version(private_models))
    new = scaled_copy(private_models)
    settings = demo_settings.model_copy(
        update={"model_dir": private_models, "model_poll_seconds": 0.5}
    )
    assert server_env(settings)["CLV_MODEL_POLL_SECONDS"] == "0.5"
    customer = offline_matrix(demo_settings, parse_as_of(AS_OF)).customer_ids[0]
    with running_server(server_env(settings)) as base:
        wait_for_version(base, old)
        promote(private_models, new)
        assert wait_for_version(base, new, timeout=10) < 10
        # A broken artifact is refused by the poller too; the last good one keeps serving.
        add_version(private_models, "broken", feature_fingerprint="0" * 16)
        promote(private_models, "broken")
        time.sleep(1.5)
        assert httpx.get(f"{base}/v1/model").json()["version"] == new
        prediction = httpx.get(f"{base}/v1/customers/{customer}/prediction")
        assert prediction.status_code == 200
        assert prediction.json()["model_version"] == new
        promote(private_models, old)
        wait_for_version(base, old, timeout=10)
