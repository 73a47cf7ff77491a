"""One real `distributed.LocalCluster` (2 worker processes) shared by this package's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.distributed.cluster import Cluster, connect


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with connect("local:2") as connected:
        assert connected.workers == 2
        yield connected
