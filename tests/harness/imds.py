"""A stand-in for the EC2 instance metadata service (IMDSv2) on 127.0.0.1, never 169.254.169.254.

It serves from a thread, so both an in-process async test and a `controller` child process (through
botocore's AWS_EC2_METADATA_SERVICE_ENDPOINT) can ask it. As EC2 does: a token from PUT
/latest/api/token (with a TTL header, else 400), then GETs that must carry it (else 401); an item
it does not hold is 404.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

TOKEN = "AQAEAFakeToken=="
MAC = "0e:49:61:0f:c3:11"
ITEMS = "/latest/meta-data/"


@dataclass
class FakeImds:
    url: str = ""
    items: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    token_ttls: list[str] = field(default_factory=list)

    def answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        self.requests.append((method, path))
        if method == "PUT" and path == "/latest/api/token":
            ttl = headers.get("x-aws-ec2-metadata-token-ttl-seconds")
            if ttl is None:
                return 400, ""
            self.token_ttls.append(ttl)
            return 200, TOKEN
        if method != "GET" or not path.startswith(ITEMS):
            return 404, ""
        if headers.get("x-aws-ec2-metadata-token") != TOKEN:
            return 401, ""
        value = self.items.get(path.removeprefix(ITEMS))
        return (404, "") if value is None else (200, value)


def serve(fake: FakeImds) -> ThreadingHTTPServer:
    """Start answering for `fake` on 127.0.0.1 (its url is set); the caller shuts it down."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body = fake.answer(self.command, self.path, headers)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = _reply

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, name="fake-imds", daemon=True).start()
    return server


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    fake = FakeImds()
    server = serve(fake)
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
