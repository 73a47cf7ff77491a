"""/docs and /redoc render in a real browser with no network but loopback (assets served by us)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import Settings
from tests.server import free_port, running_server, server_env

#: The Debian package `chromium`; .ci/run installs it when missing.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(url: str) -> str:
    """The DOM of `url` after its scripts ran, in headless Chromium cut off from every network
    but loopback: names resolve to nothing and any other traffic goes to a dead proxy."""
    assert CHROMIUM, "headless Chromium is needed: apt-get install -y chromium"
    with tempfile.TemporaryDirectory(prefix="clv-chromium-") as profile:
        completed = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--proxy-server=http://127.0.0.1:{free_port()}",
                "--proxy-bypass-list=127.0.0.1",
                # Virtual time runs until the page is idle (scripts, the openapi.json fetch).
                "--virtual-time-budget=30000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


@pytest.fixture(scope="module")
def docs_server(postgres_url: str, model_dir: Path) -> Iterator[str]:
    settings = Settings(database_url=postgres_url, model_dir=model_dir, model_poll_seconds=0)
    with running_server(server_env(settings), timeout=120) as base:
        yield base


def operations(base: str) -> list[tuple[str, str, dict[str, Any]]]:
    spec = httpx.get(f"{base}/openapi.json", timeout=30).json()
    return [
        (path, method, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    ]


def test_swagger_ui_lists_every_operation_offline(docs_server: str) -> None:
    page = httpx.get(f"{docs_server}/docs", timeout=30).text
    assert "cdn" not in page.lower()
    dom = render(f"{docs_server}/docs")
    found = operations(docs_server)
    assert len(found) >= 14
    for path, method, operation in found:
        assert f'data-path="{path}"' in dom, path
        assert f"operations-{operation['tags'][0]}-{operation['operationId']}" in dom, (
            path,
            method,
        )


def test_redoc_lists_every_operation_offline(docs_server: str) -> None:
    dom = render(f"{docs_server}/redoc")
    for path, _method, operation in operations(docs_server):
        assert f'id="operation/{operation["operationId"]}"' in dom, path
        assert str(operation["summary"]) in dom, path


def test_the_root_leads_to_the_docs(docs_server: str) -> None:
    response = httpx.get(f"{docs_server}/", timeout=30)
    assert response.status_code == 307
    assert response.headers["location"] == "/docs"


def test_the_same_browser_cannot_render_a_page_that_needs_a_cdn(tmp_path: Path) -> None:
    # The control: what /docs was before (FastAPI's default page loads Swagger UI from a CDN).
    from fastapi.openapi.docs import get_swagger_ui_html

    page = tmp_path / "cdn.html"
    page.write_bytes(get_swagger_ui_html(openapi_url="/openapi.json", title="cdn").body)
    dom = render(page.as_uri())
    assert "swagger-ui" in dom
    assert "data-path=" not in dom
