"""A fault-injecting HTTP proxy for object storage tests: run it in front of moto's S3 server on
loopback and point ``AWS_ENDPOINT_URL`` at it.

Every request is forwarded to the target unless a rule matches it first. A rule names a method
and a piece of the path (either may be empty: any) and a fault for its next ``times`` matching
requests:

- ``500``: answer ``500 InternalError`` without forwarding (a failing request);
- ``500-after``: forward, then answer 500 all the same (the server did the work, the client
  does not know);
- ``stall``: answer nothing for ``seconds``, then drop the connection (a stalled request);
- ``reset``: drop the connection at once.

Rules are set and the counts read over HTTP at ``/__faults__`` (no bucket can have that name):
``PUT`` a JSON list of rules replaces them, ``GET`` returns ``{"requests": n, "rules": [...]}``
with each rule's ``injected`` count. Run it as ``python -m tests.fault_proxy TARGET_URL``: it
prints its port. It runs in its own process, since delta-rs holds the GIL while it waits for
requests.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

CONTROL = "/__faults__"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}
_ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>injected fault</Message></Error>"
)


class _State:
    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.lock = threading.Lock()
        self.rules: list[dict[str, Any]] = []
        self.requests = 0

    def fault_for(self, method: str, path: str) -> dict[str, Any] | None:
        with self.lock:
            self.requests += 1
            for rule in self.rules:
                if rule["times"] <= rule["injected"]:
                    continue
                if rule.get("method") and rule["method"] != method:
                    continue
                if rule.get("path") and rule["path"] not in path:
                    continue
                rule["injected"] += 1
                return dict(rule)
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(
        self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in headers or []:
            self.send_header(name, value)
        if not any(name.lower() == "content-length" for name, _ in headers or []):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _control(self, body: bytes) -> None:
        state = self.server.state
        with state.lock:
            if self.command == "PUT":
                state.rules = [{**rule, "injected": 0} for rule in json.loads(body or b"[]")]
            answer = json.dumps({"requests": state.requests, "rules": state.rules}).encode()
        self._reply(200, answer, [("Content-Type", "application/json")])

    def _handle(self) -> None:
        body = self._body()
        if self.path.startswith(CONTROL):
            self._control(body)
            return
        fault = self.server.state.fault_for(self.command, self.path)
        kind = fault["fault"] if fault else None
        if kind == "reset":
            self.close_connection = True
            return
        if kind == "stall":
            time.sleep(float(fault.get("seconds", 30)) if fault else 30)
            self.close_connection = True
            return
        if kind == "500":
            self._reply(500, _ERROR_BODY, [("Content-Type", "application/xml")])
            return
        status, headers, answer = self._forward(body)
        if kind == "500-after":
            self._reply(500, _ERROR_BODY, [("Content-Type", "application/xml")])
            return
        self._reply(status, answer, headers)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        state = self.server.state
        connection = http.client.HTTPConnection(state.host, state.port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            # a HEAD answer has no body: its Content-Length is the object's size (readers such
            # as pyarrow take a file's size from it), so it is passed on as it is
            kept = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower() not in _HOP_BY_HOP
                and (k.lower() != "content-length" or self.command == "HEAD")
            ]
            return response.status, kept, answer
        finally:
            connection.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = _State(target)


def main() -> None:
    server = _Server(sys.argv[1])
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
