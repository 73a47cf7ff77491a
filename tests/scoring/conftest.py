"""Fixtures of the scoring tests: one read-only demo database shared by the whole directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app import schema
from app.config import Settings
from tests.conftest import app_client, create_database, drop_database
from tests.scoring.support import copy_models, load_demo

DEMO_CUSTOMERS = 300


@pytest.fixture(scope="session")
def demo_settings(model_dir: Path) -> Iterator[Settings]:
    """A database of its own with 300 synthetic customers; tests must not write to it."""
    url = create_database("clv_scoring")
    try:
        settings = Settings(database_url=url, model_dir=model_dir, model_poll_seconds=0)
        schema.upgrade("head", settings)
        load_demo(settings, DEMO_CUSTOMERS, seed=5)
        yield settings
    finally:
        drop_database(url)


@pytest.fixture
async def demo_client(demo_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of an app on the demo database and the session's model."""
    async with app_client(demo_settings) as client:
        yield client


@pytest.fixture
def private_models(model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the session's model directory that a test may re-point and break."""
    return copy_models(model_dir, tmp_path / "models")
