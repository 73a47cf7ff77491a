"""`--dask SPEC`: a `dask.distributed.Client` on a local cluster or on a running scheduler.

SPEC is `local` (a LocalCluster of 2 worker processes, 1 thread each), `local:N` (N workers),
or a scheduler address such as `tcp://scheduler:8786`. Only the CLI and the offline modules of
this package import it; the API process never does (tests/ops/test_api_imports.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: Seconds to wait for a remote scheduler before giving up with a one-line error.
CONNECT_TIMEOUT_SECONDS = 10
LOCAL_WORKERS = 2


class DaskUnavailable(RuntimeError):
    """The cluster named by --dask cannot be used (bad spec, unreachable scheduler, no workers)."""


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed --dask value."""

    text: str
    local_workers: int | None  # None: a remote scheduler at `text`

    @property
    def is_local(self) -> bool:
        return self.local_workers is not None


def parse_spec(text: str) -> ClusterSpec:
    """`local`, `local:N` or `scheme://host:port`; DaskUnavailable names a bad value."""
    value = text.strip()
    if value == "local":
        return ClusterSpec(value, LOCAL_WORKERS)
    if value.startswith("local:"):
        count = value.removeprefix("local:")
        if not count.isdigit() or int(count) < 1:
            raise DaskUnavailable(f"--dask {text!r}: local:N needs a worker count N >= 1")
        return ClusterSpec(value, int(count))
    if "://" in value and value.split("://", 1)[1]:
        return ClusterSpec(value, None)
    raise DaskUnavailable(
        f"--dask {text!r}: use local, local:N or a scheduler address like tcp://host:8786"
    )


@dataclass(frozen=True)
class Cluster:
    """A connected client and what the manifest records about it."""

    client: Any  # dask.distributed.Client
    spec: ClusterSpec

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info()["workers"])

    @property
    def threads_per_worker(self) -> int:
        threads = [w["nthreads"] for w in self.client.scheduler_info()["workers"].values()]
        return max(1, min(threads)) if threads else 1

    def describe(self) -> dict[str, Any]:
        """The manifest's `engine` entry."""
        return {
            "name": "dask",
            "scheduler": "local" if self.spec.is_local else self.spec.text,
            "workers": self.workers,
            "threads_per_worker": self.threads_per_worker,
        }


@contextmanager
def connect(text: str) -> Iterator[Cluster]:
    """A client for SPEC; a local cluster is started here and shut down on exit."""
    spec = parse_spec(text)
    from dask.distributed import Client, LocalCluster

    if spec.local_workers is not None:
        local = LocalCluster(
            n_workers=spec.local_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
        client = Client(local)
        try:
            yield Cluster(client, spec)
        finally:
            client.close()
            local.close()
        return
    try:
        client = Client(spec.text, timeout=CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, ValueError) as exc:
        raise DaskUnavailable(
            f"cannot reach the Dask scheduler at {spec.text} within "
            f"{CONNECT_TIMEOUT_SECONDS} s ({type(exc).__name__})"
        ) from None
    try:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_SECONDS)
        except (OSError, TimeoutError) as exc:
            raise DaskUnavailable(
                f"the Dask scheduler at {spec.text} has no workers ({type(exc).__name__})"
            ) from None
        yield Cluster(client, spec)
    finally:
        client.close()
