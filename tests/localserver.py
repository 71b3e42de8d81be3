"""One small HTTP server on 127.0.0.1 for the tests that need the real protocol: static files with HTTP Range
(what GDAL's /vsicurl/ and our resumable downloads use), injected failures (a status for the next N
requests), and routes answered by a Python function (a WFS, a STAC API, an Atom feed)."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Callable

# route(handler, path, query) -> (status, content type, body) or None to fall through to the files;
# handler.command is GET, HEAD or POST (then handler.body holds the request body)
Route = Callable[["Handler", str, dict], "tuple[int, str, bytes] | None"]


class LocalServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes | Path] = {}  # a Path is read from disk, range by range (large files)
        self.routes: list[Route] = []
        self.fail: list[int] = []  # statuses answered to the next requests, in order
        self.log: list[tuple[str, str | None]] = []  # (path with query, Range header)
        self.delay = 0.0  # seconds each request waits first (a slow network)
        self.bytes_sent = 0  # response bodies, all requests together
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> "LocalServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()

    def next_failure(self) -> int | None:
        with self._lock:
            return self.fail.pop(0) if self.fail else None


class Handler(http.server.BaseHTTPRequestHandler):
    server: LocalServer
    protocol_version = "HTTP/1.1"  # keep-alive, as GDAL expects of a real server

    def log_message(self, *args):
        pass

    def _send(self, status: int, ctype: str, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            with self.server._lock:
                self.server.bytes_sent += len(body)

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range")))
        if srv.delay:
            time.sleep(srv.delay)
        status = srv.next_failure()
        if status is not None:
            self._send(status, "text/plain", f"injected {status}".encode())
            return
        parts = urllib.parse.urlsplit(self.path)
        query = {k.upper(): v for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)}
        for route in srv.routes:
            answer = route(self, parts.path, query)
            if answer is not None:
                self._send(*answer)
                return
        data = srv.files.get(parts.path)
        if data is None:
            self._send(404, "text/plain", b"not found")
            return
        if isinstance(data, Path):
            data = _FileBytes(data)
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start = int(first)
            end = min(int(last), len(data) - 1) if last else len(data) - 1
            if start >= len(data):
                self._send(416, "text/plain", b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            self._send(206, "application/octet-stream", data[start:end + 1],
                       {"Content-Range": f"bytes {start}-{end}/{len(data)}", "Accept-Ranges": "bytes"})
            return
        self._send(200, "application/octet-stream", data, {"Accept-Ranges": "bytes"})


class _FileBytes:
    """Enough of ``bytes`` (len and slicing) over a file on disk, so large assets are not held in memory."""

    def __init__(self, path: Path):
        self.path, self.size = path, path.stat().st_size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, s: slice) -> bytes:
        start, stop, _ = s.indices(self.size)
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(stop - start)
