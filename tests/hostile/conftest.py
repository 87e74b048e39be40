"""Fixtures for hostile-input tests.

`counting_server`: a local HTTP server on 127.0.0.1 (ephemeral port, in a thread) that answers
every request with a JSON schema and counts connections and requests. A test hands its URLs to
the code under test (as `$schema`, `$ref`, `$id`, ...) and asserts `counting_server.count == 0`:
toolken never opens a connection. Proxy variables are cleared for the test, so a fetch would
really reach this server (`test_network.py::test_the_counting_server_sees_a_fetch` proves it).

    def test_my_loader_is_offline(counting_server):
        schema = {"type": "object", "properties": {"x": {"$ref": counting_server.url("x.json")}}}
        ...  # run the code under test
        assert counting_server.count == 0, counting_server.requests
"""
from __future__ import annotations

import http.server
import json
import threading
from typing import Any

import pytest

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class CountingServer:
    """What the server saw. `body` (any JSON) is what it answers: by default a schema that
    accepts any string, so that code which did fetch a `$ref` would validate against it."""

    def __init__(self) -> None:
        self.requests: list[str] = []  # "GET /path", in arrival order
        self.connections = 0
        self.body: Any = {"type": "string"}
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                with server._lock:
                    server.requests.append(f"{self.command} {self.path}")
                payload = json.dumps(server.body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/schema+json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_HEAD = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                with server._lock:
                    server.connections += 1
                return True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hangs up early is still counted

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="counting-server", daemon=True)
        self._thread.start()

    def url(self, path: str = "schema.json") -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    @property
    def count(self) -> int:
        """Connections opened plus requests made (a request always comes with a connection,
        so any contact makes this at least 1)."""
        with self._lock:
            return self.connections + len(self.requests)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def counting_server(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = CountingServer()
    try:
        yield server
    finally:
        server.close()
