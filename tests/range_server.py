"""A small HTTP file server for the remote-raster tests, run in its own process on loopback.

``python tests/range_server.py ROOT`` serves the files under ROOT on 127.0.0.1 (a free port,
printed on the first line of stdout), honouring ``Range: bytes=a-b`` requests (206 Partial
Content) and answering ``HEAD`` with ``Content-Length`` and an ``ETag``, as object stores and
CDNs do. It counts the bytes of file content it sends: ``GET /__served__`` returns that count
(and ``POST /__served__`` resets it). Paths under ``forbidden/`` answer 403; ``slow/NAME``
is NAME after a 5 s wait (for timeouts).

It must run in another process: rasterio holds the GIL while GDAL waits for the network, so
a server thread in the test's own process would never answer.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import sys
import threading
import time
from pathlib import Path


class RangeHandler(http.server.BaseHTTPRequestHandler):
    root = Path(".")
    served = 0
    lock = threading.Lock()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _empty(self, code: int, body: bytes = b"") -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _resolve(self) -> Path | None:
        name = self.path.split("?", 1)[0].lstrip("/")
        if name.startswith("forbidden/"):
            self._empty(403)
            return None
        if name.startswith("slow/"):
            time.sleep(5)
            name = name[len("slow/"):]
        path = (self.root / name).resolve()
        if not name or not path.is_file() or self.root not in path.parents:
            self._empty(404)
            return None
        return path

    def _etag(self, path: Path) -> str:
        stat = path.stat()
        return hashlib.md5(f"{stat.st_size}-{stat.st_mtime_ns}".encode()).hexdigest()

    def do_HEAD(self) -> None:
        path = self._resolve()
        if path is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("ETag", f'"{self._etag(path)}"')
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_POST(self) -> None:
        with RangeHandler.lock:
            RangeHandler.served = 0
        self._empty(200, b"0")

    def do_GET(self) -> None:
        if self.path == "/__served__":
            self._empty(200, str(RangeHandler.served).encode())
            return
        path = self._resolve()
        if path is None:
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else size - 1, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", f'"{self._etag(path)}"')
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(end - start + 1)
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            return
        with RangeHandler.lock:
            RangeHandler.served += len(data)


def main() -> None:
    RangeHandler.root = Path(sys.argv[1]).resolve()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
