"""Stand-ins for a whole GBrowse render farm, and a steady web load, for end-to-end tests.

`RenderFarm` listens on 0.0.0.0:PORT inside the test's network namespace, so it answers on every
127.x address moto hands out: each instance the controller launches has a "render slave" at
http://<its private ip>:PORT/ answering 403, as GBrowse's slaves do. An address can be killed
(connections to it are dropped) to play a slave that went away, or hung (connections are
accepted and requests read, but never answered) to play a slave stuck in a render.

`SteadyLoad` sends GET requests to Apache at a fixed rate from a thread, so the measured
requests/sec lands in a chosen load-table band (ab has no rate limit).
"""

from __future__ import annotations

import http.client
import http.server
import threading
import time


class _SlaveHandler(http.server.BaseHTTPRequestHandler):
    server: _FarmServer

    def do_GET(self) -> None:
        local = self.connection.getsockname()[0]
        if local in self.server.hung:
            self.server.closing.wait()  # never answers; the server's close() lets it go
            self.close_connection = True
            return
        if local in self.server.dead:
            self.close_connection = True
            self.connection.close()
            return
        with self.server.lock:
            self.server.hits[local] = self.server.hits.get(local, 0) + 1
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _FarmServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("0.0.0.0", port), _SlaveHandler)
        self.dead: set[str] = set()
        self.hung: set[str] = set()
        self.closing = threading.Event()
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()


class RenderFarm:
    def __init__(self, port: int) -> None:
        self.port = port
        self._server = _FarmServer(port)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def kill(self, address: str) -> None:
        self._server.dead.add(address)

    def hang(self, address: str) -> None:
        self._server.hung.add(address)

    def hits(self, address: str) -> int:
        with self._server.lock:
            return self._server.hits.get(address, 0)

    def close(self) -> None:
        self._server.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class SteadyLoad:
    """About `rps` requests per second to `url` until stopped."""

    def __init__(self, host: str, port: int, rps: float) -> None:
        self.host, self.port, self.rps = host, port, rps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = 1.0 / self.rps
        next_at = time.monotonic()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/")
                conn.getresponse().read()
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            next_at += interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
