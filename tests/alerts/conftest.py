"""Fixtures of the alert tests: a demo history in the test database."""

from __future__ import annotations

import pytest

from app.config import Settings
from tests.scoring.support import load_demo


@pytest.fixture
def demo(settings: Settings) -> Settings:
    """The test database with 200 synthetic customers whose history ends at T1."""
    load_demo(settings, 200, seed=12)
    return settings
