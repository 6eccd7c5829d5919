"""An HTTP proxy on 127.0.0.1 that breaks a seeded share of the S3 requests passing through it.

Clients reach it as their S3 endpoint (``AWS_ENDPOINT_URL``); it forwards each request
to the real server unless the seeded draw picks a fault for it:

* ``500``: InternalError, nothing forwarded;
* ``503``: ServiceUnavailable, nothing forwarded;
* ``slowdown``: 503 SlowDown (S3's throttling answer) after a short stall;
* ``drop``: the connection is closed without an answer, nothing forwarded;
* ``drop_after``: forwarded and done upstream, then the answer is lost (a retry of a
  write meets its own first attempt).

With ``access_keys`` given it also plays the store's authentication, which the local
S3 server skips: a request signed with another access key gets 403 InvalidAccessKeyId,
a permanent fault no retry fixes.

Every request is counted, and every fault by kind, for the figures of the suite.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

KINDS = ("500", "503", "slowdown", "drop", "drop_after")
_ERRORS = {"500": (500, "InternalError"), "503": (503, "ServiceUnavailable"), "slowdown": (503, "SlowDown")}
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


class FaultProxy:
    def __init__(self, upstream: str, rate: float = 0.0, seed: int = 0, access_keys: set[str] | None = None):
        parsed = urlparse(upstream)
        self.access_keys = access_keys
        self.upstream = (parsed.hostname, parsed.port)
        self.rate = rate
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.requests = 0
        self.faults: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="fault-proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def draw(self) -> str | None:
        """The fault for the next request (None: pass it through)."""
        with self._lock:
            self.requests += 1
            if self._rng.random() >= self.rate:
                return None
            kind = self._rng.choice(KINDS)
            self.faults[kind] += 1
            return kind

    def figures(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "faults": dict(self.faults), "rate": self.rate}

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _error(self, kind: str) -> None:
                status, code = _ERRORS.get(kind, (403, "InvalidAccessKeyId"))
                if kind == "slowdown":
                    threading.Event().wait(0.05)
                body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                        f"<Message>injected by the fault proxy</Message></Error>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    if body or self.command in ("PUT", "POST"):
                        headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                    return answer.status, answer.getheaders(), data
                finally:
                    conn.close()

            def _handle(self) -> None:
                body = self._body()  # read the whole request first, as a server would
                key = _CREDENTIAL.search(self.headers.get("Authorization", ""))
                if proxy.access_keys is not None and (key is None or key[1] not in proxy.access_keys):
                    return self._error("auth")
                kind = proxy.draw()
                if kind == "drop":
                    return self._drop()
                if kind in _ERRORS:
                    return self._error(kind)
                status, headers, data = self._forward(body)
                if kind == "drop_after":
                    return self._drop()
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                length = next((v for n, v in headers if n.lower() == "content-length"), None)
                self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        return Handler
