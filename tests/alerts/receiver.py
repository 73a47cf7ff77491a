"""A real webhook receiver on loopback that verifies Standard Webhooks signatures itself
(an implementation independent of the service's: hmac + base64 from the standard library)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Mode = Literal["ok", "fail", "hang"]


def verify(secret: str, message_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """True when one of the `v1,` signatures in `header` is HMAC-SHA256(key, id.ts.body)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    for part in header.split(" "):
        version, _, signature = part.partition(",")
        if version == "v1" and hmac.compare_digest(base64.b64decode(signature), expected):
            return True
    return False


@dataclass(frozen=True)
class Received:
    """One request the receiver got."""

    webhook_id: str
    timestamp: str
    signature: str
    body: bytes
    at: float
    valid: bool
    host: str = ""


class Receiver:
    """Records every POST; answers 204, 500, or hangs, as `mode` says at that moment."""

    def __init__(self, mode: Mode = "ok", hang_seconds: float = 3.0, delay: float = 0.0) -> None:
        self.mode: Mode = mode
        self.delay = delay
        self.hang_seconds = hang_seconds
        self.secrets: list[str] = []
        self.received: list[Received] = []
        self.lock = threading.Lock()
        self.url = ""

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length", "0"))
        body = handler.rfile.read(length)
        webhook_id = handler.headers.get("webhook-id", "")
        timestamp = handler.headers.get("webhook-timestamp", "")
        signature = handler.headers.get("webhook-signature", "")
        with self.lock:
            valid = bool(self.secrets) and all(
                verify(s, webhook_id, timestamp, body, signature) for s in self.secrets
            )
            self.received.append(
                Received(
                    webhook_id,
                    timestamp,
                    signature,
                    body,
                    time.monotonic(),
                    valid,
                    handler.headers.get("host", ""),
                )
            )
            mode = self.mode
        if mode == "hang":
            time.sleep(self.hang_seconds)
        elif self.delay:
            time.sleep(self.delay)
        status = 500 if mode == "fail" else 204
        try:
            handler.send_response(status)
            handler.send_header("content-length", "0")
            handler.end_headers()
        except OSError:
            pass  # the client gave up (hang)

    def ids(self) -> list[str]:
        """webhook-id of every request so far, in arrival order."""
        with self.lock:
            return [r.webhook_id for r in self.received]


@contextmanager
def receiving(
    mode: Mode = "ok", hang_seconds: float = 3.0, delay: float = 0.0
) -> Iterator[Receiver]:
    """A receiver served by a real HTTP server on 127.0.0.1 while the block runs."""
    receiver = Receiver(mode, hang_seconds, delay)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            receiver.handle(self)

        def log_message(self, *_: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 512  # the default 5 refuses bursts of concurrent deliveries

        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a sender that was killed or gave up resets its connection: expected here

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/clv"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
