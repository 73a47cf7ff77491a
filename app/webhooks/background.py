"""`clv serve`'s webhook deliverer thread, apart from the deliverer itself.

The deliverer (app.webhooks.deliverer) and its HTTP client (httpx, which pulls in rich and
pygments for its command line) are imported on the deliverer's own thread when it starts, not
by the worker while it starts: the worker is ready that much sooner (bench/startup.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from app.config import Settings

logger = logging.getLogger("app.webhooks.deliverer")


class DelivererThread:
    """`clv serve`'s deliverer, on a thread with its own event loop: its database work, JSON and
    signing never queue behind (or ahead of) the requests of the worker's loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="webhook-deliverer", daemon=True)

    def start(self) -> None:
        """Start the thread (returns at once)."""
        self._thread.start()
        self._started.wait()

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            from app.webhooks.deliverer import run_forever

            await run_forever(self.settings, self._stop)

        try:
            asyncio.run(main())
        except Exception:
            logger.exception("webhook deliverer thread failed")
        finally:
            self._started.set()

    def stop(self, timeout: float) -> None:
        """Ask the loop to stop (in-flight sends finish) and wait up to `timeout` seconds."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
