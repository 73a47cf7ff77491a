"""Startup without a usable model: alive, not ready, a clear reason, 503 with Retry-After."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from app.artifacts import POINTER, current_version, promote
from app.config import Settings
from app.features.definitions import parse_as_of
from app.features.repository import fingerprint
from tests.conftest import app_client
from tests.scoring.support import AS_OF, add_version, assert_problem, offline_matrix

STALE = "0123456789abcdef"


def mismatched(models: Path) -> list[str]:
    add_version(models, "stale", feature_fingerprint=STALE)
    promote(models, "stale")
    return ["stale", STALE, fingerprint(), "retrain", "clv train"]


def other_currency(models: Path) -> list[str]:
    # A model trained on EUR amounts, served by a USD shop (the demo settings' currency).
    add_version(models, "euro", currency="EUR")
    promote(models, "euro")
    return ["euro", "EUR", "USD", "CLV_CURRENCY", "clv train"]


def without_pointer(models: Path) -> list[str]:
    (models / POINTER).unlink()
    return [f"{models}/current does not exist", "clv train"]


def missing_directory(models: Path) -> list[str]:
    (models / POINTER).write_text("gone\n")
    return [str(models / "gone" / "manifest.json"), "does not exist"]


CASES = {
    "mismatch": mismatched,
    "currency": other_currency,
    "no-pointer": without_pointer,
    "missing": missing_directory,
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_startup_without_a_usable_model_is_alive_but_not_ready(
    demo_settings: Settings, private_models: Path, case: str
) -> None:
    good = str(current_version(private_models))
    words = CASES[case](private_models)
    settings = demo_settings.model_copy(update={"model_dir": private_models})
    customer = offline_matrix(demo_settings, parse_as_of(AS_OF)).customer_ids[0]
    async with app_client(settings) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False
        assert body["checks"]["database"] == "ok"
        reason = body["checks"]["model"]
        assert reason.startswith("unavailable: ")
        for word in words:
            assert word in reason, (word, reason)

        for response in (
            await client.get(f"/v1/customers/{customer}/prediction"),
            await client.post("/v1/predictions/batch", json={"customer_ids": [customer]}),
            await client.get("/v1/model"),
        ):
            problem = assert_problem(response, 503, "model-unavailable")
            assert response.headers["retry-after"] == "10"
            assert words[-1] in problem["detail"]
        # Everything that does not need the model still works.
        assert (await client.get(f"/v1/customers/{customer}")).status_code == 200
        assert (await client.get(f"/v1/customers/{customer}/features")).status_code == 200

        # A broken reload while nothing serves says so, and the worker stays up.
        refused = assert_problem(await client.post("/v1/admin/model/reload"), 409)
        assert "no model is loaded" in refused["detail"]
        # Repairing the pointer and reloading makes the worker ready without a restart.
        promote(private_models, good)
        assert (await client.post("/v1/admin/model/reload")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        prediction = await client.get(f"/v1/customers/{customer}/prediction")
        assert prediction.status_code == 200
        assert prediction.json()["model_version"] == good


async def test_a_missing_model_directory_is_not_ready(
    demo_settings: Settings, tmp_path: Path
) -> None:
    settings = demo_settings.model_copy(update={"model_dir": tmp_path / "nothing-here"})
    async with app_client(settings) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "clv train" in ready.json()["checks"]["model"]


async def test_a_worker_started_without_a_model_picks_one_up_from_the_poller(
    demo_settings: Settings, private_models: Path
) -> None:
    good = str(current_version(private_models))
    (private_models / POINTER).unlink()
    settings = demo_settings.model_copy(
        update={"model_dir": private_models, "model_poll_seconds": 0.1}
    )
    async with app_client(settings) as client:
        assert (await client.get("/readyz")).status_code == 503
        promote(private_models, good)
        deadline = time.monotonic() + 10
        while (await client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "the poller never loaded the new pointer"
            await asyncio.sleep(0.05)
        assert (await client.get("/v1/model")).json()["version"] == good
